"""MADV_COLLAPSE on emulated machines (tests/thp/test_thp_collapse_live.py compares it with
the kernel): the bytes of every page survive the copy into the new THP, a COW-shared page
keeps the other side's copy, a COW-shared PTE table (every fork design) is broken before
the scan, swapped-out pages are read back first, any THP mode collapses, and out of memory
at every allocation leaves one block's collapse all or nothing (ENOMEM, thp_collapse_alloc_failed
+1 when the order-9 allocation is the one that failed). Also the THP variants of
tools/testing/selftests/mm/cow.c's anon_thp_test_cases that collapse with MADV_COLLAPSE
(unshared, fully shared, lower and upper half shared with a child)."""
import errno

import pytest

import mmemu
from conftest import PG, PRIV, RW, per_design
from properties.test_oom import state, teardown

M = 1 << 20
A = 0x300000000000
PAGES = (0, 5, 6, 300, 511)


def populated(m, thp=False):
    """A process with 4 MiB at A (MADV_HUGEPAGE if thp) and some bytes in the first 2 MiB:
    page i holds i + 1 (PTE-mapped unless thp)."""
    p = m.spawn()
    p.mmap(A, 4 * M, RW, PRIV | mmemu.MAP_FIXED)
    if thp:
        p.madvise(A, 4 * M, mmemu.MADV_HUGEPAGE)
    for i in PAGES:
        p.write(A + i * PG, bytes([i % 250 + 1]) * 100)
    return p


def contents(p):
    """The first byte of each page of the first 2 MiB."""
    data = p.read(A, 2 * M)
    return bytes(data[i * PG] for i in range(512))


WANT = bytes(i % 250 + 1 if i in PAGES else 0 for i in range(512))


def ahp(p, addr=A):
    return next(e for e in p.smaps() if e["start"] <= addr < e["end"])["AnonHugePages"]


@pytest.mark.parametrize("mode", ["always", "madvise", "never"])
def test_collapse_keeps_every_byte_in_any_mode(mode):
    m = mmemu.Machine("64M", thp="never")              # 4 KiB pages at the faults
    p = populated(m)
    m.sysfs["kernel/mm/transparent_hugepage/enabled"] = mode
    before = m.vmstat()
    assert p.status()["VmPTE"] == 12 and ahp(p) == 0
    p.madvise(A, 2 * M, mmemu.MADV_COLLAPSE)
    d = m.vmstat() - before
    assert (d["thp_collapse_alloc"], d["nr_anon_transparent_hugepages"], d["pages_copied"]) \
        == (1, 1, len(PAGES))
    assert contents(p) == WANT
    assert p.read(A + 5 * PG, 101) == bytes([6]) * 100 + b"\0"
    assert ahp(p) == 2048 and p.status()["VmPTE"] == 12 and p.status()["RssAnon"] == 2048
    flags = p.pagemap(A, 512).tolist()
    assert all(x >> 63 & 1 and x >> 56 & 1 for x in flags)        # present, exclusive
    p.write(A + 7 * PG, b"after")           # a writable, dirty, young huge PMD: no fault
    assert m.vmstat()["pgfault"] == before["pgfault"] + d["pgfault"]
    m.check()


def test_collapse_after_fork_keeps_the_childs_copy(fork_design):
    m = mmemu.Machine("64M")
    p = populated(m)
    c = p.fork()
    before = m.vmstat()
    p.madvise(A, 2 * M, mmemu.MADV_COLLAPSE)
    d = m.vmstat() - before
    # the series breaks the shared table before the scan (a private copy for the parent)
    assert d["cow_pte_tables_duplicated"] == per_design(fork_design, 0, 1, 1)
    assert d["thp_collapse_alloc"] == 1 and ahp(p) == 2048 and ahp(c) == 0
    p.write(A, b"\xee" * 4 * PG)
    assert contents(c) == WANT
    assert contents(p)[:4] == b"\xee" * 4 and contents(p)[4:] == WANT[4:]
    assert c.status()["RssAnon"] == 4 * len(PAGES)
    c.madvise(A, 2 * M, mmemu.MADV_COLLAPSE)         # the child's table is its own now
    assert ahp(c) == 2048 and contents(c) == WANT
    m.check()
    c.exit()
    p.exit()
    m.check()


def test_collapse_reads_swapped_pages_back():
    m = mmemu.Machine("64M", swap="16M")
    p = populated(m)
    assert p.swap_out(A, 2 * M) == len(PAGES)
    before = m.vmstat()
    p.madvise(A, 2 * M, mmemu.MADV_COLLAPSE)
    d = m.vmstat() - before
    assert (d["pswpin"], d["thp_collapse_alloc"]) == (len(PAGES), 1)
    assert contents(p) == WANT and ahp(p) == 2048 and p.status()["VmSwap"] == 0
    m.check()


def test_collapse_of_a_pte_mapped_thp_copies_it():
    m = mmemu.Machine("64M")
    p = populated(m, thp=True)
    p.mprotect(A + PG, PG, mmemu.PROT_READ)
    p.mprotect(A + PG, PG, RW)
    assert ahp(p) == 0
    before = m.vmstat()
    p.madvise(A, 2 * M, mmemu.MADV_COLLAPSE)
    d = m.vmstat() - before
    # pages that never held data copy as zeros (copy_frame counts only real copies)
    assert (d["thp_collapse_alloc"], d["pages_copied"], d["thp_deferred_split_page"]) == (1, len(PAGES), 0)
    assert contents(p) == WANT and ahp(p) == 2048
    m.check()


@pytest.mark.parametrize("flags, advice", [
    (mmemu.MAP_SHARED | mmemu.MAP_ANONYMOUS, mmemu.MADV_NOHUGEPAGE),  # shmem: EINVAL live too
    (PRIV, mmemu.MADV_NOHUGEPAGE),
])
def test_collapse_refused(flags, advice):
    m = mmemu.Machine("64M")
    p = m.spawn()
    p.mmap(A, 4 * M, RW, flags | mmemu.MAP_FIXED)
    if advice:
        p.madvise(A, 4 * M, advice)
    p.write(A, b"x")
    before = state(m)
    with pytest.raises(mmemu.MMError) as e:
        p.madvise(A, 2 * M, mmemu.MADV_COLLAPSE)
    assert e.value.errno == errno.EINVAL and state(m) == before


# cow.c anon_thp_test_cases: "Basic COW after fork() when collapsing before fork()",
# "... with the lower / upper half shared" and "... when collapsing after fork() (fully
# shared)": the child keeps its copy, the parent writes.
@pytest.mark.parametrize("case", ["unshared", "fully_shared", "lower_shared", "upper_shared"])
def test_cow_c_collapse_cases(case, fork_design):
    m = mmemu.Machine("64M")
    p = m.spawn()
    mem = p.mmap(A, 2 * M, RW, PRIV | mmemu.MAP_FIXED)
    p.madvise(mem, 2 * M, mmemu.MADV_HUGEPAGE)
    p.write(mem, bytes(range(256)) * (2 * M // 256))
    p.mprotect(mem + PG, PG, mmemu.PROT_READ)           # PTE-map the THP
    p.mprotect(mem + PG, PG, RW)
    if case == "unshared":
        p.madvise(mem, 2 * M, mmemu.MADV_COLLAPSE)
    elif case == "lower_shared":
        p.madvise(mem + M, M, mmemu.MADV_DONTFORK)
    elif case == "upper_shared":
        p.madvise(mem, M, mmemu.MADV_DONTFORK)
    c = p.fork()
    if case == "fully_shared":
        p.madvise(mem, 2 * M, mmemu.MADV_COLLAPSE)
    elif case in ("lower_shared", "upper_shared"):
        p.madvise(mem, 2 * M, mmemu.MADV_DOFORK)
        p.madvise(mem, 2 * M, mmemu.MADV_COLLAPSE)
    assert ahp(p) == 2048
    lo, hi = (0, 2 * M) if case in ("unshared", "fully_shared") else \
        ((0, M) if case == "lower_shared" else (M, 2 * M))
    want = c.read(mem + lo, hi - lo)
    p.write(mem, b"\xff" * 2 * M)
    assert c.read(mem + lo, hi - lo) == want == (bytes(range(256)) * (2 * M // 256))[lo:hi]
    assert p.read(mem, 2 * M) == b"\xff" * 2 * M
    m.check()
    c.exit()
    p.exit()
    m.check()


def test_out_of_memory_at_every_allocation_of_a_collapse():
    """fail the k-th allocation, for every k: ENOMEM and the machine as it was (vmstat but
    thp_collapse_alloc_failed, +1 when the order-9 folio was the failure), or success;
    the retry gives the undisturbed result."""
    def setup(m):
        p = populated(m)
        p.swap_out(A + 5 * PG, PG)
        return p

    m = mmemu.Machine("64M", swap="16M")
    free = m.meminfo()["MemFree"]
    p = setup(m)
    calls = m.phys.alloc_calls
    p.madvise(A, 2 * M, mmemu.MADV_COLLAPSE)
    n = m.phys.alloc_calls - calls
    want = state(m, vmstat=False)
    teardown(m, free)
    assert n >= 2
    failed_order9 = 0
    for k in range(1, n + 1):
        m = mmemu.Machine("64M", swap="16M")
        free = m.meminfo()["MemFree"]
        p = setup(m)
        before, vm = state(m, vmstat=False), m.vmstat()
        m.fail_page_alloc(k)
        try:
            p.madvise(A, 2 * M, mmemu.MADV_COLLAPSE)
        except mmemu.MMError as e:
            m.fail_page_alloc(0)
            d = m.vmstat() - vm
            if e.errno == errno.ENOMEM:
                assert state(m, vmstat=False) == before, f"allocation {k}/{n} failed and the machine changed"
                assert d.nonzero() == {"thp_collapse_alloc_failed": 1}, d.nonzero()
                failed_order9 += 1
            else:       # the swap-in's page: SCAN_FAIL after the folio was allocated (and freed)
                assert e.errno == errno.EINVAL and d["thp_collapse_alloc"] == 1
                assert d["pswpin"] == 0 and state(m, vmstat=False) == before
            m.check()
            p.madvise(A, 2 * M, mmemu.MADV_COLLAPSE)
            assert state(m, vmstat=False) == want, f"retry after failing allocation {k}/{n}"
        else:
            pytest.fail(f"allocation {k}/{n} failed and the collapse succeeded")
        m.fail_page_alloc(0)
        m.check()
        teardown(m, free)
    assert failed_order9 == 1


@pytest.mark.one_design
@pytest.mark.parametrize("accounting", ["deferred", "eager"])
@pytest.mark.parametrize("level", ["pmd", "pud"])
def test_collapse_under_whole_table_cow(level, accounting):
    """A PMD (or PUD) table shared whole at fork is broken before a huge PMD goes into it:
    each side collapses its own copy, the other keeps its pages."""
    G = 2 << 30
    m = mmemu.Machine("512M", cow_pte_accounting=accounting)
    p = m.spawn()
    p.mmap(G, 8 * M, RW, PRIV | mmemu.MAP_FIXED)
    p.write(G, b"s" * 8 * M)
    c = p.fork(cow_pgtable=level)
    before = m.vmstat()
    c.madvise(G, 4 * M, mmemu.MADV_COLLAPSE)
    d = m.vmstat() - before
    assert d[f"cow_{level}_tables_duplicated"] == 1 and d["thp_collapse_alloc"] == 2
    assert ahp(c, G) == 4096 and ahp(p, G) == 0
    c.write(G, b"C")
    assert p.read(G, 2) == b"ss" and c.read(G, 2) == b"Cs"
    p.madvise(G, 8 * M, mmemu.MADV_COLLAPSE)
    assert ahp(p, G) == 8192 and p.read(G + 6 * M, 2) == b"ss"
    m.check()
    c.exit()
    p.exit()
    m.check()
