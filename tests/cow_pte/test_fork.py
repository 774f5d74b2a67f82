"""fork and copy-on-write (SCENARIOS B items 7-13, 17) and what fork skips (C 20-24, 26-28).

Base-page ports of tools/testing/selftests/mm/cow.c, LTP madvise10, selftests merge.c.
Expectations follow SEMANTICS.md R5.x/R6.x; "verified on Linux 6.18" marks values checked
on the real kernel under this machine (ctypes mmap/madvise + os.fork + /proc/self/*).

Every test runs in all three fork designs (classic, COW page tables with deferred and with
eager accounting). Data, errors and signals are asserted identical; the statistics a design
defines (README "Copy-on-write page tables": refcount/mapcount/AE at fork, raw PTE bits,
the child's RSS/VmPTE/smaps/pagemap, MemFree/PageTables for tables, fork_ptes_copied and the
cow_pte_* counters) are asserted per design with ``per_design`` (classic values unchanged).
"""
from __future__ import annotations

import itertools

import pytest

import mmemu
from mmemu import (
    MADV_DOFORK, MADV_DONTFORK, MADV_DONTNEED, MADV_KEEPONFORK, MADV_NORMAL, MADV_WIPEONFORK,
    MAP_FIXED, MAP_LOCKED, MAP_NORESERVE, PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE,
)

from conftest import PG, PRIV, RW, SHARED, mi, per_design, st

P_BIT = 1 << 0
RW_BIT = 1 << 1
A_BIT = 1 << 5
D_BIT = 1 << 6
PFN_MASK = ((1 << 52) - 1) & ~0xFFF
PM_PRESENT = 1 << 63
PM_PFN = (1 << 55) - 1
PG_ANON_EXCLUSIVE = 128

BASE = 0x100000000000          # a 512 GiB slot nothing else uses
GB = 1 << 30


def pte_of(proc, addr):
    return proc.mm.core.walk(addr)[3]


def pmd_of(proc, addr):
    return proc.mm.core.walk(addr)[2]


def writable(proc, addr):
    """The effective write permission of the walk: RW of the PMD entry AND of the PTE."""
    return bool(pmd_of(proc, addr) & RW_BIT) and bool(pte_of(proc, addr) & RW_BIT)


def table_of(proc, addr):
    """The PTE table frame the PMD entry for addr points at."""
    return (pmd_of(proc, addr) >> 12) & ((1 << 40) - 1)


def cow(design, classic, shared):
    """A COW counter/statistic: `classic` in the classic design, `shared` in both COW ones."""
    return per_design(design, classic, deferred=shared, eager=shared)


def pfn_of(proc, addr):
    return int(proc.pagemap(addr, 1)[0]) & PM_PFN


def ae(m, pfn):
    return bool(int(m.phys.flags[pfn]) & PG_ANON_EXCLUSIVE)


def vma_spans(proc, lo=0, hi=1 << 64):
    return [(v.start, v.end) for v in proc.mm.vmas if v.start < hi and v.end > lo]


# ------------------------------------------------------------------------------- B.7
def test_cow_in_parent(m, p, fork_design):
    """cow.c:test_cow_in_parent (base page). memset 1, fork, child snapshots, parent
    memsets 0xff, child compares -> still 1s. refcount/mapcount 2 after fork (AE cleared);
    the parent's write allocates exactly one page (wp_page_copy), the old page is left with
    mapcount 1 (the child's).

    COW page tables: deferred takes no per-page reference at fork (refcount/mapcount 1, AE
    kept), eager takes them as classic. The parent's write first breaks the shared table
    (share count 2): the parent gets a private copy (one more table frame: MemFree -4 more,
    PageTables +4); deferred takes the copy's references then (refcount 2) and, the parent
    being the owner, hands its RSS for the old table to the child; then wp_page_copy."""
    a = p.mmap(0, PG, RW, PRIV)
    p.write(a, b"\x01" * PG)
    old = pfn_of(p, a)
    assert ae(m, old)

    c = p.fork()
    snap = c.read(a, PG)
    assert snap == b"\x01" * PG
    assert int(m.phys.refcount[old]) == per_design(fork_design, 2, deferred=1)
    assert int(m.phys.mapcount[old]) == per_design(fork_design, 2, deferred=1)
    assert ae(m, old) == per_design(fork_design, False, deferred=True)
    assert pfn_of(c, a) == old

    anon0, free0, pt0 = mi(m, "AnonPages"), mi(m, "MemFree"), mi(m, "PageTables")
    ev0 = m.vmstat()
    p.write(a, b"\xff" * PG)
    d = m.vmstat() - ev0
    assert d["pgalloc"] == 1
    assert d["cow_fault"] == 1
    assert d["pages_copied"] == 1
    assert d["wp_reuse"] == 0
    assert d["cow_zero_fault"] == 0
    assert d["cow_pte_tables_duplicated"] == cow(fork_design, 0, 1)
    assert d["cow_pte_entries_copied"] == cow(fork_design, 0, 1)
    assert d["cow_pte_tables_reused"] == 0
    assert mi(m, "AnonPages") == anon0 + 4
    assert mi(m, "MemFree") == free0 - cow(fork_design, 4, 8)
    assert mi(m, "PageTables") == pt0 + cow(fork_design, 0, 4)

    assert c.read(a, PG) == snap                    # no leak into the child
    assert p.read(a, PG) == b"\xff" * PG
    new = pfn_of(p, a)
    assert new != old
    assert int(m.phys.mapcount[old]) == 1 and int(m.phys.refcount[old]) == 1
    assert int(m.phys.mapcount[new]) == 1 and int(m.phys.refcount[new]) == 1
    assert ae(m, new)
    assert st(p, "RssAnon") == 4 and st(c, "RssAnon") == 4


# ------------------------------------------------------------------------------- B.8
def test_cow_in_parent_mprotect(m, p):
    """cow.c:test_cow_in_parent_mprotect. As test_cow_in_parent, but the parent does
    mprotect(R) then mprotect(RW) before writing: the shared page is not AE, so
    can_change_pte_writable refuses RW and the PTE stays read-only; the write COWs and
    nothing leaks into the child (mprotect.c:can_change_pte_writable)."""
    a = p.mmap(0, PG, RW, PRIV)
    p.write(a, b"\x01" * PG)
    old = pfn_of(p, a)
    c = p.fork()
    snap = c.read(a, PG)

    p.mprotect(a, PG, PROT_READ)
    p.mprotect(a, PG, RW)
    e = pte_of(p, a)
    assert e & P_BIT
    assert not e & RW_BIT                 # still write-protected
    assert not writable(p, a)
    assert (e & PFN_MASK) >> 12 == old

    ev0 = m.vmstat()
    p.write(a, b"\xff" * PG)
    d = m.vmstat() - ev0
    assert d["cow_fault"] == 1 and d["pgalloc"] == 1 and d["wp_reuse"] == 0
    assert c.read(a, PG) == snap
    assert pfn_of(p, a) != old
    assert pfn_of(c, a) == old


# ------------------------------------------------------------------------------- B.9
def test_child_writes_first_then_parent_reuses(m, p):
    """SCENARIOS B.9; memory.c:do_wp_page / wp_can_reuse_anon_folio (by refcount).
    Verified on Linux 6.18: after the child's write the child has a new PFN, and the
    parent's later write keeps its PFN (reuse), pagemap exclusive=1."""
    a = p.mmap(0, PG, RW, PRIV)
    p.write(a, b"P" * PG)
    old = pfn_of(p, a)
    c = p.fork()

    ev0 = m.vmstat()
    anon0 = mi(m, "AnonPages")
    c.write(a, b"C")
    d = m.vmstat() - ev0
    assert d["cow_fault"] == 1 and d["pgalloc"] == 1 and d["pages_copied"] == 1
    assert st(c, "RssAnon") == 4                 # replaced, not added
    assert mi(m, "AnonPages") == anon0 + 4
    assert pfn_of(c, a) != old
    assert int(m.phys.refcount[old]) == 1 and int(m.phys.mapcount[old]) == 1
    assert not ae(m, old)                        # AE is only restored on reuse

    ev1 = m.vmstat()
    p.write(a, b"p")
    d = m.vmstat() - ev1
    assert d["wp_reuse"] == 1
    assert d["pgalloc"] == 0 and d["cow_fault"] == 0
    assert pfn_of(p, a) == old
    assert ae(m, old)
    assert pte_of(p, a) & RW_BIT
    assert writable(p, a)
    assert mi(m, "AnonPages") == anon0 + 4
    assert p.read(a, 2) == b"pP"
    assert c.read(a, 2) == b"CP"


# ------------------------------------------------------------------------------ B.10
def test_previously_shared_reuse_after_child_exit(m, p, fork_design):
    """cow.c:do_test_ro_pin setup RO_PIN_TEST_PREVIOUSLY_SHARED without the pin;
    memory.c:wp_can_reuse_anon_folio. fork, child exits, parent writes -> refcount 1,
    reused in place, no allocation (verified on Linux 6.18: same PFN after the write).

    COW page tables: the child's exit drops its share (the table stays, share count 1) and
    the parent's PMD stays read-only until its next fault reuses the table. Deferred never
    cleared AE nor the PTEs' RW, so the reused table keeps them writable: the first write
    finds the entry already writable (a spurious fault) and the second faults not at all.
    Eager write-protected the entries at fork: two wp_page_reuse as classic."""
    a = p.mmap(0, 2 * PG, RW, PRIV)
    p.write(a, b"s" * (2 * PG))
    pfns = [pfn_of(p, a), pfn_of(p, a + PG)]
    c = p.fork()
    c.exit()
    for f in pfns:
        assert int(m.phys.refcount[f]) == 1 and int(m.phys.mapcount[f]) == 1
        assert ae(m, f) == per_design(fork_design, False, deferred=True)
        assert not writable(p, a)
        assert bool(pte_of(p, a) & RW_BIT) == per_design(fork_design, False, deferred=True)
        assert bool(pmd_of(p, a) & RW_BIT) == cow(fork_design, True, False)
    assert int(m.phys.pt_share[table_of(p, a)]) == 1

    ev0 = m.vmstat()
    p.write(a, b"t")
    p.write(a + PG, b"u")
    d = m.vmstat() - ev0
    assert d["wp_reuse"] == per_design(fork_design, 2, deferred=0)
    assert d["spurious_fault"] == per_design(fork_design, 0, deferred=1)
    assert d["pgfault"] == per_design(fork_design, 2, deferred=1)
    assert d["cow_pte_tables_reused"] == cow(fork_design, 0, 1)
    assert d["cow_pte_tables_duplicated"] == 0
    assert d["pgalloc"] == 0 and d["cow_fault"] == 0
    assert writable(p, a) and writable(p, a + PG)
    assert [pfn_of(p, a), pfn_of(p, a + PG)] == pfns
    assert all(ae(m, f) for f in pfns)
    assert p.read(a, 2) == b"ts" and p.read(a + PG, 2) == b"us"


# ------------------------------------------------------------------------------ B.11
def test_write_protect_on_fork_pte_bits(m, p, fork_design):
    """memory.c:__copy_present_ptes. A writable private anon PTE: both P's and C's copies
    lose RW (is_cow_mapping && pte_write); C's is pte_mkold (A=0); D is kept for private
    mappings; P keeps A. Same PFN on both sides.

    COW page tables: no PTE is copied; the child's PMD points at the parent's table and both
    PMDs lose RW, so neither side may write (the effective permission is the AND along the
    walk). The child sees the parent's very entry (its A bit is the parent's). Eager
    write-protects the entry at fork; deferred keeps the parent's PTE RW."""
    a = p.mmap(0, PG, RW, PRIV)
    p.write(a, b"x")
    pe0 = pte_of(p, a)
    assert pe0 & (RW_BIT | A_BIT | D_BIT) == RW_BIT | A_BIT | D_BIT
    assert writable(p, a)

    ev0 = m.vmstat()
    c = p.fork()
    d = m.vmstat() - ev0
    assert d["fork_ptes_copied"] == cow(fork_design, 1, 0)
    assert d["fork_pte_tables_copied"] == cow(fork_design, 1, 0)
    assert d["cow_pte_tables_shared"] == cow(fork_design, 0, 1)

    pe, ce = pte_of(p, a), pte_of(c, a)
    assert not writable(p, a) and not writable(c, a)
    for x in (p, c):
        assert bool(pmd_of(x, a) & RW_BIT) == cow(fork_design, True, False)
    assert (table_of(p, a) == table_of(c, a)) == cow(fork_design, False, True)
    assert int(m.phys.pt_share[table_of(p, a)]) == cow(fork_design, 1, 2)
    assert pe == per_design(fork_design, pe0 & ~RW_BIT, deferred=pe0)
    assert bool(pe & RW_BIT) == per_design(fork_design, False, deferred=True)
    assert pe & A_BIT and pe & D_BIT
    assert bool(ce & RW_BIT) == per_design(fork_design, False, deferred=True)
    assert bool(ce & A_BIT) == cow(fork_design, False, True)
    assert ce & D_BIT
    assert ce == per_design(fork_design, pe & ~A_BIT, deferred=pe, eager=pe)
    assert (pe & PFN_MASK) == (ce & PFN_MASK)


# ------------------------------------------------------------------------------ B.12
def test_stats_after_fork(m, p, fork_design):
    """SCENARIOS B.12; memory.c:copy_pte_range; fork.c:dup_mm; rmap.c.
    N written pages: C RssAnon = P RssAnon = N; AnonPages unchanged by fork (R5.7);
    C VmHWM = C VmRSS (verified on Linux 6.18); C VmPTE = P VmPTE for the copied VMA
    (PUD+PMD+PTE = 12 kB); fork costs C's three tables plus its PGD (16 kB of MemFree and of
    PageTables). C writes k pages: AnonPages +k. C exits: AnonPages -k.

    COW page tables: the PTE table is shared, so the fork costs only C's PGD, PUD and PMD
    (12 kB). Deferred: C counts neither the shared pages (RssAnon/VmRSS 0) nor the table
    (VmPTE 8 = PUD+PMD); eager counts both as classic. C's first write breaks the table:
    C gets a private copy (4 kB more, so MemFree/PageTables end where classic's do);
    deferred then takes the per-page references and C's RSS/VmPTE grow to classic's, eager
    copies the accounted entries verbatim (VmPTE unchanged)."""
    n, k = 8, 3
    a = p.mmap(0, n * PG, RW, PRIV)
    p.touch(a, n * PG, write=True)
    anon0, free0, pt0 = mi(m, "AnonPages"), mi(m, "MemFree"), mi(m, "PageTables")
    assert anon0 == 4 * n
    f0 = pfn_of(p, a)

    ev0 = m.vmstat()
    c = p.fork()
    d = m.vmstat() - ev0
    assert d["fork_ptes_copied"] == cow(fork_design, n, 0)
    assert d["fork_pte_tables_copied"] == cow(fork_design, 1, 0)
    assert d["cow_pte_tables_shared"] == cow(fork_design, 0, 1)
    assert d["pgalloc"] == 0
    assert st(p, "RssAnon") == 4 * n
    assert st(c, "RssAnon") == per_design(fork_design, 4 * n, deferred=0)
    assert st(c, "VmRSS") == per_design(fork_design, 4 * n, deferred=0)
    assert st(c, "VmHWM") == st(c, "VmRSS")
    assert st(p, "VmPTE") == 12
    assert st(c, "VmPTE") == per_design(fork_design, 12, deferred=8)
    assert st(c, "VmSize") == st(p, "VmSize") == 4 * n
    assert st(c, "VmData") == st(p, "VmData") == 4 * n
    assert int(m.phys.refcount[f0]) == per_design(fork_design, 2, deferred=1)
    assert int(m.phys.mapcount[f0]) == per_design(fork_design, 2, deferred=1)
    assert mi(m, "AnonPages") == anon0
    assert mi(m, "MemFree") == free0 - cow(fork_design, 16, 12)
    assert mi(m, "PageTables") == pt0 + cow(fork_design, 16, 12)

    ev1 = m.vmstat()
    c.touch(a, k * PG, write=True)
    d = m.vmstat() - ev1
    assert d["cow_fault"] == k and d["pgalloc"] == k
    assert d["cow_pte_tables_duplicated"] == cow(fork_design, 0, 1)
    assert d["cow_pte_entries_copied"] == cow(fork_design, 0, n)
    assert mi(m, "AnonPages") == anon0 + 4 * k
    assert st(c, "RssAnon") == st(p, "RssAnon") == 4 * n
    assert st(c, "VmPTE") == st(p, "VmPTE") == 12
    assert int(m.phys.refcount[f0]) == 1 and int(m.phys.mapcount[f0]) == 1
    assert mi(m, "MemFree") == free0 - 16 - 4 * k
    assert mi(m, "PageTables") == pt0 + 16

    c.exit()
    assert mi(m, "AnonPages") == anon0
    assert mi(m, "MemFree") == free0
    assert mi(m, "PageTables") == pt0
    assert st(p, "RssAnon") == 4 * n


def test_fork_copies_all_none_pte_table(m, p, fork_design):
    """memory.c:copy_pte_range allocates the destination table before looking at the
    source entries (R5.3): after MADV_DONTNEED of every written page (less than 2 MiB, so
    no PT reclaim) the VMA keeps its anon_vma and an all-none PTE table, and the child
    still gets PUD+PMD+PTE. Verified on Linux 6.18: the child's VmPTE is +12 kB with such
    a region and +0 kB for a never-written (read-only) region.

    COW page tables: the all-none table is shared like any other (eager counts it in the
    child's VmPTE, deferred does not). The child's read fault fills an entry, so it first
    breaks the table: the child's own copy (deferred VmPTE 8 -> 12)."""
    a = p.mmap(0, 4 * PG, RW, PRIV)
    p.write(a, b"x")
    p.madvise(a, 4 * PG, MADV_DONTNEED)
    assert st(p, "RssAnon") == 0
    assert st(p, "VmPTE") == 12
    free0 = mi(m, "MemFree")
    ev0 = m.vmstat()
    c = p.fork()
    d = m.vmstat() - ev0
    assert d["cow_pte_tables_shared"] == cow(fork_design, 0, 1)
    assert d["fork_pte_tables_copied"] == cow(fork_design, 1, 0)
    assert mi(m, "MemFree") == free0 - cow(fork_design, 16, 12)
    assert st(c, "VmPTE") == per_design(fork_design, 12, deferred=8)
    assert st(c, "RssAnon") == 0
    ev1 = m.vmstat()
    assert c.read(a, 1) == b"\x00"
    d = m.vmstat() - ev1
    assert d["cow_pte_tables_duplicated"] == cow(fork_design, 0, 1)
    assert d["cow_pte_entries_copied"] == 0
    assert st(c, "VmPTE") == 12
    assert st(c, "RssAnon") == 0


# ------------------------------------------------------------------------------ B.13
def test_zero_page_region_not_copied(m, p, fork_design):
    """SCENARIOS B.13; memory.c:vma_needs_copy (no anon_vma -> no PTEs copied);
    do_anonymous_page. Verified on Linux 6.18: the child's pagemap for a parent-read-only
    region is not present and its VmPTE lacks the region's 12 kB.

    COW page tables: vma_needs_copy still skips the read-only region (no table for it in
    the child); the written VMA's table is shared, which deferred does not count in the
    child's VmPTE (PUD+PMD only) or RssAnon."""
    z = m.phys.zero_pfn
    r = p.mmap(BASE, 4 * PG, RW, PRIV | MAP_FIXED)           # read only
    w = p.mmap(BASE + GB, 4 * PG, RW, PRIV | MAP_FIXED)      # written
    p.read(r, 4 * PG)
    p.write(w, b"w")
    assert st(p, "VmPTE") == 4 * 5                 # PUD + 2 PMD + 2 PTE

    ev0 = m.vmstat()
    c = p.fork()
    d = m.vmstat() - ev0
    assert d["fork_ptes_copied"] == cow(fork_design, 1, 0)
    assert d["cow_pte_tables_shared"] == cow(fork_design, 0, 1)
    # PUD + PMD + PTE of the written VMA (deferred: the shared PTE table is the owner's)
    assert st(c, "VmPTE") == per_design(fork_design, 4 * 3, deferred=4 * 2)
    assert all(int(v) == 0 for v in c.pagemap(r, 4))
    assert all(int(v) == PM_PRESENT | z for v in p.pagemap(r, 4))
    assert c.mm.core.walk(r)[2] == 0               # no PMD entry for the region

    ev1 = m.vmstat()
    assert c.read(r, 4 * PG) == bytes(4 * PG)
    d = m.vmstat() - ev1
    assert d["fault_zero_page"] == 4 and d["pgalloc"] == 0
    assert d["cow_pte_tables_duplicated"] == 0 and d["cow_pte_tables_reused"] == 0
    assert all(int(v) == PM_PRESENT | z for v in c.pagemap(r, 4))
    assert st(c, "VmPTE") == per_design(fork_design, 4 * 5, deferred=4 * 4)
    assert st(c, "RssAnon") == per_design(fork_design, 4, deferred=0)
    assert c.read(w, 1) == b"w"


def test_zero_page_pte_copied_verbatim_in_anon_vma(m, p, fork_design):
    """memory.c:copy_present_ptes (R5.5): in a VMA that has an anon_vma, a zero-page PTE is
    copied as is (vm_normal_page NULL): present in the child, no RSS, no refcount change.

    COW page tables: the child sees the parent's zero-page entry itself (A bit the
    parent's, set by its read fault); deferred counts no RSS for the child until its write
    breaks the table (its copy then counts the anon page) and the zero page COWs."""
    z = m.phys.zero_pfn
    a = p.mmap(0, 2 * PG, RW, PRIV)
    p.write(a, b"x")
    p.read(a + PG, 1)
    pe = pte_of(p, a + PG)
    assert pe & A_BIT and not pe & RW_BIT
    zref = int(m.phys.refcount[z])
    ev0 = m.vmstat()
    c = p.fork()
    d = m.vmstat() - ev0
    assert d["fork_ptes_copied"] == cow(fork_design, 2, 0)
    assert int(c.pagemap(a + PG, 1)[0]) == PM_PRESENT | z
    assert int(m.phys.refcount[z]) == zref
    assert st(c, "RssAnon") == per_design(fork_design, 4, deferred=0)
    ce = pte_of(c, a + PG)
    assert not ce & RW_BIT
    assert bool(ce & A_BIT) == cow(fork_design, False, True)
    assert ce == per_design(fork_design, pe & ~A_BIT, deferred=pe, eager=pe)
    # writing the zero page in the child allocates a zeroed page, P still sees zero page
    ev1 = m.vmstat()
    c.write(a + PG, b"c")
    d = m.vmstat() - ev1
    assert d["cow_zero_fault"] == 1 and d["pgalloc"] == 1
    assert d["cow_pte_tables_duplicated"] == cow(fork_design, 0, 1)
    assert d["cow_pte_entries_copied"] == cow(fork_design, 0, 2)
    assert int(m.phys.refcount[z]) == zref
    assert st(c, "RssAnon") == 8
    assert int(p.pagemap(a + PG, 1)[0]) == PM_PRESENT | z
    assert p.read(a + PG, 1) == b"\x00"
    assert c.read(a, 2) == b"x\x00" and c.read(a + PG, 2) == b"c\x00"


# ------------------------------------------------------------------------------ B.17
@pytest.mark.parametrize("order", list(itertools.permutations("PCG")),
                         ids=lambda o: "".join(o))
def test_grandchild_chain(m, p, order, fork_design):
    """SCENARIOS B.17 (cow.c COW semantics over a P->C->G chain). After two forks the
    page has mapcount 3 and refcount 3. Whatever the order of writes, the first two writers
    copy (refcount > 1, AE clear) and the last reuses (refcount 1, memory.c:
    wp_can_reuse_anon_folio); each process ends with its own data.

    COW page tables: C's fork shares the table C already shares with P (share count 3);
    all three walk the same entry, read-only through their PMDs (deferred keeps the PTE's
    RW). Eager counts the page per process as classic. Deferred counts it once (refcount
    and mapcount 1); each of the first two writers breaks the table, taking one reference
    for its copy, then COWs, dropping it: after the first write the page is still mapped
    only through the shared table (refcount 1), after the second through the last
    holder's table (refcount 1, AE cleared by the copies). The last writer reuses the
    table (its entry write-protected since the page is no longer exclusive), then the page."""
    a = p.mmap(0, PG, RW, PRIV)
    p.write(a, b"0" * PG)
    orig = pfn_of(p, a)
    c = p.fork()
    g = c.fork()
    procs = {"P": p, "C": c, "G": g}
    assert int(m.phys.mapcount[orig]) == per_design(fork_design, 3, deferred=1)
    assert int(m.phys.refcount[orig]) == per_design(fork_design, 3, deferred=1)
    assert all(pfn_of(x, a) == orig for x in procs.values())
    assert all(not writable(x, a) for x in procs.values())
    assert all(bool(pte_of(x, a) & RW_BIT) == per_design(fork_design, False, deferred=True)
               for x in procs.values())
    assert all(bool(pmd_of(x, a) & RW_BIT) == cow(fork_design, True, False)
               for x in procs.values())
    assert len({table_of(x, a) for x in procs.values()}) == cow(fork_design, 3, 1)
    assert int(m.phys.pt_share[table_of(p, a)]) == cow(fork_design, 1, 3)

    for i, name in enumerate(order):
        ev0 = m.vmstat()
        procs[name].write(a, name.encode())
        d = m.vmstat() - ev0
        if i < 2:
            assert d["cow_fault"] == 1 and d["pgalloc"] == 1 and d["wp_reuse"] == 0
            assert d["cow_pte_tables_duplicated"] == cow(fork_design, 0, 1)
            assert d["cow_pte_tables_reused"] == 0
            assert pfn_of(procs[name], a) != orig
            assert int(m.phys.refcount[orig]) == per_design(fork_design, 2 - i, deferred=1)
        else:
            assert d["wp_reuse"] == 1 and d["pgalloc"] == 0 and d["cow_fault"] == 0
            assert d["cow_pte_tables_duplicated"] == 0
            assert d["cow_pte_tables_reused"] == cow(fork_design, 0, 1)
            assert pfn_of(procs[name], a) == orig
            assert ae(m, orig)
        assert writable(procs[name], a)
    for name, x in procs.items():
        assert x.read(a, 2) == name.encode() + b"0"
        assert st(x, "RssAnon") == 4
    assert len({pfn_of(x, a) for x in procs.values()}) == 3
    assert mi(m, "AnonPages") == 12


# ------------------------------------------------------------------------------- C.20
def test_madv_dontfork(m, p, fork_design):
    """SCENARIOS C.20; mmap.c:dup_mmap (VM_DONTCOPY: absent in the child,
    vm_stat_account(-pages)). Verified on Linux 6.18: the child's VmSize and VmData are
    16 kB lower for a 4-page RW DONTFORK region. The parent is unaffected.

    COW page tables: keep's table (its span has no DONTCOPY VMA) is shared; the DONTFORK
    span is neither shared nor copied, so the parent's entries and PMD there stay
    writable."""
    keep = p.mmap(BASE, 2 * PG, RW, PRIV | MAP_FIXED)
    a = p.mmap(BASE + GB, 4 * PG, RW, PRIV | MAP_FIXED)
    p.write(keep, b"k")
    p.write(a, b"D" * (4 * PG))
    assert p.madvise(a, 4 * PG, MADV_DONTFORK) == 0
    ev0 = m.vmstat()
    c = p.fork()
    d = m.vmstat() - ev0
    assert d["fork_ptes_copied"] == cow(fork_design, 1, 0)
    assert d["cow_pte_tables_shared"] == cow(fork_design, 0, 1)
    assert vma_spans(c) == [(keep, keep + 2 * PG)]
    assert st(c, "VmSize") == st(p, "VmSize") - 16
    assert st(c, "VmData") == st(p, "VmData") - 16
    assert st(c, "RssAnon") == per_design(fork_design, 4, deferred=0)
    # only keep's PUD+PMD+PTE (deferred: the shared PTE table is the parent's)
    assert st(c, "VmPTE") == per_design(fork_design, 12, deferred=8)
    assert c.read(keep, 1) == b"k"
    with pytest.raises(mmemu.SegmentationFault) as exc:
        c.read(a + 10, 1)
    assert exc.value.code == "SEGV_MAPERR" and exc.value.address == a + 10
    # parent unaffected
    assert p.read(a, 4 * PG) == b"D" * (4 * PG)
    assert st(p, "RssAnon") == 20
    assert int(m.phys.refcount[pfn_of(p, a)]) == 1
    assert pte_of(p, a) & RW_BIT                  # never write-protected: not copied
    assert writable(p, a)


def test_madv_dontfork_partial_then_dofork(m, p, fork_design):
    """SCENARIOS C.20 (cow.c THP_RUN_PARTIAL_SHARED uses DONTFORK/DOFORK on part of a
    range). DONTFORK on the middle two of four pages splits the VMA in three; the child
    gets the outer two with a hole between (SEGV_MAPERR). MADV_DOFORK clears VM_DONTCOPY,
    the VMAs merge back, and the next child sees everything.

    COW page tables: the first fork may not share the span (it touches a DONTCOPY VMA), so
    it is a classic copy in every design; the second fork shares it (deferred: the second
    child counts none of its pages)."""
    a = p.mmap(0, 4 * PG, RW, PRIV)
    for i in range(4):
        p.write(a + i * PG, bytes([0x41 + i]) * PG)
    p.madvise(a + PG, 2 * PG, MADV_DONTFORK)
    assert vma_spans(p) == [(a, a + PG), (a + PG, a + 3 * PG), (a + 3 * PG, a + 4 * PG)]
    assert "dc" in [e for e in p.smaps() if e["start"] == a + PG][0]["VmFlags"]
    ev0 = m.vmstat()
    c = p.fork()
    d = m.vmstat() - ev0
    assert d["fork_ptes_copied"] == 2 and d["fork_pte_tables_copied"] == 1
    assert d["cow_pte_tables_shared"] == 0
    assert vma_spans(c) == [(a, a + PG), (a + 3 * PG, a + 4 * PG)]
    assert c.read(a, 1) == b"A" and c.read(a + 3 * PG, 1) == b"D"
    with pytest.raises(mmemu.SegmentationFault) as exc:
        c.read(a + 2 * PG, 1)
    assert exc.value.code == "SEGV_MAPERR"
    assert st(c, "VmSize") == 8 and st(c, "RssAnon") == 8
    assert st(c, "VmPTE") == 12

    assert p.madvise(a + PG, 2 * PG, MADV_DOFORK) == 0
    assert vma_spans(p) == [(a, a + 4 * PG)]
    ev0 = m.vmstat()
    c2 = p.fork()
    d = m.vmstat() - ev0
    assert d["cow_pte_tables_shared"] == cow(fork_design, 0, 1)
    assert vma_spans(c2) == [(a, a + 4 * PG)]
    assert c2.read(a + PG, 1) == b"B" and c2.read(a + 2 * PG, 1) == b"C"
    assert st(c2, "RssAnon") == per_design(fork_design, 16, deferred=0)
    assert st(c2, "VmSize") == 16
    assert st(c2, "VmPTE") == per_design(fork_design, 12, deferred=8)


# ------------------------------------------------------------------------- C.21 - C.24
MAP_SIZE = 16 * 1024
PATTERN = bytes(i % 3 for i in range(MAP_SIZE))        # madvise10: pattern[i] = i % 0x03


def _madvise10_setup(p, size, advise1, advise2):
    addr = p.mmap(0, MAP_SIZE, RW, PRIV)
    p.write(addr, PATTERN)
    assert p.madvise(addr, size, advise1) == 0
    assert p.madvise(addr, size, advise2) == 0
    return addr


def test_wipeonfork_zeroes_child(m, p):
    """LTP madvise10 case 1: MADV_WIPEONFORK zeroes memory in the child; the parent keeps
    the pattern. The child's copy of the VMA has no anon_vma and no PTEs (dup_mmap skips
    copy_page_range), so its RssAnon and VmPTE exclude the range (verified on Linux 6.18:
    child pagemap not present, reads 0)."""
    addr = _madvise10_setup(p, MAP_SIZE, MADV_NORMAL, MADV_WIPEONFORK)
    ev0 = m.vmstat()
    c = p.fork()
    d = m.vmstat() - ev0
    assert d["fork_ptes_copied"] == 0
    assert vma_spans(c) == [(addr, addr + MAP_SIZE)]     # the VMA is kept
    assert "wf" in c.smaps()[0]["VmFlags"]
    assert st(c, "RssAnon") == 0
    assert st(c, "VmPTE") == 0
    assert st(c, "VmSize") == 16
    assert all(int(v) == 0 for v in c.pagemap(addr, 4))
    assert c.read(addr, MAP_SIZE) == bytes(MAP_SIZE)
    assert st(c, "RssAnon") == 0                    # zero page reads
    assert p.read(addr, MAP_SIZE) == PATTERN
    assert st(p, "RssAnon") == 16
    assert pte_of(p, addr) & RW_BIT                 # parent's PTEs not write-protected
    assert writable(p, addr)                        # nor its PMD: the span is not shared


def test_wipeonfork_zero_length_does_nothing(m, p, fork_design):
    """LTP madvise10 case 2: MADV_WIPEONFORK with length 0 returns 0 and does nothing;
    the child sees the pattern (madvise.c: len == 0 -> 0). COW page tables: no WIPEONFORK
    VMA, so the table is shared (deferred: the child counts none of its pages)."""
    addr = _madvise10_setup(p, 0, MADV_NORMAL, MADV_WIPEONFORK)
    assert "wf" not in p.smaps()[0]["VmFlags"]
    ev0 = m.vmstat()
    c = p.fork()
    assert (m.vmstat() - ev0)["cow_pte_tables_shared"] == cow(fork_design, 0, 1)
    assert c.read(addr, MAP_SIZE) == PATTERN
    assert st(c, "RssAnon") == per_design(fork_design, 16, deferred=0)


def test_wipeonfork_grandchild(m, p):
    """LTP madvise10 case 3: the flag is inherited, so the grandchild is wiped too. Made
    stricter: the child writes its own data before forking, and the grandchild still
    reads zeros."""
    addr = _madvise10_setup(p, MAP_SIZE, MADV_NORMAL, MADV_WIPEONFORK)
    c = p.fork()
    g = c.fork()
    assert g.read(addr, MAP_SIZE) == bytes(MAP_SIZE)
    c.write(addr, b"child" * 10)
    g2 = c.fork()
    assert g2.read(addr, MAP_SIZE) == bytes(MAP_SIZE)
    assert st(g2, "RssAnon") == 0
    assert "wf" in g2.smaps()[0]["VmFlags"]
    assert c.read(addr, 5) == b"child"
    assert p.read(addr, MAP_SIZE) == PATTERN


def test_keeponfork_undoes_wipeonfork(m, p, fork_design):
    """LTP madvise10 case 4: MADV_KEEPONFORK undoes MADV_WIPEONFORK; the child keeps the
    pattern, shared COW with the parent. COW page tables: the VMA is no longer
    WIPEONFORK, so its table is shared; deferred takes no per-page reference at fork."""
    addr = _madvise10_setup(p, MAP_SIZE, MADV_WIPEONFORK, MADV_KEEPONFORK)
    assert "wf" not in p.smaps()[0]["VmFlags"]
    ev0 = m.vmstat()
    c = p.fork()
    assert (m.vmstat() - ev0)["cow_pte_tables_shared"] == cow(fork_design, 0, 1)
    assert c.read(addr, MAP_SIZE) == PATTERN
    assert st(c, "RssAnon") == per_design(fork_design, 16, deferred=0)
    assert int(m.phys.mapcount[pfn_of(p, addr)]) == per_design(fork_design, 2, deferred=1)
    assert pfn_of(c, addr) == pfn_of(p, addr)


# ------------------------------------------------------------------------------- C.26
def test_shared_anon_after_fork(m, p):
    """SCENARIOS C.26; memory.c:vma_needs_copy (shmem VMAs are not copied). The child starts
    with RssShmem 0 and no tables for the mapping; its write faults the same shmem page in
    writable (no COW), visible to the parent; Shmem and Mapped do not change."""
    s = p.mmap(0, 2 * PG, RW, SHARED)
    p.write(s, b"parent")
    p.write(s + PG, b"second")
    spfn = pfn_of(p, s)
    shm0, mapped0, anon0 = mi(m, "Shmem"), mi(m, "Mapped"), mi(m, "AnonPages")
    assert shm0 == 8 and mapped0 == 8
    ev0 = m.vmstat()
    c = p.fork()
    assert (m.vmstat() - ev0)["fork_ptes_copied"] == 0
    assert st(c, "RssShmem") == 0 and st(c, "VmRSS") == 0
    assert st(c, "VmPTE") == 0
    assert pte_of(p, s) & RW_BIT                  # not a COW mapping: P keeps RW
    assert writable(p, s)                         # nor shared at fork: the PMD keeps RW

    ev1 = m.vmstat()
    c.write(s, b"CHILD")
    d = m.vmstat() - ev1
    assert d["pgalloc"] == 0 and d["cow_fault"] == 0 and d["fault_file"] == 1
    assert pfn_of(c, s) == spfn
    assert p.read(s, 6) == b"CHILDt"
    assert st(c, "RssShmem") == 4 and st(c, "RssAnon") == 0
    assert st(p, "RssShmem") == 8
    assert mi(m, "Shmem") == shm0 and mi(m, "Mapped") == mapped0
    assert mi(m, "AnonPages") == anon0
    assert int(m.phys.mapcount[spfn]) == 2
    p.write(s + 3, b"P")
    assert c.read(s, 6) == b"CHIPDt"


# ------------------------------------------------------------------------------- C.27
def test_mlock_not_inherited(m, p, fork_design):
    """SCENARIOS C.27; mmap.c:dup_mmap vm_flags_clear(VM_LOCKED_MASK). Verified on Linux
    6.18: a MAP_LOCKED RW region is populated in the parent (VmLck 16 kB); the child has
    VmLck 0, its pages are still the parent's (COW-shared), and MADV_DONTNEED succeeds in
    the child while the parent gets EINVAL.

    COW page tables: the table is shared (deferred: the child counts none of its pages);
    the child's MADV_DONTNEED breaks it first (a private copy it then zaps), so the
    parent's table and pages are untouched."""
    a = p.mmap(0, 4 * PG, RW, PRIV | MAP_LOCKED)
    assert st(p, "VmLck") == 16
    assert st(p, "RssAnon") == 16                 # populated at mmap
    pfns = [pfn_of(p, a + i * PG) for i in range(4)]
    c = p.fork()
    assert st(c, "VmLck") == 0
    assert "lo" not in c.smaps()[0]["VmFlags"]
    assert "lo" in p.smaps()[0]["VmFlags"]
    assert st(c, "RssAnon") == per_design(fork_design, 16, deferred=0)
    assert pfn_of(c, a) == pfn_of(p, a)
    ev0 = m.vmstat()
    assert c.madvise(a, 4 * PG, MADV_DONTNEED) == 0
    d = m.vmstat() - ev0
    assert d["cow_pte_tables_duplicated"] == cow(fork_design, 0, 1)
    assert st(c, "RssAnon") == 0
    assert all(int(v) == 0 for v in c.pagemap(a, 4))
    assert [pfn_of(p, a + i * PG) for i in range(4)] == pfns
    for f in pfns:
        assert int(m.phys.refcount[f]) == 1 and int(m.phys.mapcount[f]) == 1
    with pytest.raises(mmemu.MMError) as exc:
        p.madvise(a, 4 * PG, MADV_DONTNEED)
    import errno
    assert exc.value.errno == errno.EINVAL
    assert st(p, "VmLck") == 16 and st(p, "RssAnon") == 16


# ------------------------------------------------------------------------------- C.28
def test_forked_target_vma_does_not_merge(m, p):
    """selftests merge.c:forked_target_vma; LTP vma01. In the child, after unCOWing every
    page, an adjacent compatible mmap does not merge with the forked VMA (its anon_vma
    chain is not singular). Verified on Linux 6.18 (/proc/self/maps in the child: two rw-p
    VMAs)."""
    carve = p.mmap(BASE, 30 * PG, PROT_NONE, PRIV | MAP_FIXED)
    ptr = p.mmap(carve + PG, 5 * PG, RW, PRIV | MAP_FIXED)
    p.write(ptr, b"x")
    c = p.fork()
    for i in range(5):
        c.write(ptr + i * PG, b"x")
    ptr2 = c.mmap(ptr + 5 * PG, 5 * PG, RW, PRIV | MAP_FIXED)
    assert ptr2 == ptr + 5 * PG
    assert vma_spans(c, carve, carve + 30 * PG) == [
        (carve, carve + PG), (ptr, ptr + 5 * PG), (ptr2, ptr2 + 5 * PG),
        (ptr2 + 5 * PG, carve + 30 * PG)]
    assert len(c.maps()) == 4


def test_parent_vma_still_merges_after_fork(m, p):
    """Contrast to merge.c:forked_target_vma. The parent's anon_vma chain stays singular
    after fork, so the parent's adjacent mmap does merge. Verified on Linux 6.18 (the
    parent's /proc/self/maps shows one 10-page rw-p VMA)."""
    carve = p.mmap(BASE, 30 * PG, PROT_NONE, PRIV | MAP_FIXED)
    ptr = p.mmap(carve + PG, 5 * PG, RW, PRIV | MAP_FIXED)
    p.write(ptr, b"x")
    c = p.fork()
    c.exit()
    p.mmap(ptr + 5 * PG, 5 * PG, RW, PRIV | MAP_FIXED)
    assert vma_spans(p, carve, carve + 30 * PG) == [
        (carve, carve + PG), (ptr, ptr + 10 * PG), (ptr + 10 * PG, carve + 30 * PG)]


def test_forked_source_vma_does_not_merge(m, p):
    """selftests merge.c:forked_source_vma. In the child, an adjacent incompatible (RWX)
    mapping is separate; mprotecting the forked VMA to RWX makes the flags equal, but the
    forked VMA still must not merge."""
    carve = p.mmap(BASE, 30 * PG, PROT_NONE, PRIV | MAP_FIXED)
    ptr = p.mmap(carve + PG, 5 * PG, RW, PRIV | MAP_FIXED | MAP_NORESERVE)
    p.write(ptr, b"x")
    c = p.fork()
    for i in range(5):
        c.write(ptr + i * PG, b"x")
    rwx = PROT_READ | PROT_WRITE | PROT_EXEC
    ptr2 = c.mmap(carve + 6 * PG, 5 * PG, rwx, PRIV | MAP_FIXED | MAP_NORESERVE)
    assert (ptr2, ptr2 + 5 * PG) in vma_spans(c)
    c.mprotect(ptr, 5 * PG, rwx)
    assert (ptr2, ptr2 + 5 * PG) in vma_spans(c)
    assert (ptr, ptr + 5 * PG) in vma_spans(c)


# ------------------------------------------------------------------- B.12 (smaps, hiwater)
def test_smaps_after_fork_and_partial_cow(m, p, fork_design):
    """SCENARIOS B.12 via smaps (task_mmu.c:smaps_account). Verified on Linux 6.18 with 8
    written pages: right after fork the child's VMA shows Rss 32, Pss 16, Shared_Dirty 32,
    Private_* 0 and Referenced 0 (child PTEs are pte_mkold); the parent shows Referenced 32.
    After the child COWs 3 pages, the parent's VMA shows Pss 22 (3*4 + 5*2), Private_Dirty
    12, Shared_Dirty 20.

    COW page tables: the child walks the parent's entries, so Rss is 32 and Referenced is
    the parent's (32). Eager took the per-page references (shared, Pss halved) as classic;
    deferred did not, so both sides look private (Pss 32, Private_Dirty 32) until a copy.
    The child's write breaks the table: deferred's copy takes the references, so from then
    on Pss/Shared_*/Private_* are classic's in both designs; the copied entries keep the
    parent's A bit, so the child's Referenced stays 32."""
    n = 8
    a = p.mmap(0, n * PG, RW, PRIV)
    p.touch(a, n * PG, write=True)
    c = p.fork()
    cs = [e for e in c.smaps() if e["start"] == a][0]
    assert (cs["Rss"], cs["Pss"], cs["Pss_Dirty"]) == per_design(
        fork_design, (32, 16, 16), deferred=(32, 32, 32))
    assert (cs["Shared_Clean"], cs["Shared_Dirty"]) == per_design(
        fork_design, (0, 32), deferred=(0, 0))
    assert (cs["Private_Clean"], cs["Private_Dirty"]) == per_design(
        fork_design, (0, 0), deferred=(0, 32))
    assert cs["Referenced"] == cow(fork_design, 0, 32)
    assert cs["Anonymous"] == 32
    ps = [e for e in p.smaps() if e["start"] == a][0]
    assert (ps["Rss"], ps["Pss"], ps["Shared_Dirty"], ps["Private_Dirty"]) == per_design(
        fork_design, (32, 16, 32, 0), deferred=(32, 32, 0, 32))
    assert ps["Referenced"] == 32

    c.touch(a, 3 * PG, write=True)
    ps = [e for e in p.smaps() if e["start"] == a][0]
    assert (ps["Rss"], ps["Pss"], ps["Pss_Dirty"]) == (32, 22, 22)
    assert (ps["Shared_Dirty"], ps["Private_Dirty"]) == (20, 12)
    cs = [e for e in c.smaps() if e["start"] == a][0]
    assert (cs["Rss"], cs["Pss"], cs["Shared_Dirty"], cs["Private_Dirty"]) == (32, 22, 20, 12)
    # classic: only the 3 new pages are young; COW: the copy kept the parent's A bits
    assert cs["Referenced"] == cow(fork_design, 12, 32)


def test_hiwater_after_fork(m, p, fork_design):
    """fork.c:dup_mm: child hiwater_rss = its RSS, hiwater_vm = its total_vm, whatever the
    parent's peaks were. Verified on Linux 6.18: after the parent touched and unmapped
    10 MiB, the child's VmHWM == VmRSS and VmPeak == VmSize while the parent's are higher.
    COW page tables, deferred: the child counts no RSS for the shared table, so its VmRSS
    and VmHWM are 0."""
    a = p.mmap(0, 64 * PG, RW, PRIV)
    p.touch(a, 64 * PG, write=True)
    p.munmap(a + 16 * PG, 48 * PG)
    assert (st(p, "VmHWM"), st(p, "VmRSS")) == (256, 64)
    assert (st(p, "VmPeak"), st(p, "VmSize")) == (256, 64)
    c = p.fork()
    assert (st(c, "VmHWM"), st(c, "VmRSS")) == per_design(fork_design, (64, 64), deferred=(0, 0))
    assert (st(c, "VmPeak"), st(c, "VmSize")) == (64, 64)
    assert (st(p, "VmHWM"), st(p, "VmPeak")) == (256, 256)


def test_madv_dontfork_shared_anon(m, p):
    """mmap.c:dup_mmap (VM_DONTCOPY) on a MAP_SHARED|MAP_ANONYMOUS mapping: the child has
    no VMA, so the shmem object has one user; when the parent exits it is freed
    (Shmem -> 0, all memory back)."""
    s = p.mmap(0, 2 * PG, RW, SHARED)
    p.write(s, b"s" * (2 * PG))
    p.madvise(s, 2 * PG, MADV_DONTFORK)
    c = p.fork()
    assert vma_spans(c) == []
    assert st(c, "VmSize") == 0
    with pytest.raises(mmemu.SegmentationFault) as exc:
        c.read(s, 1)
    assert exc.value.code == "SEGV_MAPERR"
    assert mi(m, "Shmem") == 8
    p.exit()
    assert mi(m, "Shmem") == 0 and mi(m, "Mapped") == 0
    c.exit()
    assert mi(m, "MemFree") == mi(m, "MemTotal") - 4


def test_locked_parent_child_cow(m, p, fork_design):
    """SCENARIOS C.27 follow-up: the child's VMA is no longer VM_LOCKED but its PTEs were
    copied (the populated VMA has an anon_vma) and write-protected, so a child write COWs
    (one new page) and the parent's locked page is unchanged.

    COW page tables: the table is shared and read-only through both PMDs (deferred keeps
    the parent's PTE RW); the child's write breaks it (a private copy), then COWs."""
    a = p.mmap(0, 2 * PG, RW, PRIV | MAP_LOCKED)
    p.write(a, b"L")
    c = p.fork()
    old = pfn_of(p, a)
    assert not writable(p, a) and not writable(c, a)
    assert bool(pte_of(p, a) & RW_BIT) == per_design(fork_design, False, deferred=True)
    assert bool(pmd_of(p, a) & RW_BIT) == cow(fork_design, True, False)
    ev0 = m.vmstat()
    c.write(a, b"c")
    d = m.vmstat() - ev0
    assert d["cow_fault"] == 1 and d["pgalloc"] == 1
    assert d["cow_pte_tables_duplicated"] == cow(fork_design, 0, 1)
    assert d["cow_pte_entries_copied"] == cow(fork_design, 0, 2)
    assert pfn_of(p, a) == old and pfn_of(c, a) != old
    assert p.read(a, 1) == b"L" and c.read(a, 1) == b"c"
    assert st(p, "VmLck") == 8 and st(c, "VmLck") == 0


def test_cow_semantics_every_design(m, p, fork_design):
    """COW-PTE CP5 (user-visible semantics equal classic fork) over the group-B/C outcomes:
    cow.c:test_cow_in_parent data isolation, child-writes-first, a P->C->G chain, DONTFORK
    (SEGV_MAPERR in the child), WIPEONFORK (zeros), shared anon (no COW), mlock not
    inherited, exit of every process returning all memory. Runs in every fork design."""
    a = p.mmap(BASE, 4 * PG, RW, PRIV | MAP_FIXED)
    p.write(a, b"\x01" * (4 * PG))
    d = p.mmap(BASE + GB, 2 * PG, RW, PRIV | MAP_FIXED)
    p.write(d, b"D" * (2 * PG))
    p.madvise(d, 2 * PG, MADV_DONTFORK)
    w = p.mmap(BASE + 2 * GB, 2 * PG, RW, PRIV | MAP_FIXED)
    p.write(w, b"W" * (2 * PG))
    p.madvise(w, 2 * PG, MADV_WIPEONFORK)
    s = p.mmap(BASE + 3 * GB, PG, RW, SHARED | MAP_FIXED)
    p.write(s, b"S")
    lk = p.mmap(BASE + 4 * GB, PG, RW, PRIV | MAP_FIXED | MAP_LOCKED)
    p.write(lk, b"L")

    c = p.fork()
    assert st(c, "VmSize") == st(p, "VmSize") - 8
    assert st(c, "VmLck") == 0 and st(p, "VmLck") == 4
    with pytest.raises(mmemu.SegmentationFault) as exc:
        c.read(d, 1)
    assert exc.value.code == "SEGV_MAPERR"
    assert c.read(w, 2 * PG) == bytes(2 * PG)
    assert p.read(w, 2) == b"WW"
    assert c.read(lk, 1) == b"L"

    p.write(a, b"\xff" * PG)                    # parent writes first: child keeps 1s
    assert c.read(a, PG) == b"\x01" * PG
    c.write(a + PG, b"c")                       # child writes first: parent keeps 1s
    assert p.read(a + PG, 2) == b"\x01\x01"
    p.write(a + PG, b"p")
    assert (p.read(a + PG, 2), c.read(a + PG, 2)) == (b"p\x01", b"c\x01")

    g = c.fork()
    for x, tag in ((g, b"G"), (p, b"P"), (c, b"C")):
        x.write(a + 2 * PG, tag)
    assert [x.read(a + 2 * PG, 2) for x in (p, c, g)] == [b"P\x01", b"C\x01", b"G\x01"]
    assert g.read(a, 1) == b"\x01" and g.read(w, 1) == b"\x00"

    c.write(s, b"c")                            # shared: visible everywhere, no COW
    assert p.read(s, 1) == b"c" and g.read(s, 1) == b"c"
    assert mi(m, "Shmem") == 4

    for x in (p, g, c):
        x.exit()
    assert mi(m, "MemFree") == mi(m, "MemTotal") - 4
    assert mi(m, "PageTables") == 0
    assert mi(m, "AnonPages") == 0 and mi(m, "Shmem") == 0
