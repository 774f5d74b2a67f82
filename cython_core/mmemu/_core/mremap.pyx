# cython: language_level=3
"""mremap's page-table mover (mm/mremap.c): move_page_tables, move_normal_pud,
move_normal_pmd, move_ptes, as a walk_page_range of the source range (pagewalk.pxd).

Entries keep their page, so refcount, mapcount, RSS, PageAnonExclusive and the dirty bit
are unchanged; only the PTE's place in the tree moves. A huge PMD moves whole where the
step covers its span and the destination entry is none (move_huge_pmd, by the same relink
as move_normal_pmd; its deposited table stays with the mm), else it is split first
(huge_memory.pyx). Leaves out: hugetlb leaves,
uffd-wp clearing, rmap locks. A dry run of the same walk counts the tables a move will
allocate, so a caller can refuse with ENOMEM before changing anything.
"""
from libc.stdint cimport int64_t, uint64_t

from mmemu._core.types cimport *
from mmemu._core.physmem cimport physmem_t, table_ptr
from mmemu._core.pagetable cimport mm_t, MMCore, pgtable_alloc, LEVEL_PTE, LEVEL_PMD, LEVEL_PUD
from mmemu._core.pgtable cimport (
    set_pte_at, ptep_get_and_clear, set_pmd_at, pmd_populate, pmd_clear, set_pud,
    pud_populate, pud_clear, pgd_populate,
)
from mmemu._core.huge_memory cimport split_huge_pmd
from mmemu._core.pagewalk cimport (
    mm_walk, mm_walk_ops, walk_page_range, ACTION_CONTINUE,
)
from mmemu._core.tlb cimport flush_tlb_mm_range


cdef struct move_state:
    bint dry                # count tables instead of changing anything
    int64_t need            # dry run: tables the move would allocate
    int64_t last[3]         # dry run: destination PGD/PUD/PMD slot last made present
    int64_t ptes            # entries moved by move_ptes
    int64_t pmds            # PTE tables relinked by move_normal_pmd
    int64_t puds            # PMD tables relinked by move_normal_pud
    mm_t* mm                # the mm whose tables move (for the TLB flushes)
    uint64_t old_end        # end of the source range
    uint64_t delta          # new_addr - old_addr
    uint64_t stopped        # source address where a table allocation failed (old_end: none)


cdef inline uint64_t get_extent(uint64_t size, uint64_t old_addr, uint64_t old_end,
                                uint64_t new_addr) noexcept nogil:
    """get_extent: bytes to the next size boundary of either side, at most old_end."""
    cdef uint64_t nxt = (old_addr + size) & ~(size - 1)
    cdef uint64_t extent = nxt - old_addr
    if extent > old_end - old_addr:
        extent = old_end - old_addr
    nxt = (new_addr + size) & ~(size - 1)
    if extent > nxt - new_addr:
        extent = nxt - new_addr
    return extent


cdef pte_t* alloc_new_pud(physmem_t* pm, mm_t* mm, uint64_t addr, move_state* st,
                          bint* fail) noexcept nogil:
    """alloc_new_pud: the destination PUD entry, allocating the PUD table.

    Dry run: counts the table instead and returns NULL for a table not yet real."""
    cdef pte_t* g = &table_ptr(pm, mm.pgd)[pgd_index(addr)]
    cdef int64_t key = <int64_t>(addr >> PGDIR_SHIFT)
    cdef pfn_t t
    if g[0] == 0:
        if st.dry:
            if st.last[0] != key:
                st.last[0] = key
                st.need += 1
            return NULL
        t = pgtable_alloc(pm, mm, LEVEL_PUD)
        if t < 0:
            fail[0] = True
            return NULL
        pgd_populate(pm, g, t)
    return &table_ptr(pm, pte_pfn(g[0]))[pud_index(addr)]


cdef inline bint dry_present(pte_t* e, move_state* st, int level, uint64_t addr, int shift) noexcept nogil:
    """Dry run: is the destination entry non-none, counting what the walk made present?"""
    if e != NULL and e[0] != 0:
        return True
    return st.last[level] == <int64_t>(addr >> shift)


cdef pte_t* alloc_new_pmd(physmem_t* pm, mm_t* mm, uint64_t addr, move_state* st,
                          bint* fail) noexcept nogil:
    """alloc_new_pmd: the destination PMD entry, allocating PUD and PMD tables."""
    cdef pte_t* pud = alloc_new_pud(pm, mm, addr, st, fail)
    cdef pfn_t t
    if st.dry:
        if not dry_present(pud, st, 1, addr, PUD_SHIFT):
            st.last[1] = <int64_t>(addr >> PUD_SHIFT)
            st.need += 1
            return NULL
        if pud == NULL or pud[0] == 0:
            return NULL
        return &table_ptr(pm, pte_pfn(pud[0]))[pmd_index(addr)]
    if pud == NULL:
        return NULL
    if pud[0] == 0:
        t = pgtable_alloc(pm, mm, LEVEL_PMD)
        if t < 0:
            fail[0] = True
            return NULL
        pud_populate(pm, pud, t)
    return &table_ptr(pm, pte_pfn(pud[0]))[pmd_index(addr)]


cdef inline bint _relink_ok(pte_t* new, uint64_t new_addr, move_state* st, int level,
                            int shift) noexcept nogil:
    """May a whole lower table move to entry new? (In a dry run: note that the destination
    slot needs no table of its own.)"""
    if st.dry:
        if dry_present(new, st, level, new_addr, shift):
            return False
        st.last[level] = <int64_t>(new_addr >> shift)
        return True
    return new[0] == 0


cdef bint move_normal_pud(physmem_t* pm, pte_t* old_pud, pte_t* new_pud, uint64_t new_addr,
                          move_state* st) noexcept nogil:
    """move_normal_pud: relink a whole PMD table to an empty destination PUD entry."""
    if not _relink_ok(new_pud, new_addr, st, 1, PUD_SHIFT):
        return False
    if not st.dry:
        set_pud(pm, new_pud, old_pud[0])
        pud_clear(pm, old_pud)
        st.puds += 1
        flush_tlb_mm_range(pm, st.mm, new_addr - st.delta, new_addr - st.delta + PUD_SIZE)
    return True


cdef bint move_normal_pmd(physmem_t* pm, pte_t* old_pmd, pte_t* new_pmd, uint64_t new_addr,
                          move_state* st) noexcept nogil:
    """move_normal_pmd: relink a whole PTE table to an empty destination PMD entry.

    The table frame, its pt_share and pt_owner are unchanged; no table is allocated or
    freed. Leaves out: the THP collapse race (pmd_leaf)."""
    if not _relink_ok(new_pmd, new_addr, st, 2, PMD_SHIFT):
        return False
    if not st.dry:
        set_pmd_at(pm, new_pmd, old_pmd[0])
        pmd_clear(pm, old_pmd)
        st.pmds += 1
        flush_tlb_mm_range(pm, st.mm, new_addr - st.delta, new_addr - st.delta + PMD_SIZE)
    return True


cdef void move_ptes(physmem_t* pm, pte_t* old_pmd, pte_t* new_pmd, uint64_t old_addr,
                    uint64_t new_addr, uint64_t extent, move_state* st) noexcept nogil:
    """move_ptes: move each non-none entry of [old_addr, old_addr+extent) as it is,
    setting soft-dirty on present ones (move_soft_dirty_pte). Leaves out: uffd-wp."""
    cdef pte_t* src = table_ptr(pm, pte_pfn(old_pmd[0]))
    cdef pte_t* dst = table_ptr(pm, pte_pfn(new_pmd[0]))
    cdef int i0 = pte_index(old_addr), j = pte_index(new_addr)
    cdef int n = <int>(extent >> PAGE_SHIFT), k
    cdef pte_t e
    cdef bint force_flush = False
    for k in range(n):
        if src[i0 + k] == 0:
            continue
        e = ptep_get_and_clear(pm, &src[i0 + k])
        if pte_present(e):
            e |= _bit(BIT_SOFT_DIRTY)
            force_flush = True
        set_pte_at(pm, &dst[j + k], e)
        st.ptes += 1
    if force_flush:             # flush_tlb_range(vma, old_end - len, old_end)
        flush_tlb_mm_range(pm, st.mm, old_addr, old_addr + extent)


cdef int move_pmd_steps(physmem_t* pm, mm_t* mm, pte_t* old_pmd, uint64_t addr,
                        uint64_t next, move_state* st) noexcept nogil:
    """move_page_tables' steps over [addr, next), the part of one source PMD span in the
    range (old_pmd NULL: its entry is none), cut where the destination crosses a PMD
    boundary: alloc_new_pud, then alloc_new_pmd and move_normal_pmd or move_ptes."""
    cdef uint64_t extent, new_addr
    cdef pte_t* new_pmd
    cdef pfn_t t
    cdef bint fail = False
    while addr < next:
        new_addr = addr + st.delta
        extent = get_extent(PMD_SIZE, addr, st.old_end, new_addr)
        alloc_new_pud(pm, mm, new_addr, st, &fail)
        if fail:
            st.stopped = addr
            return -1
        if old_pmd != NULL:
            new_pmd = alloc_new_pmd(pm, mm, new_addr, st, &fail)
            if fail:
                st.stopped = addr
                return -1
            if (pmd_leaf(old_pmd[0]) and not st.dry
                    and not (extent == PMD_SIZE and new_pmd[0] == 0)):
                split_huge_pmd(pm, mm, old_pmd)
            if extent == PMD_SIZE and move_normal_pmd(pm, old_pmd, new_pmd, new_addr, st):
                pass
            elif st.dry:
                if not dry_present(new_pmd, st, 2, new_addr, PMD_SHIFT):
                    st.last[2] = <int64_t>(new_addr >> PMD_SHIFT)
                    st.need += 1
            elif old_pmd[0] != 0:       # (a file PMD's split leaves nothing to move)
                if new_pmd[0] == 0:
                    t = pgtable_alloc(pm, mm, LEVEL_PTE)
                    if t < 0:
                        st.stopped = addr
                        return -1
                    pmd_populate(pm, new_pmd, t)
                move_ptes(pm, old_pmd, new_pmd, addr, new_addr, extent, st)
        addr += extent
    return 0


cdef int move_pud_entry(pte_t* old_pud, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil:
    """move_page_tables' PUD step (pud_entry): alloc_new_pud and move_normal_pud where the
    step covers a whole PUD span on both sides; otherwise the PMD steps below it."""
    cdef move_state* st = <move_state*>walk.private
    cdef uint64_t new_addr = addr + st.delta
    cdef pte_t* new_pud
    cdef bint fail = False
    if get_extent(PUD_SIZE, addr, st.old_end, new_addr) != PUD_SIZE:
        return 0
    new_pud = alloc_new_pud(walk.pm, walk.mm, new_addr, st, &fail)
    if fail:
        st.stopped = addr
        return -1
    if move_normal_pud(walk.pm, old_pud, new_pud, new_addr, st):
        walk.action = ACTION_CONTINUE
    return 0


cdef int move_pmd_entry(pte_t* old_pmd, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil:
    return move_pmd_steps(walk.pm, walk.mm, old_pmd, addr, next, <move_state*>walk.private)


cdef int move_pmd_hole(uint64_t addr, uint64_t next, int depth, mm_walk* walk) noexcept nogil:
    """A none source PMD entry under a present PUD entry: the steps still allocate the
    destination PUD table (alloc_new_pud comes before get_old_pmd)."""
    if depth != LEVEL_PMD:
        return 0
    return move_pmd_steps(walk.pm, walk.mm, NULL, addr, next, <move_state*>walk.private)


cdef mm_walk_ops move_walk_ops
move_walk_ops.pud_entry = move_pud_entry
move_walk_ops.pmd_entry = move_pmd_entry
move_walk_ops.pte_hole = move_pmd_hole


cdef int64_t move_page_tables(physmem_t* pm, mm_t* mm, uint64_t old_addr, uint64_t new_addr,
                              uint64_t old_end, move_state* st) noexcept nogil:
    """move_page_tables over [old_addr, old_end) to new_addr; returns the bytes done
    (less than the length only when a table allocation failed)."""
    st.old_end = old_end
    st.mm = mm
    st.delta = new_addr - old_addr
    st.stopped = old_end
    walk_page_range(pm, mm, old_addr, old_end, &move_walk_ops, st)
    if not st.dry:
        pm.ev[EV_PTES_MOVED] += st.ptes
        pm.ev[EV_PMDS_MOVED] += st.pmds
    return <int64_t>(st.stopped - old_addr) if st.stopped > old_addr else 0


cdef void _init(move_state* st, bint dry) noexcept nogil:
    st.dry = dry
    st.need = 0
    st.last[0] = st.last[1] = st.last[2] = -1
    st.ptes = st.pmds = st.puds = 0


def count_move_tables(MMCore mmc, uint64_t old_addr, uint64_t new_addr, uint64_t old_end):
    """Page tables move_page_tables(old_addr, new_addr, old_end) would allocate."""
    cdef move_state st
    _init(&st, True)
    with nogil:
        move_page_tables(&mmc.phys.pm, &mmc.mm, old_addr, new_addr, old_end, &st)
    return st.need


def move_range(MMCore mmc, uint64_t old_addr, uint64_t new_addr, uint64_t old_end):
    """move_page_tables: returns (bytes moved, ptes moved, PTE tables relinked, PMD tables relinked)."""
    cdef move_state st
    cdef int64_t done
    _init(&st, False)
    with nogil:
        done = move_page_tables(&mmc.phys.pm, &mmc.mm, old_addr, new_addr, old_end, &st)
    return done, st.ptes, st.pmds, st.puds
