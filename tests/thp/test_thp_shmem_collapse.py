"""MADV_COLLAPSE of shmem on the emulated machine: a MAP_SHARED|MAP_ANONYMOUS range (and a
MAP_SHARED tmpfs file) collapsed into a PMD-sized shmem folio mapped by one PMD, what every
later path does with it, with exact counters, the data bytes and m.check() after each step.
The numbers are the ones Linux 6.18 gives here (shmem_enabled never), which
tests/thp/test_thp_shmem_live.py compares step by step with the kernel.
"""
import errno
import io

import pytest

import mmemu
from mmemu.errors import SnapshotError

# the tests that fork run under every fork design (conftest): a shmem VMA is not copied at
# fork, whatever the design; the COW page-table designs change what fork does around it

MiB = 1 << 20
PG = 4096
RW = mmemu.PROT_READ | mmemu.PROT_WRITE
SHANON = mmemu.MAP_SHARED | mmemu.MAP_ANONYMOUS
A = 0x300000000000          # 2 MiB aligned
PRESENT, FILE, EXCL = 1 << 63, 1 << 61, 1 << 56


def _pattern(i):
    return bytes([i % 251 + 1]) * 8


def _setup(pages=range(512), length=4 * MiB):
    m = mmemu.Machine("256M")
    p = m.spawn()
    p.mmap(A, length, RW, SHANON | mmemu.MAP_FIXED)
    for i in pages:
        p.write(A + i * PG, _pattern(i))
    m.check()
    return m, p


def _numbers(m, p):
    st, mi, vm = p.status(), m.meminfo(), m.vmstat()
    vma = next(e for e in p.smaps() if e["start"] <= A < e["end"])
    return {"VmPTE": st["VmPTE"], "RssShmem": st["RssShmem"], "Shmem": mi["Shmem"],
            "ShmemHugePages": mi["ShmemHugePages"], "ShmemPmdMapped": mi["ShmemPmdMapped"],
            "MemFree": mi["MemFree"], "Rss": vma["Rss"], "vma_ShmemPmdMapped": vma["ShmemPmdMapped"],
            **{k: vm[k] for k in ("thp_collapse_alloc", "thp_collapse_alloc_failed",
                                  "thp_file_mapped", "thp_split_pmd", "thp_split_page",
                                  "nr_shmem_hugepages", "nr_shmem_pmdmapped")}}


def _diff(a, b):
    return {k: b[k] - a[k] for k in a if b[k] != a[k]}


def _collapse(p, addr=A, length=2 * MiB):
    p.madvise(addr, length, mmemu.MADV_COLLAPSE)


def test_a_written_range_becomes_one_shmem_thp_mapped_by_one_pmd():
    m, p = _setup()
    before = _numbers(m, p)
    _collapse(p)
    m.check()
    # the old 512 pages freed, a new order-9 folio: MemFree unchanged; the PTE table goes
    assert _diff(before, _numbers(m, p)) == {
        "VmPTE": -4, "ShmemHugePages": 2048, "ShmemPmdMapped": 2048, "vma_ShmemPmdMapped": 2048,
        "thp_collapse_alloc": 1, "thp_file_mapped": 1, "nr_shmem_hugepages": 1,
        "nr_shmem_pmdmapped": 1, "MemFree": 4}      # the PTE table
    pm = p.pagemap(A, 512)
    assert all(int(x) & (PRESENT | FILE | EXCL) == PRESENT | FILE | EXCL for x in pm)
    pfns = [int(x) & ((1 << 55) - 1) for x in pm]
    assert pfns == list(range(pfns[0], pfns[0] + 512)) and pfns[0] % 512 == 0
    assert all(p.read(A + i * PG, 8) == _pattern(i) for i in range(512))
    assert p.read(A + 2 * MiB, 8) == b"\0" * 8
    m.check()


def test_holes_become_zeroed_pages_of_the_folio():
    m, p = _setup(pages=[3, 100])
    before = _numbers(m, p)
    _collapse(p)
    m.check()
    d = _diff(before, _numbers(m, p))
    # collapse_file fills the 510 holes (Shmem and RssShmem grow by them); MemFree: 512 new
    # pages, 2 old ones and the PTE table freed
    assert (d["Shmem"], d["RssShmem"], d["Rss"], d["VmPTE"], d["MemFree"]) == \
        (510 * 4, 510 * 4, 510 * 4, -4, -510 * 4 + 4)
    assert (p.read(A + 3 * PG, 8), p.read(A + 100 * PG, 8)) == (_pattern(3), _pattern(100))
    assert p.read(A + 4 * PG, PG) == b"\0" * PG


def test_a_block_with_no_page_allocates_then_gives_einval():
    m, p = _setup(pages=[0], length=8 * MiB)
    before = _numbers(m, p)
    with pytest.raises(mmemu.MMError) as e:
        _collapse(p, A + 4 * MiB)           # SCAN_TRUNCATED after alloc_charge_folio
    assert e.value.errno == errno.EINVAL
    assert _diff(before, _numbers(m, p)) == {"thp_collapse_alloc": 1}
    m.check()


@pytest.mark.parametrize("how", ["nohugepage", "private_tmpfs", "disk_file"])
def test_collapse_refused(how):
    m = mmemu.Machine("64M")
    p = m.spawn()
    if how == "nohugepage":
        p.mmap(A, 4 * MiB, RW, SHANON | mmemu.MAP_FIXED)
        p.madvise(A, 4 * MiB, mmemu.MADV_NOHUGEPAGE)
    else:   # left out (6.18 collapses a private tmpfs mapping; a disk file needs
        # CONFIG_READ_ONLY_THP_FOR_FS and a read-only executable mapping)
        f = m.create_file("/f", size=4 * MiB, tmpfs=how == "private_tmpfs")
        p.mmap(A, 4 * MiB, RW, (mmemu.MAP_PRIVATE if how == "private_tmpfs" else mmemu.MAP_SHARED)
               | mmemu.MAP_FIXED, file=f)
    p.read(A, 1)
    before = (_numbers(m, p), m.meminfo())
    with pytest.raises(mmemu.MMError) as e:
        _collapse(p)
    assert e.value.errno == errno.EINVAL and (_numbers(m, p), m.meminfo()) == before
    m.check()


def test_out_of_memory_changes_nothing():
    m, p = _setup(pages=range(0, 512, 3))
    m.fail_page_alloc(1, times=-1, min_order=9)
    before = (_numbers(m, p), m.meminfo(), p.status(), p.pagemap(A, 512).tolist())
    with pytest.raises(mmemu.MMError) as e:
        _collapse(p)
    assert e.value.errno == errno.ENOMEM
    after = (_numbers(m, p), m.meminfo(), p.status(), p.pagemap(A, 512).tolist())
    assert _diff(before[0], after[0]) == {"thp_collapse_alloc_failed": 1}
    assert after[1:] == before[1:]
    m.check()
    m.fail_page_alloc(0)
    _collapse(p)
    assert _numbers(m, p)["ShmemHugePages"] == 2048 and p.read(A + 3 * PG, 8) == _pattern(3)
    m.check()


def test_a_child_mapping_the_old_pages_loses_them_and_its_table_then_faults_a_pmd():
    m, p = _setup(pages=[0])
    c = p.fork()
    c.read(A + PG, 1)           # a hole read: page 1 cached; fault-around maps page 0 too
    c.write(A + 5 * PG, b"c")
    m.check()
    cs = c.status()
    assert (cs["RssShmem"], cs["VmPTE"]) == (12, 12)
    before = _numbers(m, p)
    _collapse(p)
    m.check()
    cs = c.status()
    assert (cs["RssShmem"], cs["VmPTE"]) == (0, 8)      # try_to_unmap, retract_page_tables
    assert _diff(before, _numbers(m, p))["VmPTE"] == -4
    before = _numbers(m, p)
    c.read(A + 7 * PG, 1)       # do_set_pmd: one PMD, writable (no write notification)
    c.write(A + 9 * PG, b"C")
    m.check()
    assert _diff(before, _numbers(m, p)) == {"thp_file_mapped": 1}
    ce = next(e for e in c.smaps() if e["start"] == A)
    assert (ce["Rss"], ce["ShmemPmdMapped"], c.status()["RssShmem"]) == (2048, 2048, 2048)
    assert (p.read(A + 5 * PG, 1), p.read(A + 9 * PG, 1), p.read(A, 8)) == (b"c", b"C", _pattern(0))
    # mapped twice: not exclusive in pagemap any more
    assert int(p.pagemap(A, 1)[0]) & (PRESENT | EXCL) == PRESENT
    c.exit()
    m.check()


def test_fork_leaves_the_shmem_pmd_to_the_childs_fault():
    m, p = _setup()
    _collapse(p)
    c = p.fork()
    assert next(e for e in c.smaps() if e["start"] == A)["Rss"] == 0
    c.write(A + 10 * PG, b"Q")
    m.check()
    assert next(e for e in c.smaps() if e["start"] == A)["ShmemPmdMapped"] == 2048
    assert p.read(A + 10 * PG, 1) == b"Q" and _numbers(m, p)["ShmemPmdMapped"] == 2048
    c.exit()
    m.check()


@pytest.mark.parametrize("op", ["munmap", "mprotect", "dontneed"])
def test_a_partial_change_drops_the_pmd_and_keeps_the_folio(op):
    m, p = _setup()
    _collapse(p)
    before = _numbers(m, p)
    if op == "munmap":
        p.munmap(A + PG, PG)
    elif op == "mprotect":
        p.mprotect(A + PG, PG, mmemu.PROT_READ)
    else:
        p.madvise(A + PG, PG, mmemu.MADV_DONTNEED)
    m.check()
    assert _diff(before, _numbers(m, p)) == {
        "thp_split_pmd": 1, "ShmemPmdMapped": -2048, "vma_ShmemPmdMapped": -2048,
        "nr_shmem_pmdmapped": -1, "RssShmem": -2048, "Rss": -2048}
    before = _numbers(m, p)
    p.read(A + 9 * PG, 1)
    m.check()
    if op == "dontneed":        # one VMA still: the PMD again
        assert _diff(before, _numbers(m, p)) == {
            "thp_file_mapped": 1, "ShmemPmdMapped": 2048, "vma_ShmemPmdMapped": 2048,
            "nr_shmem_pmdmapped": 1, "RssShmem": 2048, "Rss": 2048}
    else:                       # the VMA at A+2 pages: fault-around maps 16 pages
        assert _diff(before, _numbers(m, p)) == {"VmPTE": 4, "RssShmem": 64, "MemFree": -4}
    assert p.read(A + 9 * PG, 8) == _pattern(9) and p.read(A + 511 * PG, 8) == _pattern(511)
    assert _numbers(m, p)["ShmemHugePages"] == 2048


def test_a_hole_punched_splits_the_folio_and_frees_the_page():
    m, p = _setup()
    _collapse(p)
    c = p.fork()
    c.read(A + 3 * PG, 1)
    before = _numbers(m, p)
    p.madvise(A + PG, PG, mmemu.MADV_REMOVE)
    m.check()
    # both PMDs split (dropped), the folio split into 512 cached pages, page 1 freed
    assert _diff(before, _numbers(m, p)) == {
        "thp_split_pmd": 2, "thp_split_page": 1, "ShmemHugePages": -2048, "ShmemPmdMapped": -2048,
        "vma_ShmemPmdMapped": -2048, "nr_shmem_hugepages": -1, "nr_shmem_pmdmapped": -1,
        "RssShmem": -2048, "Rss": -2048, "Shmem": -4, "MemFree": 4}
    assert c.status()["RssShmem"] == 0
    assert p.read(A + PG, PG) == b"\0" * PG
    assert p.read(A, 8) == _pattern(0) and c.read(A + 2 * PG, 8) == _pattern(2)
    m.check()
    c.exit()
    p.munmap(A, 4 * MiB)
    assert (m.meminfo()["Shmem"], m.meminfo()["ShmemHugePages"]) == (0, 0)
    m.check()


def test_collapse_again_and_after_the_pmd_was_dropped():
    m, p = _setup()
    _collapse(p)
    before = _numbers(m, p)
    _collapse(p)                            # SCAN_PMD_MAPPED: done, nothing
    assert _numbers(m, p) == before
    p.madvise(A + PG, PG, mmemu.MADV_DONTNEED)
    before = _numbers(m, p)
    _collapse(p)                            # the folio is cached: no allocation, the PMD back
    m.check()
    assert _diff(before, _numbers(m, p)) == {
        "thp_file_mapped": 1, "ShmemPmdMapped": 2048, "vma_ShmemPmdMapped": 2048,
        "nr_shmem_pmdmapped": 1, "RssShmem": 2048, "Rss": 2048}


def test_a_pte_mapped_shmem_thp_is_remapped_by_a_pmd():
    m, p = _setup()
    _collapse(p)
    p.mprotect(A + PG, PG, mmemu.PROT_READ)  # the PMD dropped, three VMAs
    p.read(A + 9 * PG, 1)                    # fault-around: 16 PTEs map pages of the folio
    p.mprotect(A + PG, PG, RW)               # one VMA again, still PTE-mapped
    m.check()
    before = _numbers(m, p)
    assert (before["RssShmem"], before["ShmemPmdMapped"], before["ShmemHugePages"]) == (64, 0, 2048)
    _collapse(p)                # SCAN_PTE_MAPPED_HUGEPAGE: collapse_pte_mapped_thp, no allocation
    m.check()
    assert _diff(before, _numbers(m, p)) == {
        "VmPTE": -4, "MemFree": 4, "thp_file_mapped": 1, "ShmemPmdMapped": 2048,
        "vma_ShmemPmdMapped": 2048, "nr_shmem_pmdmapped": 1, "RssShmem": 1984, "Rss": 1984}
    assert all(p.read(A + i * PG, 8) == _pattern(i) for i in range(512))


def test_the_checker_and_snapshots_know_shmem_thps():
    m, p = _setup()
    _collapse(p)
    with pytest.raises(SnapshotError, match="page-cache folios"):
        m.save(io.BytesIO())
    head = int(p.pagemap(A, 1)[0]) & ((1 << 55) - 1)
    m.phys._debug_poke("pt_share", head, 2)
    with pytest.raises(mmemu.InvariantError, match="entire mapcount"):
        m.check()
    m.phys._debug_poke("pt_share", head, 1)
    m.check()
    free0 = mmemu.Machine("256M").meminfo()["MemFree"]
    p.exit()
    m.check()
    mi = m.meminfo()
    assert (mi["Shmem"], mi["ShmemHugePages"], mi["ShmemPmdMapped"]) == (0, 0, 0)
    assert mi["MemFree"] == free0 - 4 * m.vmstat()["nr_page_table_pages"]


def test_a_tmpfs_file_collapses_and_a_truncate_splits_its_folio():
    m = mmemu.Machine("256M")
    p = m.spawn()
    f = m.create_file("/shm/f", tmpfs=True)
    data = bytes(range(256)) * (4 * MiB // 256)
    m.write_file(f, 0, data)
    p.mmap(A, 4 * MiB, RW, mmemu.MAP_SHARED | mmemu.MAP_FIXED, file=f)
    B = A + 64 * MiB                        # a second mapping of the file's first 2 MiB
    p.mmap(B, 2 * MiB, RW, mmemu.MAP_SHARED | mmemu.MAP_FIXED, file=f)
    p.read(A, 1)
    p.read(B + 100 * PG, 1)
    vmpte = p.status()["VmPTE"]
    _collapse(p)
    m.check()
    # both tables retracted (-8), the caller's range mapped by a PMD; the second one faults
    st = p.status()
    assert (st["VmPTE"], st["RssShmem"], m.meminfo()["ShmemPmdMapped"]) == (vmpte - 8, 2048, 2048)
    p.read(B + 7, 1)
    assert m.meminfo()["ShmemPmdMapped"] == 2048 and p.status()["RssShmem"] == 4096
    assert p.read(B, 2 * MiB) == data[:2 * MiB] and f.read(0, 2 * MiB) == data[:2 * MiB]
    m.check()
    before = m.vmstat()
    f.truncate(MiB + 100)                   # splits the folio; zeroes past EOF, frees the rest
    m.check()
    d = m.vmstat() - before
    assert (d["thp_split_page"], d["thp_split_pmd"], m.vmstat()["nr_shmem_hugepages"]) == (1, 2, 0)
    assert m.meminfo()["Shmem"] == 4 * 257 and p.status()["RssShmem"] == 0
    assert f.read(0, 2 * MiB) == data[:MiB + 100]
    assert p.read(A + MiB, PG) == data[MiB:MiB + 100] + b"\0" * (PG - 100)
    m.check()


def test_a_caller_without_a_pmd_table_gets_one_and_the_pmd():
    m = mmemu.Machine("256M")
    p = m.spawn()
    a = A + 1024 * MiB - 2 * MiB            # the first block under a none PUD entry
    p.mmap(a, 4 * MiB, RW, SHANON | mmemu.MAP_FIXED)
    c = p.fork()
    c.write(a, b"c")
    p.write(a + 2 * MiB, b"p")
    before, cbefore = p.status(), c.status()
    vm0 = m.vmstat()
    p.madvise(a, 4 * MiB, mmemu.MADV_COLLAPSE)
    m.check()
    st, cst, d = p.status(), c.status(), m.vmstat() - vm0
    # a PMD table allocated (+4), the second block's PTE table retracted (-4)
    assert (st["VmPTE"] - before["VmPTE"], st["RssShmem"] - before["RssShmem"]) == (0, 4092)
    assert (cst["VmPTE"] - cbefore["VmPTE"], cst["RssShmem"] - cbefore["RssShmem"]) == (-4, -4)
    assert (d["thp_collapse_alloc"], d["thp_file_mapped"], d["nr_shmem_pmdmapped"]) == (2, 2, 2)
    assert (p.read(a, 1), p.read(a + 2 * MiB, 1), c.read(a + 2 * MiB, 1)) == (b"c", b"p", b"p")
    c.exit()
    m.check()
