"""exit and execve accounting (SCENARIOS D.34; memory.c:exit_mmap/free_pgtables; kernel
check_mm "Bad rss-counter state").

Conventions (SEMANTICS R1.3/R1.4): VmPTE counts PUD+PMD+PTE tables of the mm (not the
PGD); meminfo PageTables counts every level including the 4 kB PGD of each process. The
machine's only permanent allocation is the 4 kB zero page.

Every test runs in all three fork designs. Where a MemFree/PageTables delta or a counter
depends on whether fork copied or shared a PTE table, it is asserted per design
(``per_design``; README "Copy-on-write page tables"): a table shared with another process
stays when one of them exits (held by the other).
"""
from __future__ import annotations

import errno

import pytest

import mmemu
from mmemu import MAP_FIXED, PROT_NONE, PROT_READ

from conftest import PG, PRIV, RW, SHARED, mi, per_design, st

GB = 1 << 30
BASE = 0x100000000000          # a 512 GiB PGD slot
BASE2 = 0x200000000000         # another one
PM_PFN = (1 << 55) - 1

ZERO_SIZES = ("VmSize", "VmLck", "VmRSS", "RssAnon", "RssFile", "RssShmem", "VmData",
              "VmStk", "VmExe", "VmLib", "VmPTE", "VmSwap")


def pfn_of(proc, addr):
    return int(proc.pagemap(addr, 1)[0]) & PM_PFN


def assert_mm_gone(proc):
    """Every counter of an exited mm is back to zero (check_mm)."""
    assert proc.mm.core.rss == (0, 0, 0, 0)
    assert proc.mm.core.pgtables_bytes == 0
    assert proc.mm.vmas == []
    assert proc.mm.total_vm == 0 and proc.mm.locked_vm == 0
    assert proc.mm.data_vm == 0 and proc.mm.exec_vm == 0 and proc.mm.stack_vm == 0
    s = proc.status()
    for k in ZERO_SIZES:
        assert s[k] == 0, k
    assert len(proc.maps()) == 0


def test_exit_fresh_machine_baseline():
    """meminfo baseline: a new 1 GiB machine has MemTotal 1048576 kB and uses only the
    zero page; one spawned process costs its 4 kB PGD (PageTables 4, VmPTE 0); its exit
    gives it back."""
    m = mmemu.Machine("1G")
    assert mi(m, "MemTotal") == 1048576
    assert mi(m, "MemFree") == 1048576 - 4
    assert mi(m, "PageTables") == 0
    p = m.spawn()
    assert mi(m, "PageTables") == 4
    assert mi(m, "MemFree") == 1048576 - 8
    assert st(p, "VmPTE") == 0
    p.exit()
    assert mi(m, "MemFree") == 1048576 - 4
    assert mi(m, "PageTables") == 0
    m.check()


def test_exit_accounting_child_with_shared_pages(m, p):
    """SCENARIOS D.34: P writes N pages, forks C, C writes k of them (k private copies).
    C's exit: all of C's counters are 0; AnonPages drops only by C's k private pages (the
    N COW-shared pages are still mapped by P); MemFree recovers exactly k pages + C's
    PUD+PMD+PTE tables + C's PGD; PageTables drops by the same 4 tables."""
    n, k = 10, 4
    a = p.mmap(0, n * PG, RW, PRIV)
    p.touch(a, n * PG, write=True)
    c = p.fork()
    c.touch(a, k * PG, write=True)
    assert mi(m, "AnonPages") == 4 * (n + k)
    free0, pt0 = mi(m, "MemFree"), mi(m, "PageTables")
    shared = [pfn_of(p, a + i * PG) for i in range(n)]

    c.exit()

    assert_mm_gone(c)
    assert mi(m, "AnonPages") == 4 * n
    assert mi(m, "MemFree") == free0 + 4 * k + 12 + 4
    assert mi(m, "PageTables") == pt0 - 16
    assert st(p, "RssAnon") == 4 * n
    for i, f in enumerate(shared):
        assert int(m.phys.mapcount[f]) == 1 and int(m.phys.refcount[f]) == 1
        assert pfn_of(p, a + i * PG) == f


def test_exit_parent_first_child_keeps_pages(m, p, fork_design):
    """exit_mmap (R7.5): pages still mapped by the other process survive with refcount -1.
    P exits first: AnonPages unchanged (every page is still mapped by C), MemFree recovers
    only P's tables and PGD; C then writes every page and reuses it in place (refcount 1,
    memory.c:wp_can_reuse_anon_folio) without allocating.

    COW page tables: the PTE table is shared, so P's exit drops its share and frees only
    its PGD, PUD and PMD (the table stays, held by C). Deferred: P owned the table, so its
    RSS and VmPTE for it pass to C. C's first write reuses the table (share count 1):
    eager write-protected the entries at fork, so every page is then a wp_page_reuse as
    classic; deferred never write-protected them and the pages stayed exclusive, so the
    entries stay writable and only that first access faults (spuriously)."""
    n = 6
    a = p.mmap(0, n * PG, RW, PRIV)
    p.write(a, b"q" * (n * PG))
    c = p.fork()
    assert st(c, "RssAnon") == per_design(fork_design, 4 * n, deferred=0)
    assert st(c, "VmPTE") == per_design(fork_design, 12, deferred=8)
    free0, anon0, pt0 = mi(m, "MemFree"), mi(m, "AnonPages"), mi(m, "PageTables")
    p.exit()
    assert_mm_gone(p)
    assert mi(m, "AnonPages") == anon0 == 4 * n
    assert mi(m, "MemFree") == free0 + per_design(fork_design, 12, deferred=8, eager=8) + 4
    assert mi(m, "PageTables") == pt0 - per_design(fork_design, 12, deferred=8, eager=8) - 4
    assert st(c, "RssAnon") == 4 * n
    assert st(c, "VmPTE") == 12
    ev0 = m.vmstat()
    c.touch(a, n * PG, write=True)
    d = m.vmstat() - ev0
    assert d["wp_reuse"] == per_design(fork_design, n, deferred=0) and d["pgalloc"] == 0
    assert d["spurious_fault"] == per_design(fork_design, 0, deferred=1)
    assert d["cow_pte_tables_reused"] == per_design(fork_design, 0, deferred=1, eager=1)
    assert d["cow_pte_tables_duplicated"] == 0
    assert c.read(a, 3) == b"qqq"


def test_exit_zero_page_only(m, p):
    """A process that only read its memory holds only page tables: exit recovers exactly
    PUD+PMD+PTE+PGD, AnonPages is untouched, the zero page stays."""
    a = p.mmap(0, 64 * PG, RW, PRIV)
    p.read(a, 64 * PG)
    z = m.phys.zero_pfn
    zref = int(m.phys.refcount[z])
    free0, anon0 = mi(m, "MemFree"), mi(m, "AnonPages")
    p.exit()
    assert mi(m, "MemFree") == free0 + 16
    assert mi(m, "AnonPages") == anon0 == 0
    assert int(m.phys.refcount[z]) == zref
    assert mi(m, "MemFree") == mi(m, "MemTotal") - 4
    assert mi(m, "PageTables") == 0


def test_exit_frees_tables_of_every_level(m, p):
    """free_pgtables(FIRST_USER_ADDRESS, USER_PGTABLES_CEILING): a VMA straddling a 2 MiB
    boundary (2 PTE tables), a second VMA in another 1 GiB slot (PMD + PTE) and a third in
    another 512 GiB slot (PUD + PMD + PTE): 9 tables, all freed with the PGD."""
    a = p.mmap(BASE + (2 << 20) - 2 * PG, 4 * PG, RW, PRIV | MAP_FIXED)
    b = p.mmap(BASE + GB, PG, RW, PRIV | MAP_FIXED)
    c = p.mmap(BASE2, PG, RW, PRIV | MAP_FIXED)
    p.touch(a, 4 * PG)
    p.touch(b, PG)
    p.touch(c, PG)
    # BASE slot: PUD, PMD(BASE), 2 PTE, PMD(BASE+GB), PTE; BASE2 slot: PUD, PMD, PTE
    assert st(p, "VmPTE") == 4 * (1 + 1 + 2 + 1 + 1 + 3)
    assert mi(m, "PageTables") == st(p, "VmPTE") + 4
    assert st(p, "RssAnon") == 24
    free0 = mi(m, "MemFree")
    p.exit()
    assert_mm_gone(p)
    assert mi(m, "MemFree") == free0 + 24 + 36 + 4
    assert mi(m, "MemFree") == mi(m, "MemTotal") - 4
    assert mi(m, "PageTables") == 0
    assert mi(m, "AnonPages") == 0


def test_exit_shared_anon_mapped_vs_shmem(m, p):
    """meminfo.c + shmem lifetime: Mapped counts shmem pages mapped at least once, Shmem
    counts pages in the shmem cache. P writes 2 shmem pages, forks (C maps none of them:
    not copied, R5.2) and exits: Mapped -> 0 but Shmem stays 8 kB (C still holds the
    object). C reads one page, and fault-around (do_fault_around, 16 pages) maps both cached
    pages (Mapped 8); C exits: the object is freed, Shmem 0, and all memory is back."""
    s = p.mmap(0, 2 * PG, RW, SHARED)
    p.write(s, b"S" * (2 * PG))
    c = p.fork()
    assert mi(m, "Shmem") == 8 and mi(m, "Mapped") == 8
    free0 = mi(m, "MemFree")
    p.exit()
    assert_mm_gone(p)
    assert mi(m, "Mapped") == 0
    assert mi(m, "Shmem") == 8
    assert mi(m, "MemFree") == free0 + 12 + 4          # only P's tables and PGD
    assert c.read(s + PG, 2) == b"SS"
    assert mi(m, "Mapped") == 8
    assert st(c, "RssShmem") == 8
    c.exit()
    assert_mm_gone(c)
    assert mi(m, "Shmem") == 0 and mi(m, "Mapped") == 0
    assert mi(m, "MemFree") == mi(m, "MemTotal") - 4
    assert mi(m, "PageTables") == 0


def test_all_processes_exit_restores_memory():
    """SCENARIOS D.34 system-wide: a fork tree with anon, zero-page, shmem, DONTFORK,
    WIPEONFORK and PROT_NONE memory; after every process exits MemFree = MemTotal - 4 kB
    (the zero page), PageTables = 0, AnonPages = Shmem = Mapped = 0."""
    m = mmemu.Machine("256M")
    p = m.spawn()
    a = p.mmap(0, 32 * PG, RW, PRIV)
    p.touch(a, 16 * PG)
    p.read(a + 16 * PG, 16 * PG)
    s = p.mmap(0, 4 * PG, RW, SHARED)
    p.write(s, b"s" * PG)
    d = p.mmap(BASE, 4 * PG, RW, PRIV | MAP_FIXED)
    p.touch(d, 4 * PG)
    p.madvise(d, 4 * PG, mmemu.MADV_DONTFORK)
    w = p.mmap(BASE + GB, 4 * PG, RW, PRIV | MAP_FIXED)
    p.touch(w, 4 * PG)
    p.madvise(w, 4 * PG, mmemu.MADV_WIPEONFORK)
    n = p.mmap(BASE2, 2 * PG, RW, PRIV | MAP_FIXED)
    p.touch(n, 2 * PG)
    p.mprotect(n, 2 * PG, PROT_NONE)
    c = p.fork()
    c.touch(a, 8 * PG)
    c.touch(w, 2 * PG)
    c.write(s + PG, b"c")
    g = c.fork()
    g.touch(a + 4 * PG, 8 * PG)
    assert mi(m, "AnonPages") > 0 and mi(m, "Shmem") == 8
    m.check()
    for proc in (c, p, g):
        proc.exit()
        m.check()
    assert m.processes == []
    assert mi(m, "MemFree") == mi(m, "MemTotal") - 4
    assert mi(m, "PageTables") == 0
    assert mi(m, "AnonPages") == 0
    assert mi(m, "Shmem") == 0
    assert mi(m, "Mapped") == 0
    m.check()


def test_exited_process_is_gone(m, p):
    """After exit the pid is no longer a live process (ESRCH) and syscalls on the task fail
    with ESRCH; a second exit also fails."""
    a = p.mmap(0, PG, RW, PRIV)
    p.write(a, b"x")
    pid = p.pid
    p.exit()
    assert p not in m.processes
    with pytest.raises(mmemu.MMError) as exc:
        m.process(pid)
    assert exc.value.errno == errno.ESRCH
    for call in (lambda: p.mmap(0, PG, RW, PRIV), lambda: p.read(a, 1),
                 lambda: p.write(a, b"y"), lambda: p.fork(), lambda: p.exit(),
                 lambda: p.munmap(a, PG), lambda: p.mprotect(a, PG, PROT_READ)):
        with pytest.raises(mmemu.MMError) as exc:
            call()
        assert exc.value.errno == errno.ESRCH
    assert_mm_gone(p)


def test_execve_accounting(m, p):
    """execve replaces the mm (exec_mmap + mmput of the old one): the old address space is
    torn down like exit (pages + PUD/PMD/PTE tables freed, old PGD freed) and the new mm
    starts with just a PGD, so PageTables drops by the old VmPTE only and MemFree rises by
    pages + VmPTE. Every counter restarts at 0, including the high-water marks."""
    a = p.mmap(0, 8 * PG, RW, PRIV)
    p.touch(a, 8 * PG)
    s = p.mmap(0, PG, RW, SHARED)
    p.write(s, b"x")
    assert st(p, "VmPTE") == 12                   # both VMAs sit under the same PMD span
    free0, pt0 = mi(m, "MemFree"), mi(m, "PageTables")
    pid = p.pid
    p.execve()
    assert p.pid == pid and p in m.processes
    assert_mm_gone(p)
    assert st(p, "VmHWM") == 0 and st(p, "VmPeak") == 0
    assert mi(m, "MemFree") == free0 + 32 + 4 + 12
    assert mi(m, "PageTables") == pt0 - 12
    assert mi(m, "AnonPages") == 0 and mi(m, "Shmem") == 0 and mi(m, "Mapped") == 0
    with pytest.raises(mmemu.SegmentationFault) as exc:
        p.read(a, 1)
    assert exc.value.code == "SEGV_MAPERR"
    b = p.mmap(0, PG, RW, PRIV)
    p.write(b, b"new")
    assert st(p, "VmPTE") == 12 and st(p, "RssAnon") == 4


def test_execve_in_child_keeps_parent_pages(m, p, fork_design):
    """fork + execve (the usual spawn): the child's execve drops its references to the COW
    pages; AnonPages is unchanged (P still maps them), MemFree recovers only the child's
    tables, and the parent's next writes reuse its pages without copying.

    COW page tables: the child's PTE table was P's shared one, so the execve frees only
    its PUD and PMD (the table stays, held by P). P's first write reuses the table:
    eager's write-protected entries are then reused page by page as classic; deferred's
    entries were never write-protected and the pages stayed exclusive, so only the first
    access faults (spuriously)."""
    n = 4
    a = p.mmap(0, n * PG, RW, PRIV)
    p.write(a, b"z" * (n * PG))
    c = p.fork()
    free0, anon0 = mi(m, "MemFree"), mi(m, "AnonPages")
    c.execve()
    assert_mm_gone(c)
    assert mi(m, "AnonPages") == anon0 == 4 * n
    # PUD+PMD+PTE (COW: PUD+PMD, the table stays with P); old PGD swapped for new
    assert mi(m, "MemFree") == free0 + per_design(fork_design, 12, deferred=8, eager=8)
    assert st(p, "RssAnon") == 4 * n and st(p, "VmPTE") == 12
    ev0 = m.vmstat()
    p.touch(a, n * PG, write=True)
    d = m.vmstat() - ev0
    assert d["wp_reuse"] == per_design(fork_design, n, deferred=0)
    assert d["pgalloc"] == 0 and d["cow_fault"] == 0
    assert d["spurious_fault"] == per_design(fork_design, 0, deferred=1)
    assert d["cow_pte_tables_reused"] == per_design(fork_design, 0, deferred=1, eager=1)
    assert p.read(a, 2) == b"zz"
