"""Transparent huge pages on the emulated machine: the policy (Machine(thp=), m.sysfs,
MADV_HUGEPAGE / NOHUGEPAGE, THPeligible), faults and their fallback, fork and COW in every
fork design, splits, moves, views, exit, and what is refused. The kernel's own numbers for
the same scenarios are checked in test_thp_live.py."""
import numpy as np
import pytest

import mmemu
from conftest import PG, RW, PRIV, per_design
from mmemu._core.constants import PG_HEAD, PG_TAIL

M = 1 << 20
A = 0x300000000000
ENABLED = "kernel/mm/transparent_hugepage/enabled"


def huge_region(p, size=8 * M, advise=True):
    a = p.mmap(A, size, RW, PRIV | mmemu.MAP_FIXED_NOREPLACE)
    if advise:
        p.madvise(a, size, mmemu.MADV_HUGEPAGE)
    return a


def smap(p, a):
    return next(e for e in p.smaps() if e["start"] == a)


def thp(m):
    v = m.vmstat()
    return {k: v[k] for k in ("thp_fault_alloc", "thp_fault_fallback", "thp_zero_page_alloc",
                              "thp_split_pmd", "thp_deferred_split_page",
                              "nr_anon_transparent_hugepages")}


# ---- policy ----

def test_the_default_mode_is_madvise_and_sysfs_says_so():
    m = mmemu.Machine("64M")
    assert m.thp == "madvise"
    assert m.sysfs[ENABLED] == "always [madvise] never"
    assert list(m.sysfs) == [ENABLED] and len(m.sysfs) == 1


@pytest.mark.parametrize("mode", ["always", "madvise", "never"])
def test_sysfs_writes_the_mode(mode):
    m = mmemu.Machine("64M", thp="never")
    m.sysfs[ENABLED] = mode + "\n"          # as `echo mode > enabled` writes it
    assert m.thp == mode
    assert m.sysfs[ENABLED] == " ".join(f"[{x}]" if x == mode else x
                                        for x in ("always", "madvise", "never"))


@pytest.mark.parametrize("bad, err", [("sometimes", ValueError), ("", ValueError),
                                      ("[always]", ValueError), (1, TypeError), (None, TypeError)])
def test_a_bad_mode_is_refused_and_changes_nothing(bad, err):
    with pytest.raises(err):
        mmemu.Machine("64M", thp=bad)
    m = mmemu.Machine("64M", thp="always")
    with pytest.raises(err):
        m.sysfs[ENABLED] = bad
    with pytest.raises(err):
        m.thp = bad
    assert m.thp == "always"


def test_sysfs_has_no_other_files():
    m = mmemu.Machine("64M")
    with pytest.raises(KeyError):
        m.sysfs["kernel/mm/transparent_hugepage/defrag"]
    with pytest.raises(KeyError):
        m.sysfs["kernel/mm/transparent_hugepage/defrag"] = "always"
    with pytest.raises(TypeError):
        del m.sysfs[ENABLED]


@pytest.mark.parametrize("mode, advice, huge", [
    ("madvise", None, False), ("madvise", mmemu.MADV_HUGEPAGE, True),
    ("always", None, True), ("always", mmemu.MADV_NOHUGEPAGE, False),
    ("never", mmemu.MADV_HUGEPAGE, False), ("madvise", mmemu.MADV_NOHUGEPAGE, False),
])
def test_which_faults_map_a_thp(mode, advice, huge):
    m = mmemu.Machine("64M", thp=mode)
    p = m.spawn()
    a = huge_region(p, 4 * M, advise=False)
    if advice is not None:
        p.madvise(a, 4 * M, advice)
    p.write(a, b"x")
    e = smap(p, a)
    assert e["AnonHugePages"] == (2048 if huge else 0)
    assert e["Rss"] == (2048 if huge else 4)
    assert e["THPeligible"] == int(huge)
    assert p.status()["VmPTE"] == 12        # PUD, PMD and the deposited or the PTE table
    assert ("hg" in e["VmFlags"]) == (advice == mmemu.MADV_HUGEPAGE)
    assert ("nh" in e["VmFlags"]) == (advice == mmemu.MADV_NOHUGEPAGE)
    m.check()


def test_the_mode_applies_to_later_faults_only():
    m = mmemu.Machine("64M", thp="always")
    p = m.spawn()
    a = huge_region(p, 4 * M, advise=False)
    p.write(a, b"x")
    m.sysfs[ENABLED] = "never"
    p.write(a + 2 * M, b"y")
    assert smap(p, a)["AnonHugePages"] == 2048 and smap(p, a)["Rss"] == 2052
    assert smap(p, a)["THPeligible"] == 0
    m.check()


def test_thp_eligible_needs_a_private_anonymous_vma_with_an_aligned_2mib():
    m = mmemu.Machine("64M", thp="always")
    p = m.spawn()
    small = p.mmap(A + 64 * M + PG, 2 * M, RW, PRIV | mmemu.MAP_FIXED)      # no aligned 2 MiB
    shared = p.mmap(A + 128 * M, 4 * M, RW, mmemu.MAP_SHARED | mmemu.MAP_ANONYMOUS | mmemu.MAP_FIXED)
    f = m.create_file("/data", 4 * M)
    fmap = p.mmap(A + 192 * M, 4 * M, RW, mmemu.MAP_PRIVATE | mmemu.MAP_FIXED, f, 0)
    big = p.mmap(A + 256 * M + PG, 4 * M, RW, PRIV | mmemu.MAP_FIXED)       # one aligned 2 MiB
    assert [smap(p, x)["THPeligible"] for x in (small, shared, fmap, big)] == [0, 0, 0, 1]
    for x in (small, shared, fmap):
        p.write(x + 2 * M - PG - (PG if x == small else 0), b"z")
        assert smap(p, x)["AnonHugePages"] == 0
    p.write(big, b"a")                      # the first span is cut by the VMA start
    p.write(big + 2 * M, b"b")              # [2 MiB, 4 MiB) lies inside
    assert smap(p, big)["AnonHugePages"] == 2048 and smap(p, big)["Rss"] == 2052
    m.check()


# ---- faults ----

def test_the_issue_numbers():
    """Linux 6.18, measured: one byte in each of four aligned 2 MiB pieces of an 8 MiB
    MADV_HUGEPAGE mapping: VmPTE +24 kB, RssAnon +8192 kB, AnonHugePages 8192 kB,
    thp_fault_alloc +4 (the live test repeats this on the kernel under the test run)."""
    m = mmemu.Machine("1G")
    p = m.spawn()
    a = huge_region(p)
    s0, v0 = p.status(), thp(m)
    for i in range(4):
        p.write(a + i * 2 * M, b"x")
    s1, v1 = p.status(), thp(m)
    assert s1["VmPTE"] - s0["VmPTE"] == 24
    assert s1["RssAnon"] - s0["RssAnon"] == 8192
    assert v1["thp_fault_alloc"] - v0["thp_fault_alloc"] == 4
    assert smap(p, a)["AnonHugePages"] == 8192
    assert m.meminfo()["AnonHugePages"] == 8192
    assert p.smaps_rollup()["AnonHugePages"] == 8192
    assert m.meminfo()["PageTables"] == 4 * (1 + 1 + 1 + 4)     # PGD PUD PMD + 4 deposited
    m.check()


def test_a_thp_holds_the_bytes_written_and_reads_zeros_elsewhere():
    m = mmemu.Machine("256M")
    p = m.spawn()
    a = huge_region(p, 4 * M)
    data = bytes(range(256)) * 64
    p.write(a + 12345, data)
    assert p.read(a + 12345, len(data)) == data
    assert p.read(a, 12345) == bytes(12345)
    assert p.read(a + 2 * M - 7, 14) == bytes(14)          # a huge zero page behind
    pm = p.pagemap(a, 512)
    pfns = (pm & ((1 << 55) - 1)).astype(np.int64)
    assert np.array_equal(pfns, pfns[0] + np.arange(512)) and pfns[0] % 512 == 0
    flags = m.phys.flags
    assert flags[pfns[0]] & PG_HEAD and all(flags[pfns[1:]] & PG_TAIL)
    m.check()


def test_no_order_9_block_falls_back_to_base_pages():
    m = mmemu.Machine("64M")
    p = m.spawn()
    a = huge_region(p, 4 * M)
    p.touch(a + 2 * M, 1)                   # tables exist: the next fault allocates data only
    calls = m.phys.alloc_calls
    m.fail_page_alloc(1)                    # the order-9 allocation fails, nothing else
    v0 = thp(m)
    p.write(a + 5 * PG, b"f")
    assert thp(m)["thp_fault_fallback"] - v0["thp_fault_fallback"] == 1
    assert thp(m)["thp_fault_alloc"] == v0["thp_fault_alloc"]
    assert m.phys.alloc_calls - calls == 3  # order 9 (failed), the PTE table, the page
    assert p.read(a + 5 * PG, 1) == b"f"
    e = smap(p, a)
    assert e["Rss"] == 2048 + 4 and e["AnonHugePages"] == 2048
    m.check()


def test_no_frame_for_the_deposited_table_is_enomem_with_nothing_changed():
    m = mmemu.Machine("64M")
    p = m.spawn()
    a = huge_region(p, 4 * M)
    p.touch(a + 2 * M, 1)
    free, v0 = m.meminfo()["MemFree"], thp(m)
    m.fail_page_alloc(2)                    # the folio comes, its table does not
    with pytest.raises(mmemu.MMError) as e:
        p.write(a, b"x")
    assert e.value.errno == 12
    assert m.meminfo()["MemFree"] == free and thp(m) == v0
    assert smap(p, a)["Rss"] == 2048 and p.read(a, 1) == b"\0"
    m.check()


def test_fragmented_memory_has_no_order_9_block():
    m = mmemu.Machine("4M")                 # 1024 frames: two order-9 blocks at most
    p = m.spawn()
    junk = p.mmap(0, 3 * M, RW, PRIV)
    p.touch(junk, 3 * M)
    p.munmap(junk + 8 * PG, PG)             # free frames, but no free aligned 2 MiB
    a = huge_region(p, 4 * M)
    p.write(a, b"x")
    assert thp(m)["thp_fault_fallback"] == 1 and smap(p, a)["AnonHugePages"] == 0
    m.check()


def test_a_read_maps_the_huge_zero_page_once_for_the_machine():
    m = mmemu.Machine("64M")
    p, q = m.spawn(), m.spawn()
    a, b = huge_region(p, 4 * M), huge_region(q, 4 * M)
    free = m.meminfo()["MemFree"]
    assert p.read(a + 100, 4) == bytes(4) and q.read(b + 2 * M, 4) == bytes(4)
    assert thp(m)["thp_zero_page_alloc"] == 1
    assert smap(p, a)["Rss"] == 0 and p.status()["RssAnon"] == 0
    # the folio, and per process a PUD, a PMD and a deposited table
    assert m.meminfo()["MemFree"] == free - 2048 - 2 * 3 * 4
    p.write(a + 8, b"w")                    # do_huge_zero_wp_pmd: a THP replaces it
    assert thp(m)["thp_fault_alloc"] == 1 and smap(p, a)["AnonHugePages"] == 2048
    assert p.read(a, 16) == bytes(8) + b"w" + bytes(7)
    m.check()
    p.exit()
    q.exit()
    m.check()


# ---- fork, COW, exit ----

def test_fork_shares_huge_pmds_and_a_cow_write_splits_and_copies_one_page(fork_design):
    m = mmemu.Machine("1G")
    p = m.spawn()
    a = huge_region(p)
    for i in range(4):
        p.write(a + i * 2 * M, bytes([65 + i]) * (2 * PG))
    before = m.meminfo()["MemFree"]
    c = p.fork()
    # the child: four huge PMDs, four deposited tables; nothing copied but tables
    assert c.status()["VmPTE"] == p.status()["VmPTE"] == 24
    assert c.status()["RssAnon"] == 8192 and smap(c, a)["AnonHugePages"] == 8192
    assert before - m.meminfo()["MemFree"] == 4 * (1 + 1 + 1 + 4)
    assert m.meminfo()["AnonHugePages"] == 8192         # the same four folios
    v0, s0 = thp(m), p.status()
    p.write(a + PG, b"p")
    assert thp(m)["thp_split_pmd"] - v0["thp_split_pmd"] == 1
    assert p.status()["RssAnon"] == s0["RssAnon"] and p.status()["VmPTE"] == s0["VmPTE"]
    assert smap(p, a)["AnonHugePages"] == 6144 and smap(c, a)["AnonHugePages"] == 8192
    assert p.read(a + PG, 2) == b"pA" and c.read(a + PG, 2) == b"AA"
    c.write(a + 2 * M, b"c")                # the child's write splits its own PMD
    assert c.read(a + 2 * M, 2) == b"cB" and p.read(a + 2 * M, 2) == b"BB"
    m.check()
    c.exit()
    assert thp(m)["thp_deferred_split_page"] - v0["thp_deferred_split_page"] == 1
    p.write(a + 4 * M, b"r")                # the folio is the parent's alone again: reused
    assert smap(p, a)["AnonHugePages"] == 6144 and thp(m)["thp_split_pmd"] == v0["thp_split_pmd"] + 2
    m.check()
    p.exit()
    m.check()
    assert m.meminfo()["AnonHugePages"] == 0 and m.meminfo()["AnonPages"] == 0


def test_a_pte_mapped_thp_in_a_forked_table(fork_design):
    """A THP split by mprotect maps its pages with PTEs; fork copies that PTE table
    (classic) or shares it (COW page tables), and the pages stay one folio."""
    m = mmemu.Machine("256M")
    p = m.spawn()
    a = huge_region(p, 4 * M)
    p.write(a, b"0123" * 1024)
    p.mprotect(a + 4 * PG, PG, mmemu.PROT_READ)         # splits the PMD
    assert smap(p, a)["AnonHugePages"] == 0 and thp(m)["thp_split_pmd"] == 1
    c = p.fork()
    assert c.status()["VmPTE"] == per_design(fork_design, 12, deferred=8, eager=12)
    assert c.status()["RssAnon"] == per_design(fork_design, 2048, deferred=0, eager=2048)
    c.write(a + 10 * PG, b"child")
    p.write(a + 11 * PG, b"parent")
    assert c.read(a, 4) == p.read(a, 4) == b"0123"
    assert c.read(a + 10 * PG, 5) == b"child" and p.read(a + 10 * PG, 5) == bytes(5)
    m.check()
    p.exit()
    assert c.read(a + 11 * PG, 6) == bytes(6)
    m.check()
    c.exit()
    m.check()
    assert m.meminfo()["AnonPages"] == 0


def test_exit_frees_every_folio_and_deposited_table():
    m = mmemu.Machine("256M")
    free = m.meminfo()["MemFree"]
    p = m.spawn()
    a = huge_region(p, 16 * M)
    p.touch(a, 16 * M)
    p.munmap(a + 3 * M, PG)                 # one partly mapped folio too
    p.exit()
    m.check()
    assert m.meminfo()["MemFree"] == free
    assert m.meminfo()["PageTables"] == 0 and thp(m)["nr_anon_transparent_hugepages"] == 0


# ---- splits, moves ----

def test_mprotect_of_whole_pmds_keeps_them_huge():
    m = mmemu.Machine("64M")
    p = m.spawn()
    a = huge_region(p, 4 * M)
    p.touch(a, 4 * M)
    p.mprotect(a, 4 * M, mmemu.PROT_READ)
    assert thp(m)["thp_split_pmd"] == 0 and smap(p, a)["AnonHugePages"] == 4096
    with pytest.raises(mmemu.SegmentationFault):
        p.write(a, b"x")
    p.mprotect(a, 4 * M, RW)
    p.write(a + 2 * M, b"y")                # writable again without a fault copy
    assert thp(m)["thp_split_pmd"] == 0 and m.vmstat()["cow_fault"] == 0
    m.check()


def test_an_aligned_mremap_moves_the_huge_pmd():
    m = mmemu.Machine("64M")
    p = m.spawn()
    a = huge_region(p, 4 * M)
    p.write(a + 2 * M, b"moved")
    pfn = int(p.pagemap(a + 2 * M, 1)[0]) & ((1 << 55) - 1)
    b = p.mremap(a + 2 * M, 2 * M, 2 * M, mmemu.MREMAP_MAYMOVE | mmemu.MREMAP_FIXED, A + 64 * M)
    assert thp(m)["thp_split_pmd"] == 0
    assert p.read(b, 5) == b"moved" and int(p.pagemap(b, 1)[0]) & ((1 << 55) - 1) == pfn
    assert smap(p, b)["AnonHugePages"] == 2048
    m.check()


def test_dontneed_of_part_of_a_thp_splits_it_and_keeps_the_rest():
    m = mmemu.Machine("64M")
    p = m.spawn()
    a = huge_region(p, 2 * M)
    p.write(a, b"\1" * (2 * M))
    p.madvise(a + PG, PG, mmemu.MADV_DONTNEED)
    assert p.read(a, 1) == b"\1" and p.read(a + PG, 1) == b"\0" and p.read(a + 2 * PG, 1) == b"\1"
    v = thp(m)
    assert (v["thp_split_pmd"], v["thp_deferred_split_page"]) == (1, 1)
    free = m.meminfo()["MemFree"]
    p.madvise(a, 2 * M, mmemu.MADV_DONTNEED)
    assert m.meminfo()["MemFree"] - free == 2048 + 4    # the whole folio at last, its table
    m.check()


def test_swap_out_leaves_thps_resident():
    m = mmemu.Machine("64M")
    p = m.spawn()
    a = huge_region(p, 2 * M)
    p.touch(a, 2 * M)
    assert p.swap_out(a, 2 * M) == 0
    p.mprotect(a, PG, mmemu.PROT_READ)      # PTE-mapped now: still one folio
    assert p.swap_out(a, 2 * M) == 0
    assert smap(p, a)["Rss"] + smap(p, a + PG)["Rss"] == 2048
    m.check()


# ---- what is refused ----

def test_a_snapshot_of_thp_state_is_refused(tmp_path):
    m = mmemu.Machine("64M")
    p = m.spawn()
    a = huge_region(p, 2 * M)
    m.save(tmp_path / "plain.mms")          # MADV_HUGEPAGE alone is a VMA flag: saved
    p.touch(a, 1)
    with pytest.raises(mmemu.SnapshotError, match="transparent huge pages"):
        m.save(tmp_path / "thp.mms")
    assert not (tmp_path / "thp.mms").exists()
    m2 = mmemu.Machine("64M", thp="always")
    with pytest.raises(mmemu.SnapshotError, match="transparent huge pages"):
        m2.save(tmp_path / "mode.mms")


def test_madv_collapse_of_an_untouched_range_is_einval():
    """No anon_vma yet (tests/thp/test_thp_collapse*.py: the rest of MADV_COLLAPSE)."""
    m = mmemu.Machine("64M")
    p = m.spawn()
    a = huge_region(p, 2 * M)
    with pytest.raises(mmemu.MMError) as e:
        p.madvise(a, 2 * M, mmemu.MADV_COLLAPSE)
    assert e.value.errno == 22


# ---- the checker ----

@pytest.mark.parametrize("field, where, value, message", [
    ("refcount", 0, 2, "THP folio"),
    ("refcount", 7, 1, "THP tails with a refcount"),
    ("pt_share", 0, 2, "entire mapcount differs"),
    ("flags", 9, None, "without its 511 tails"),
    ("nr_anon_mapped", 0, None, "nr_anon_mapped"),
])
def test_the_checker_sees_a_broken_thp(field, where, value, message):
    m = mmemu.Machine("64M")
    p = m.spawn()
    a = huge_region(p, 2 * M)
    p.touch(a, 2 * M)
    m.check()
    head = int(p.pagemap(a, 1)[0]) & ((1 << 55) - 1)
    if field == "flags":
        value = int(m.phys.flags[head + where]) & ~PG_TAIL
    if field == "nr_anon_mapped":
        value = m.phys.counters()["nr_anon_mapped"] - 1
    m.phys._debug_poke(field, head + where, value)
    with pytest.raises(mmemu.InvariantError, match=message):
        m.check()


def test_the_checker_counts_deposited_tables():
    m = mmemu.Machine("64M")
    p = m.spawn()
    a = huge_region(p, 2 * M)
    p.touch(a, 1)
    p.mm.core._debug_poke("pgtables_bytes", p.mm.core.pgtables_bytes - 4096)
    with pytest.raises(mmemu.InvariantError, match="pgtables_bytes"):
        m.check()


def test_a_write_to_the_huge_zero_page_without_an_order_9_block_splits_it():
    """do_huge_zero_wp_pmd finds no THP (thp_fault_fallback): the huge zero PMD is split
    into 512 zero-page PTEs (thp_split_pmd, its deposited table), and do_wp_page gives the
    written page a zeroed copy."""
    m = mmemu.Machine("64M")
    p = m.spawn()
    a = huge_region(p, 2 * M)
    assert p.read(a + 3 * PG, 1) == b"\0"
    vmpte, v0 = p.status()["VmPTE"], thp(m)
    m.fail_page_alloc(1)
    p.write(a + 3 * PG, b"z")
    v1 = thp(m)
    assert (v1["thp_fault_fallback"] - v0["thp_fault_fallback"],
            v1["thp_split_pmd"] - v0["thp_split_pmd"]) == (1, 1)
    assert m.vmstat()["cow_zero_fault"] == 1 and p.status()["VmPTE"] == vmpte
    assert p.read(a + 3 * PG, 2) == b"z\0" and p.status()["RssAnon"] == 4
    pm = p.pagemap(a, 512)
    assert int(pm[3]) >> 56 & 1 and not any(int(x) >> 56 & 1 for i, x in enumerate(pm) if i != 3)
    m.check()
