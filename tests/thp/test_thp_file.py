"""PMD-sized page-cache folios and file PMDs on the emulated machine: which writes make a
large folio (ext4's write_begin with large folios: measured on Linux 6.18 here, a 2 MiB-
aligned piece one write covers whole), how a fault maps it by one PMD (do_set_pmd), and
what every path does with that PMD, with exact counters and m.check() after each step.
tests/thp/test_thp_file_live.py compares the same behaviour with the kernel step by step.
"""
import errno
import io

import pytest

import mmemu
from mmemu.errors import SnapshotError

pytestmark = pytest.mark.one_design     # file PMDs are never under a shared table

MiB = 1 << 20
PG = 4096
RO, RW = mmemu.PROT_READ, mmemu.PROT_READ | mmemu.PROT_WRITE
PRIV, SHARED = mmemu.MAP_PRIVATE, mmemu.MAP_SHARED


def _machine():
    return mmemu.Machine("256M")


def _file(m, size, how="one", name="/f"):
    f = m.create_file(name)
    data = bytes(range(256)) * (size // 256)
    if how == "one":
        m.write_file(f, 0, data)
    else:
        for off in range(0, size, PG):
            m.write_file(f, off, data[off:off + PG])
    return f, data


def _map(p, f, length, prot=RO, flags=PRIV, offset=0, slack=0):
    """f mapped at a 2 MiB-aligned address (+ slack bytes)."""
    base = p.mmap(0, length + 4 * MiB, 0, mmemu.MAP_PRIVATE | mmemu.MAP_ANONYMOUS)
    at = ((base + 2 * MiB - 1) & ~(2 * MiB - 1)) + slack
    p.munmap(base, length + 4 * MiB)
    return p.mmap(at, length, prot, flags | mmemu.MAP_FIXED, file=f, offset=offset)


def _vma(p, a):
    return next(e for e in p.smaps() if e["start"] <= a < e["end"])


def _c(m, *names):
    v = m.vmstat()
    return tuple(v[n] for n in names)


@pytest.mark.parametrize("pieces, offset, length, folios", [
    ("one", 0, 2 * MiB, 1),          # one write of the aligned 2 MiB
    ("pages", 0, 2 * MiB, 0),        # 4 KiB writes: single pages
    ("one", 0, 3 * MiB, 1),          # the last MiB is not a whole aligned piece
    ("one", PG, 4 * MiB, 1),         # [2 MiB, 4 MiB) only
    ("one", 0, 8 * MiB, 4),
])
def test_which_writes_make_a_pmd_sized_folio(pieces, offset, length, folios):
    m = _machine()
    f = m.create_file("/f")
    data = b"\x5a" * length
    if pieces == "one":
        m.write_file(f, offset, data)
    else:
        for off in range(0, length, PG):
            m.write_file(f, offset + off, data[off:off + PG])
    assert m.meminfo()["FileHugePages"] == 2048 * folios
    assert m.vmstat()["nr_file_hugepages"] == folios
    assert m.meminfo()["Cached"] == (offset + length + PG - 1) // PG * 4 - (offset // PG) * 4
    assert m.read_file(f, offset, length) == data
    m.check()


def test_a_cached_page_or_no_order9_block_gives_single_pages():
    m = _machine()
    f = m.create_file("/f")
    m.write_file(f, 5 * PG, b"y")                       # one page of [0, 2 MiB) cached
    m.write_file(f, 0, b"x" * (4 * MiB))
    assert m.vmstat()["nr_file_hugepages"] == 1          # [2 MiB, 4 MiB) only
    m.fail_page_alloc(1, times=-1, min_order=9)
    m.write_file(f, 4 * MiB, b"z" * (2 * MiB))
    m.fail_page_alloc(0)
    assert m.vmstat()["nr_file_hugepages"] == 1
    assert m.meminfo()["Cached"] == 6 * 1024
    assert m.read_file(f, 4 * MiB - 1, 2) == b"xz"
    m.check()


def test_a_read_fault_maps_the_folio_with_one_pmd():
    """do_set_pmd: no PTE table (VmPTE counts the PUD and PMD tables only), 512 pages of
    RssFile and Mapped, FilePmdMapped, thp_file_mapped; pagemap: present file pages at the
    folio's PFNs, exclusive (one mapping)."""
    m = _machine()
    p = m.spawn()
    f, data = _file(m, 2 * MiB)
    a = _map(p, f, 2 * MiB)
    assert p.read(a + 3 * PG + 7, 5) == data[3 * PG + 7:3 * PG + 12]
    st, e = p.status(), _vma(p, a)
    assert (st["VmPTE"], st["RssFile"], e["Rss"], e["FilePmdMapped"]) == (8, 2048, 2048, 2048)
    assert _c(m, "thp_file_mapped", "nr_file_pmdmapped", "nr_mapped", "pgfault") == (1, 1, 512, 1)
    assert m.meminfo()["FilePmdMapped"] == 2048 and m.meminfo()["Mapped"] == 2048
    pm = p.pagemap(a, 512)
    head = int(pm[0]) & ((1 << 55) - 1)
    assert head % 512 == 0
    assert [int(x) for x in pm] == [(1 << 63) | (1 << 61) | (1 << 56) | (head + i) for i in range(512)]
    p.read(a + MiB, 1)                                   # no second fault
    assert _c(m, "thp_file_mapped", "pgfault") == (1, 1)
    m.check()


@pytest.mark.parametrize("why", ["nohugepage", "offset", "pages", "short_vma"])
def test_no_pmd_where_do_set_pmd_refuses(why):
    """MADV_NOHUGEPAGE (vma_thp_disabled), a file offset not aligned with the address
    (thp_vma_suitable_order), single pages in the cache, a VMA that does not cover the
    aligned 2 MiB: PTEs. Fault-around maps the 16-page window, or the whole folio where it
    fits the VMA and the table (NOHUGEPAGE: 512 PTEs, as 6.18 maps them)."""
    m = _machine()
    p = m.spawn()
    f, data = _file(m, 4 * MiB, "pages" if why == "pages" else "one")
    if why == "offset":
        a = _map(p, f, 2 * MiB, offset=PG)
    elif why == "short_vma":
        a = _map(p, f, 2 * MiB - PG)
    else:
        a = _map(p, f, 2 * MiB)
    if why == "nohugepage":
        p.madvise(a, 2 * MiB, mmemu.MADV_NOHUGEPAGE)
    p.read(a, 1)
    st = p.status()
    rss = 2048 if why == "nohugepage" else 64
    assert (st["VmPTE"], st["RssFile"], _vma(p, a)["FilePmdMapped"]) == (12, rss, 0)
    assert _c(m, "thp_file_mapped", "nr_file_pmdmapped") == (0, 0)
    m.check()


def test_a_private_write_splits_the_pmd_and_copies_one_page():
    """wp_huge_pmd for a file VMA: the PMD is split (cleared: thp_split_pmd) and
    do_cow_fault copies the page; the folio stays cached, mapped by nothing."""
    m = _machine()
    p = m.spawn()
    f, data = _file(m, 2 * MiB)
    a = _map(p, f, 2 * MiB, prot=RW)
    p.read(a, 1)
    p.write(a + PG, b"!")
    st = p.status()
    assert (st["VmPTE"], st["RssFile"], st["RssAnon"]) == (12, 0, 4)
    assert _c(m, "thp_split_pmd", "nr_file_pmdmapped", "nr_mapped", "nr_file_hugepages") == (1, 0, 0, 1)
    assert p.read(a + PG, 2) == b"!" + data[PG + 1:PG + 2]
    assert m.read_file(f, PG, 1) == data[PG:PG + 1]
    m.check()


def test_a_shared_write_maps_the_folio_writable_and_dirty():
    """do_shared_fault's finish_fault: a write first maps the PMD writable (no split);
    after a read (a read-only PMD) a write splits it and maps it again, writable."""
    m = _machine()
    p = m.spawn()
    f, _ = _file(m, 4 * MiB)
    a = _map(p, f, 4 * MiB, prot=RW, flags=SHARED)
    p.write(a, b"A")
    p.read(a + 2 * MiB, 1)
    assert _c(m, "thp_file_mapped", "thp_split_pmd") == (2, 0)
    p.write(a + 2 * MiB + PG, b"B")
    assert _c(m, "thp_file_mapped", "thp_split_pmd", "nr_file_pmdmapped") == (3, 1, 2)
    assert m.read_file(f, 0, 1) == b"A" and m.read_file(f, 2 * MiB + PG, 1) == b"B"
    e = _vma(p, a)
    assert (e["FilePmdMapped"], e["Shared_Dirty"] + e["Private_Dirty"]) == (4096, 4096)
    m.check()


def test_fork_leaves_the_file_pmd_to_the_childs_faults():
    """A file VMA without an anon_vma is not copied at all (vma_needs_copy), and
    copy_huge_pmd would skip its PMD: the child maps nothing, not even the upper tables,
    until it faults; then its own PMD maps the same folio (entire mapcount 2: pagemap no
    longer exclusive)."""
    m = _machine()
    p = m.spawn()
    f, data = _file(m, 2 * MiB)
    a = _map(p, f, 2 * MiB)
    p.read(a, 1)
    c = p.fork()
    assert (c.status()["RssFile"], c.status()["VmPTE"]) == (0, 0)
    assert c.read(a + 9, 3) == data[9:12]
    assert (c.status()["RssFile"], c.status()["VmPTE"]) == (2048, 8)
    assert _c(m, "thp_file_mapped", "nr_file_pmdmapped", "nr_mapped") == (2, 1, 512)
    assert not int(p.pagemap(a, 1)[0]) >> 56 & 1
    m.check()
    c.exit()
    assert int(p.pagemap(a, 1)[0]) >> 56 & 1
    m.check()


@pytest.mark.parametrize("op", ["munmap", "mprotect", "dontneed", "mremap"])
def test_a_partial_change_drops_the_pmd(op):
    """A change to part of a file PMD splits it: for a file that clears the PMD (the
    pages refault through PTEs); the folio stays whole in the cache."""
    m = _machine()
    p = m.spawn()
    f, data = _file(m, 4 * MiB)
    a = _map(p, f, 4 * MiB)
    p.read(a, 1)
    if op == "munmap":
        p.munmap(a + PG, PG)
    elif op == "mprotect":
        p.mprotect(a + PG, PG, mmemu.PROT_NONE)
    elif op == "dontneed":
        p.madvise(a + PG, PG, mmemu.MADV_DONTNEED)
    else:
        p.mremap(a + PG, PG, PG, mmemu.MREMAP_MAYMOVE | mmemu.MREMAP_FIXED, a + 16 * MiB)
    assert _c(m, "thp_split_pmd", "nr_file_pmdmapped", "nr_mapped", "nr_file_hugepages") == (1, 0, 0, 2)
    assert p.status()["RssFile"] == 0
    assert p.read(a + 2 * PG, 4) == data[2 * PG:2 * PG + 4]
    m.check()


def test_an_aligned_mremap_moves_the_pmd_whole():
    m = _machine()
    p = m.spawn()
    f, data = _file(m, 2 * MiB)
    a = _map(p, f, 2 * MiB)
    p.read(a, 1)
    b = p.mremap(a, 2 * MiB, 2 * MiB, mmemu.MREMAP_MAYMOVE | mmemu.MREMAP_FIXED, a + 64 * MiB)
    assert _c(m, "thp_split_pmd", "nr_file_pmdmapped", "mremap_pmds_moved") == (0, 1, 1)
    assert _vma(p, b)["FilePmdMapped"] == 2048
    assert p.read(b + 5, 3) == data[5:8]
    m.check()


def test_truncate_into_a_folio_keeps_it_whole_and_zeroes_past_eof():
    """truncate_inode_partial_folio: the dirty folio does not split (thp_split_page_failed);
    it stays cached whole, its bytes past the new EOF zeroed, and mapped nowhere past EOF
    (the PMD across it is dropped); the next folio goes whole. Growing the file again reads
    zeros there."""
    m = _machine()
    p = m.spawn()
    f, data = _file(m, 4 * MiB)
    a = _map(p, f, 4 * MiB)
    p.read(a, 1)
    p.read(a + 2 * MiB, 1)
    f.truncate(MiB + 10)
    assert _c(m, "thp_split_page_failed", "nr_file_hugepages", "nr_file_pmdmapped", "thp_split_pmd") \
        == (1, 1, 0, 1)
    assert m.meminfo()["Cached"] == 2048 and p.status()["RssFile"] == 0
    with pytest.raises(mmemu.BusError):
        p.read(a + MiB + PG, 1)
    f.truncate(2 * MiB)
    assert m.read_file(f, MiB, 20) == data[MiB:MiB + 10] + bytes(10)
    assert m.read_file(f, MiB + PG, PG) == bytes(PG)
    m.check()
    f.truncate(0)
    assert _c(m, "nr_file_hugepages", "nr_file_pages") == (0, 0)
    m.check()


def test_a_hole_punched_into_a_folio_zeroes_it_and_keeps_it():
    m = _machine()
    p = m.spawn()
    f, data = _file(m, 4 * MiB)
    a = _map(p, f, 4 * MiB, prot=RW, flags=SHARED)
    p.read(a, 1)
    f.punch_hole(PG, 2 * PG)
    assert _c(m, "nr_file_hugepages", "thp_split_pmd", "thp_split_page_failed") == (2, 1, 0)
    assert m.read_file(f, 0, 3 * PG + 1) == data[:PG] + bytes(2 * PG) + data[3 * PG:3 * PG + 1]
    assert p.read(a + PG, 4) == bytes(4)
    f.punch_hole(2 * MiB, 2 * MiB)                        # a whole folio goes
    assert _c(m, "nr_file_hugepages") == (1,)
    assert m.meminfo()["Cached"] == 2048
    m.check()


def test_exit_unlink_and_the_checker():
    m = _machine()
    p = m.spawn()
    f, _ = _file(m, 2 * MiB)
    a = _map(p, f, 2 * MiB)
    p.read(a, 1)
    with pytest.raises(SnapshotError, match="page-cache folios"):
        m.save(io.BytesIO())
    head = int(p.pagemap(a, 1)[0]) & ((1 << 55) - 1)
    m.phys._debug_poke("pt_share", head, 2)             # a second PMD mapping that is not there
    with pytest.raises(mmemu.InvariantError, match="entire mapcount"):
        m.check()
    m.phys._debug_poke("pt_share", head, 1)
    m.check()
    f.cache.erase(7)                                    # a tail page leaves the cache
    with pytest.raises(mmemu.InvariantError, match="large folio's pages"):
        m.check()
    f.cache.store(7, head + 7)
    m.check()
    p.exit()
    assert _c(m, "nr_file_pmdmapped", "nr_mapped", "nr_file_hugepages") == (0, 0, 1)
    f.unlink()
    assert _c(m, "nr_file_hugepages", "nr_file_pages") == (0, 0)
    assert m.meminfo()["MemFree"] == m.meminfo()["MemTotal"] - 4 * m.vmstat()["nr_page_table_pages"] \
        - 4 * 1          # the zero page
    m.check()


def test_a_write_past_memory_fails_cleanly():
    m = mmemu.Machine("8M")
    f = m.create_file("/f")
    with pytest.raises(mmemu.MMError) as e:
        m.write_file(f, 0, b"x" * (16 * MiB))
    assert e.value.errno == errno.ENOMEM
    assert m.vmstat()["nr_file_hugepages"] == 0 and f.size == 0
    m.check()


def test_fork_of_a_vma_with_an_anon_vma_skips_the_file_pmd():
    """A private file VMA with a COW copy is copied at fork, but copy_huge_pmd skips its
    file PMD: the child gets the PTE table of the copied page's span, not the PMD."""
    m = _machine()
    p = m.spawn()
    f, data = _file(m, 4 * MiB)
    a = _map(p, f, 4 * MiB, prot=RW)
    p.write(a + 2 * MiB, b"w")              # a PTE table, an anon page (the span had no PMD)
    p.read(a, 1)                            # the first span's PMD
    assert _c(m, "thp_file_mapped", "thp_split_pmd") == (1, 0)
    c = p.fork()
    st = c.status()
    assert (st["VmPTE"], st["RssFile"], st["RssAnon"]) == (12, 0, 4)   # (no fault-around on a write)
    assert _c(m, "nr_file_pmdmapped", "thp_file_mapped") == (1, 1)
    assert c.read(a + 2 * MiB, 2) == b"w" + data[2 * MiB + 1:2 * MiB + 2]
    assert c.read(a + 7, 1) == data[7:8]
    assert _c(m, "thp_file_mapped") == (2,)
    m.check()


@pytest.mark.parametrize("design", [
    dict(), dict(cow_pgtable=True, cow_pte_accounting="deferred"),
    dict(cow_pgtable=True, cow_pte_accounting="eager"),
    dict(cow_pgtable="pmd", cow_pte_accounting="deferred"), dict(cow_pgtable="pmd", cow_pte_accounting="eager"),
    dict(cow_pgtable="pud", cow_pte_accounting="deferred"), dict(cow_pgtable="pud", cow_pte_accounting="eager"),
    dict(cow_pgtable=True, cow_pte_version="odf"), dict(cow_pgtable=True, cow_pte_version="v1"),
    dict(cow_pgtable=True, cow_pte_version="v2"), dict(cow_pgtable=True, cow_pte_version="v5"),
], ids=lambda d: "-".join(str(v) for v in d.values()) or "classic")
def test_every_design_leaves_a_file_pmd_to_the_childs_faults(design):
    """A file PMD is never shared as a table nor copied: under every fork design and series
    version the table holding it stays the parent's (whole-table COW falls back a level,
    holds_huge_pmd), copy_huge_pmd skips it, and the child's read maps its own PMD."""
    m = mmemu.Machine("256M", **design)
    p = m.spawn()
    f, data = _file(m, 4 * MiB)
    a = _map(p, f, 4 * MiB, prot=RW)
    p.write(a + 2 * MiB, b"w")              # a PTE table and an anon page: the VMA is copied
    p.read(a, 1)
    c = p.fork()
    m.check()
    assert (_vma(c, a)["FilePmdMapped"], _vma(p, a)["FilePmdMapped"]) == (0, 2048)
    assert c.read(a + 2 * MiB, 1) == b"w"
    assert c.read(a + 5 * PG, 4) == data[5 * PG:5 * PG + 4]
    assert (_vma(c, a)["FilePmdMapped"], m.vmstat()["nr_file_pmdmapped"]) == (2048, 1)
    m.check()
    c.write(a + 6 * PG, b"c")               # the child's PMD splits, its page is copied
    p.write(a + 2 * MiB + PG, b"p")
    assert (p.read(a + 6 * PG, 1), c.read(a + 2 * MiB + PG, 1)) == (data[6 * PG:6 * PG + 1],
                                                                   data[2 * MiB + PG:2 * MiB + PG + 1])
    assert (_vma(c, a)["FilePmdMapped"], _vma(p, a)["FilePmdMapped"]) == (0, 2048)
    m.check()
    c.exit()
    p.exit()
    assert m.vmstat()["nr_file_pmdmapped"] == 0
    m.check()



# (length, file offset, placed congruent to the offset modulo 2 MiB): only a mapping that
# covers an aligned 2 MiB of the file is (__thp_get_unmapped_area's off_end - off_align)
CASES = [(4 * MiB, 0, True), (2 * MiB, 0, True), (2 * MiB + PG, 0, True), (MiB, 0, False),
         (4 * MiB, PG, True), (3 * MiB, MiB, True), (2 * MiB + 2 * PG, PG, False),
         (2 * MiB, PG, False)]


def _placement(mmap_file):
    """For each case: is every address mmap_file(length, flags, offset) returns congruent to
    the offset modulo 2 MiB? Three private and three shared mappings each, one page of
    anonymous memory before each: three unforced placements in a row differ modulo 2 MiB
    (the top moves down by length + 4 KiB each time), so at most one is congruent by chance."""
    out = []
    for length, off, _ in CASES:
        out.append(all((mmap_file(length, flags, off) - off) % (2 * MiB) == 0
                       for flags in (PRIV, SHARED) for _ in range(3)))
    return out


def test_a_file_mapping_is_placed_for_its_pmds():
    """thp_get_unmapped_area (ext4's get_unmapped_area): a disk file's mapping that covers
    an aligned 2 MiB of the file lands at an address congruent to its offset modulo 2 MiB,
    private and shared; the others do not (test_the_kernel_places_file_mappings_alike)."""
    m = _machine()
    p = m.spawn()
    f, _ = _file(m, 8 * MiB)

    def mmap_file(length, flags, off):
        p.mmap(0, PG, RW, mmemu.MAP_PRIVATE | mmemu.MAP_ANONYMOUS)     # move the top down
        return p.mmap(0, length, RO, flags, file=f, offset=off)
    assert _placement(mmap_file) == [want for _, _, want in CASES]
    m.check()


def test_the_kernel_places_file_mappings_alike(tmp_path):
    import ctypes
    import os
    import subprocess
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True, text=True)
    if fs.stdout.strip() != "ext2/ext3":
        pytest.skip(f"{tmp_path} is not on ext4 ({fs.stdout.strip() or fs.stderr.strip()})")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, bytes(8 * MiB))

        def mmap_file(length, flags, off):
            libc.mmap(None, PG, RW, mmemu.MAP_PRIVATE | mmemu.MAP_ANONYMOUS, -1, 0)
            a = libc.mmap(None, length, RO, flags, fd, off)
            assert a not in (None, 2 ** 64 - 1), ctypes.get_errno()
            return a
        assert _placement(mmap_file) == [want for _, _, want in CASES]
    finally:
        os.close(fd)
