# cython: language_level=3
"""fork's page-table work: copy_page_range (classic) and copy_cow_pte_range (COW page table).

Models copy_page_range / copy_p4d_range / copy_pud_range / copy_pmd_range / copy_pte_range /
copy_present_ptes (mm/memory.c) for small folios, and the COW page table series'
copy_cow_pte_range (patch 02), which shares a PTE table instead of copying it, as a
walk_page_range of the source (pagewalk.pxd); with whole-table COW (cow_pgtable.pyx) the
same one or two levels up, a PMD or PUD table shared where no span under it is blocked and
no huge PMD lies under it. A huge PMD is copied by copy_huge_pmd (huge_memory.pyx) in every
design: the series shares PTE tables only. Leaves out: pinned pages (copy_present_page),
uffd-wp, device-private and migration entries.
"""
from libc.stdint cimport uint32_t, int64_t, uint64_t

from mmemu._core.types cimport *
from mmemu._core.physmem cimport physmem_t, table_ptr, swap_dup
from mmemu._core.pagetable cimport (
    mm_t, MMCore, pmd_offset_alloc, pgtable_alloc, LEVEL_PTE, LEVEL_PMD, LEVEL_PUD,
)
from mmemu._core.cow_pte cimport account_table_pages, cow_pte_adopt
from mmemu._core.tlb cimport flush_tlb_mm
from mmemu._core.pgtable cimport (
    set_pte_at, ptep_set_wrprotect, set_pmd_at, pmd_populate, pmdp_set_wrprotect, pgd_populate,
)
from mmemu._core.rmap cimport folio_dup_rmap_pte
from mmemu._core.pagewalk cimport (
    mm_walk, mm_walk_ops, walk_page_range, walk_entry_path, ACTION_CONTINUE,
)
from mmemu._core.huge_memory cimport copy_huge_pmd
from mmemu._core.cow_pgtable cimport (
    share_cow_table, wrprotect_ptes, COW_LEVEL_PMD, COW_LEVEL_PUD,
)

import numpy as np


cdef void copy_pte_range(physmem_t* pm, mm_t* dst_mm, pte_t* dst, pte_t* src,
                         int i0, int i1, uint64_t vm_flags, bint src_private) noexcept nogil:
    """copy_pte_range/copy_present_ptes over entries [i0, i1) of one PTE table.

    A COW-shared source table (src_private false) is read-only through its PMD already and
    must not be written: its entries are write-protected when it is next reused."""
    cdef int i
    cdef pte_t e
    cdef pfn_t pfn
    cdef bint cow = is_cow_mapping(vm_flags)
    cdef bint shared = (vm_flags & VM_SHARED) != 0
    cdef int64_t copied = 0, wrprotected = 0
    cdef int64_t rss[NR_MM_COUNTERS]
    cdef uint32_t* flags = pm.flags
    cdef pte_t RW = _bit(BIT_RW)
    cdef pte_t A = _bit(BIT_ACCESSED)
    cdef pte_t D = _bit(BIT_DIRTY)
    rss[0] = rss[1] = rss[2] = rss[3] = 0
    for i in range(i0, i1):
        e = src[i]
        if e == 0:
            continue
        copied += 1
        if not pte_present(e):
            if is_swap_pte(e):  # copy_nonpresent_pte: swap_duplicate + MM_SWAPENTS
                swap_dup(pm, swap_pte_slot(e))
                rss[MM_SWAPENTS] += 1
            set_pte_at(pm, &dst[i], e)
            continue
        if not (e & _bit(BIT_SPECIAL)):
            pfn = pte_pfn(e)
            folio_dup_rmap_pte(pm, pfn, flags[pfn], rss)
        if cow and (e & RW):
            e = e & ~RW
            if src_private:
                ptep_set_wrprotect(pm, &src[i])
                wrprotected += 1
        if shared:
            e = e & ~D
        set_pte_at(pm, &dst[i], e & ~A)
    for i in range(NR_MM_COUNTERS):
        dst_mm.rss[i] += rss[i]
    pm.ev[EV_FORK_PTES_COPIED] += copied
    pm.ev[EV_FORK_PTES_WRPROTECTED] += wrprotected


cdef inline bint _blocked(int64_t span, const int64_t* blocked, int64_t nblocked, int64_t* pos) noexcept nogil:
    """Is this PMD span in the sorted list of spans that may not be shared? (a moving cursor:
    spans are visited in increasing order within one call)"""
    while pos[0] < nblocked and blocked[pos[0]] < span:
        pos[0] += 1
    return pos[0] < nblocked and blocked[pos[0]] == span


cdef inline bint _blocked_upper(uint64_t addr, int shift, const int64_t* blocked, int64_t nblocked,
                                int64_t* pos) noexcept nogil:
    """Is any PMD span under the PUD (shift PUD_SHIFT) or PGD (PGDIR_SHIFT) entry of addr
    blocked? The whole table is shared only if none is (its own moving cursor)."""
    cdef int64_t lo = <int64_t>((addr >> shift) << (shift - PMD_SHIFT))
    while pos[0] < nblocked and blocked[pos[0]] < lo:
        pos[0] += 1
    return pos[0] < nblocked and blocked[pos[0]] < lo + (<int64_t>1 << (shift - PMD_SHIFT))


cdef bint holds_huge_pmd(physmem_t* pm, mm_t* mm, pte_t entry, int level) noexcept nogil:
    """Does the table under this PUD entry (level LEVEL_PMD: a PMD table) or PGD entry
    (LEVEL_PUD: a PUD table) of mm hold a huge PMD? Whole-table COW shares no such table: a
    huge PMD's deposited table and entire mapcount belong to one mm (copy_huge_pmd copies
    it; a file PMD is the child's to fault in). Every anonymous huge PMD has a deposited
    table and every file PMD is counted (m.check() counts both), so an mm without either
    has none and no table is read: the fork's cost does not grow with its size."""
    cdef pte_t* t = table_ptr(pm, pte_pfn(entry))
    cdef int i
    if mm.nr_deposited == 0 and mm.nr_file_pmds == 0:
        return False
    for i in range(512):
        if t[i] == 0:
            continue
        if level == LEVEL_PMD:
            if pmd_leaf(t[i]):
                return True
        elif holds_huge_pmd(pm, mm, t[i], LEVEL_PMD):
            return True
    return False


cdef void share_pte_table(physmem_t* pm, mm_t* src_mm, mm_t* dst_mm, pte_t* spmd, pte_t* dpmd,
                          bint src_private) noexcept nogil:
    """copy_cow_pte_range for one PMD slot: the child's PMD points at the parent's table,
    both PMDs lose RW (the parent's only if src_private: not under a shared upper table).
    Eager accounting takes the child's per-page references and rss now (and write-protects
    the entries while the table is still private); deferred takes none."""
    cdef pfn_t t = pte_pfn(spmd[0])
    cow_pte_adopt(pm, src_mm, t)        # v1/v2: a table nobody owns is the parent's again
    if pm.cow_eager:
        pm.ev[EV_FORK_PTES_ACCOUNTED] += account_table_pages(pm, dst_mm, t, 1)
        dst_mm.pgtables_bytes += 4096       # pmd_install: mm_inc_nr_ptes(child)
        if pm.pt_share[t] == 1 and src_private:
            wrprotect_ptes(pm, t)
    pm.pt_share[t] += 1
    if src_private:
        pmdp_set_wrprotect(pm, spmd)
    set_pmd_at(pm, dpmd, pte_wrprotect(mk_table_entry(t)))
    pm.ev[EV_PTE_TABLES_SHARED] += 1


cdef struct copy_walk:
    mm_t* dst_mm
    pte_t* dst_pmds         # the destination PMD table of the source PUD entry being copied
    uint64_t vm_flags
    int cow                 # COW_LEVEL_*: the highest level shared outside the blocked spans
    const int64_t* blocked  # sorted PMD spans (addr >> 21) that get a classic copy
    int64_t nblocked
    int64_t pos             # _blocked's cursor
    int64_t pos_pud         # _blocked_upper's cursors
    int64_t pos_pgd
    bint src_ro_pud         # the source PGD entry is read-only (a shared PUD table)
    bint src_ro             # ... or the source PUD entry is (a shared PMD table)


cdef int copy_pgd_entry(pte_t* spgd, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil:
    """copy_p4d_range's step (pgd_entry), whole-table COW only: share the PUD table where no
    span under it is blocked."""
    cdef copy_walk* c = <copy_walk*>walk.private
    cdef pte_t* path[3]
    c.src_ro_pud = not pte_write(spgd[0])
    if (_blocked_upper(addr, PGDIR_SHIFT, c.blocked, c.nblocked, &c.pos_pgd)
            or holds_huge_pmd(walk.pm, walk.mm, spgd[0], LEVEL_PUD)):
        return 0
    walk_entry_path(walk.pm, c.dst_mm, addr, path)
    if path[0][0] == 0:         # shared once, however many VMAs lie under it
        share_cow_table(walk.pm, c.dst_mm, spgd, path[0], LEVEL_PUD, True)
    walk.action = ACTION_CONTINUE
    return 0


cdef int copy_pud_entry(pte_t* spud, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil:
    """copy_pud_range's pud_alloc + copy_pmd_range's pmd_alloc (pud_entry): for every
    source PUD entry present, even where no PTE table hangs below (found by mmemu.oracle).
    With whole-table COW the PMD table is shared instead where no span under it is blocked."""
    cdef copy_walk* c = <copy_walk*>walk.private
    cdef pte_t* path[3]
    cdef pte_t* dpmd
    cdef pfn_t t
    c.src_ro = c.src_ro_pud or not pte_write(spud[0])
    if (c.cow >= COW_LEVEL_PMD
            and not _blocked_upper(addr, PUD_SHIFT, c.blocked, c.nblocked, &c.pos_pud)
            and not holds_huge_pmd(walk.pm, walk.mm, spud[0], LEVEL_PMD)):
        walk_entry_path(walk.pm, c.dst_mm, addr, path)
        if path[0][0] == 0:
            t = pgtable_alloc(walk.pm, c.dst_mm, LEVEL_PUD)
            if t < 0:
                return -1
            pgd_populate(walk.pm, path[0], t)
            walk_entry_path(walk.pm, c.dst_mm, addr, path)
        if path[1][0] == 0:
            share_cow_table(walk.pm, c.dst_mm, spud, path[1], LEVEL_PMD, not c.src_ro_pud)
        walk.action = ACTION_CONTINUE
        return 0
    dpmd = pmd_offset_alloc(walk.pm, c.dst_mm, addr)
    if dpmd == NULL:
        return -1
    c.dst_pmds = dpmd - pmd_index(addr)
    return 0


cdef int copy_pmd_entry(pte_t* spmd, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil:
    """copy_pmd_range's step for one source PMD entry (pmd_entry): share its PTE table
    (copy_cow_pte_range) or copy it (copy_pte_range)."""
    cdef copy_walk* c = <copy_walk*>walk.private
    cdef physmem_t* pm = walk.pm
    cdef pte_t* dpmd = &c.dst_pmds[pmd_index(addr)]
    cdef pfn_t t
    if pmd_leaf(spmd[0]):
        return copy_huge_pmd(pm, c.dst_mm, dpmd, spmd)
    if c.cow and not _blocked(<int64_t>(addr >> PMD_SHIFT), c.blocked, c.nblocked, &c.pos):
        if dpmd[0] == 0:        # shared once, however many VMAs cover the span
            share_pte_table(pm, walk.mm, c.dst_mm, spmd, dpmd, not c.src_ro)
        return 0
    # copy_pte_range allocates the destination table before looking at entries
    if dpmd[0] == 0:
        t = pgtable_alloc(pm, c.dst_mm, LEVEL_PTE)
        if t < 0:
            return -1
        pmd_populate(pm, dpmd, t)
        pm.ev[EV_FORK_PTE_TABLES_COPIED] += 1
    copy_pte_range(pm, c.dst_mm, table_ptr(pm, pte_pfn(dpmd[0])), table_ptr(pm, pte_pfn(spmd[0])),
                   pte_index(addr), pte_index(next - 1) + 1, c.vm_flags,
                   (spmd[0] & _bit(BIT_RW)) != 0 and not c.src_ro)
    return 0


cdef mm_walk_ops copy_walk_ops
copy_walk_ops.pud_entry = copy_pud_entry
copy_walk_ops.pmd_entry = copy_pmd_entry

cdef mm_walk_ops copy_pud_walk_ops     # whole-table COW at the PUD level: from the PGD entries
copy_pud_walk_ops.pgd_entry = copy_pgd_entry
copy_pud_walk_ops.pud_entry = copy_pud_entry
copy_pud_walk_ops.pmd_entry = copy_pmd_entry


cdef int copy_page_range(physmem_t* pm, mm_t* dst_mm, mm_t* src_mm, uint64_t start, uint64_t end,
                         uint64_t vm_flags, int cow, const int64_t* blocked, int64_t nblocked) noexcept nogil:
    """copy_page_range for one VMA span: a destination table wherever the source has one;
    0, or -1 if a table could not be allocated.

    With cow (COW_LEVEL_*), PMD spans not listed in `blocked` share the source PTE table
    instead, and at COW_LEVEL_PMD / PUD whole PMD / PUD tables with no blocked span under
    them are shared."""
    cdef copy_walk c
    c.dst_mm = dst_mm
    c.dst_pmds = NULL
    c.vm_flags = vm_flags
    c.cow = cow
    c.blocked = blocked
    c.nblocked = nblocked
    c.pos = c.pos_pud = c.pos_pgd = 0
    c.src_ro_pud = c.src_ro = False
    return walk_page_range(pm, src_mm, start, end,
                           &copy_pud_walk_ops if cow >= COW_LEVEL_PUD else &copy_walk_ops, &c)


cdef struct count_walk:
    int64_t* last           # destination PGD/PUD/PMD slot last counted (addr >> shift)
    int cow                 # COW_LEVEL_*
    const int64_t* blocked
    int64_t nblocked
    int64_t pos
    int64_t pos_pud
    int64_t pos_pgd
    int64_t n


cdef inline void _count_slot(count_walk* c, int level, int64_t key) noexcept nogil:
    if key != c.last[level]:
        c.last[level] = key
        c.n += 1


cdef int count_pgd_entry(pte_t* e, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil:
    """A source PGD entry present: the copy needs the destination's PUD table (none if the
    PUD table is shared)."""
    cdef count_walk* c = <count_walk*>walk.private
    if (c.cow >= COW_LEVEL_PUD
            and not _blocked_upper(addr, PGDIR_SHIFT, c.blocked, c.nblocked, &c.pos_pgd)
            and not holds_huge_pmd(walk.pm, walk.mm, e[0], LEVEL_PUD)):
        walk.action = ACTION_CONTINUE
        return 0
    _count_slot(c, 0, <int64_t>(addr >> PGDIR_SHIFT))
    return 0


cdef int count_pud_entry(pte_t* e, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil:
    """A source PUD entry present: the copy needs the destination's PMD table (none if the
    PMD table is shared)."""
    cdef count_walk* c = <count_walk*>walk.private
    if (c.cow >= COW_LEVEL_PMD
            and not _blocked_upper(addr, PUD_SHIFT, c.blocked, c.nblocked, &c.pos_pud)
            and not holds_huge_pmd(walk.pm, walk.mm, e[0], LEVEL_PMD)):
        walk.action = ACTION_CONTINUE
        return 0
    _count_slot(c, 1, <int64_t>(addr >> PUD_SHIFT))
    return 0


cdef int count_pmd_entry(pte_t* e, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil:
    """A source PTE table: the copy needs one of its own unless the span is shared; a huge
    PMD: the child's deposited table."""
    cdef count_walk* c = <count_walk*>walk.private
    if pmd_leaf(e[0]) or not c.cow or _blocked(<int64_t>(addr >> PMD_SHIFT), c.blocked, c.nblocked, &c.pos):
        _count_slot(c, 2, <int64_t>(addr >> PMD_SHIFT))
    return 0


cdef mm_walk_ops count_walk_ops
count_walk_ops.pgd_entry = count_pgd_entry
count_walk_ops.pud_entry = count_pud_entry
count_walk_ops.pmd_entry = count_pmd_entry


cdef int64_t count_range_tables(physmem_t* pm, mm_t* src_mm, uint64_t start, uint64_t end,
                                int64_t* last, int cow, const int64_t* blocked,
                                int64_t nblocked) noexcept nogil:
    """Tables a copy of [start, end) allocates, skipping slots already counted (last[0..2]).
    With cow, only blocked spans need a PTE table of their own (and, at COW_LEVEL_PMD /
    PUD, only PUD / PGD entries with a blocked span under them a PMD / PUD table)."""
    cdef count_walk c
    c.last = last
    c.cow = cow
    c.blocked = blocked
    c.nblocked = nblocked
    c.pos = c.pos_pud = c.pos_pgd = 0
    c.n = 0
    walk_page_range(pm, src_mm, start, end, &count_walk_ops, &c)
    return c.n


cdef const int64_t* _blocked_ptr(object blocked, int64_t* n) except? NULL:
    cdef const int64_t[::1] b
    n[0] = 0
    if blocked is None or len(blocked) == 0:
        return NULL
    b = blocked
    n[0] = b.shape[0]
    return &b[0]


def count_fork_tables(MMCore src, list ranges, int cow=0, object blocked=None):
    """Page tables a fork allocates for the sorted (start, end) spans (PGD excluded).

    With cow (a COW_LEVEL_*: 1 or True shares PTE tables, 2 PMD tables, 3 PUD tables), PTE
    tables are needed only in the PMD spans listed in `blocked` (a sorted int64 array of
    addr >> 21), which fall back to a classic copy, and upper tables only above them."""
    cdef int64_t last[3]
    cdef int64_t n = 0, nb
    cdef uint64_t s, e
    cdef const int64_t* bp
    blocked = None if blocked is None else np.ascontiguousarray(blocked, dtype=np.int64)
    bp = _blocked_ptr(blocked, &nb)
    last[0] = last[1] = last[2] = -1
    for s, e in ranges:
        n += count_range_tables(&src.phys.pm, &src.mm, s, e, last, cow, bp, nb)
    return n


def fork_copy_ranges(MMCore dst, MMCore src, list spans, int cow=0, object blocked=None):
    """copy_page_range for each (start, end, vm_flags) span; 0 or -1 (ENOMEM).

    With cow (COW_LEVEL_*), PMD spans not in `blocked` share the parent's PTE table, and
    at levels 2 / 3 PUD / PGD entries with no blocked span under them the parent's PMD /
    PUD table."""
    cdef uint64_t s, e, f
    cdef int rc = 0
    cdef int64_t nb
    cdef const int64_t* bp
    cdef physmem_t* pm = &src.phys.pm
    blocked = None if blocked is None else np.ascontiguousarray(blocked, dtype=np.int64)
    bp = _blocked_ptr(blocked, &nb)
    for s, e, f in spans:
        with nogil:
            rc = copy_page_range(pm, &dst.mm, &src.mm, s, e, f, cow, bp, nb)
        if rc:
            return rc
    flush_tlb_mm(pm, &src.mm)       # dup_mmap: flush_tlb_mm(oldmm), the parent's write-protect
    return 0
