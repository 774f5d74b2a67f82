# cython: language_level=3
"""Removing and changing mappings: zap, change_protection, guard markers, exit.

Models zap_page_range_single/unmap_page_range/zap_pte_range/zap_present_ptes/
zap_nonpresent_ptes (with CONFIG_PT_RECLAIM's reclaim of emptied PTE tables for
MADV_DONTNEED), change_protection/change_pte_range (mm/mprotect.c), the guard-region walks
of mm/madvise.c and exit_mmap's teardown, each as a walk_page_range (pagewalk.pxd).
A huge PMD (THP) is zapped or changed whole by huge_memory.pyx (zap_huge_pmd,
change_huge_pmd) when the range covers it, else split first (as zap_pmd_range and
change_pmd_range do). Leaves out: device-private and migration entries, uffd-wp.
"""
from libc.stdint cimport uint32_t, int64_t, uint64_t

from mmemu._core.types cimport *
from mmemu._core.physmem cimport physmem_t, table_ptr, put_page, swap_free, reserve_frames, release_reserve
from mmemu._core.pagetable cimport (
    mm_t, MMCore, pgtable_free, free_pgd_range, free_all_tables, LEVEL_PTE,
)
from mmemu._core.pgtable cimport set_pte_at, ptep_get_and_clear, pte_clear, pmd_clear
from mmemu._core.rmap cimport folio_remove_rmap_pte
from mmemu._core.pagewalk cimport mm_walk, mm_walk_ops, walk_page_range
from mmemu._core.huge_memory cimport split_huge_pmd, zap_huge_pmd, change_huge_pmd
from mmemu._core.tlb cimport (
    mmu_gather, tlb_gather_mmu, tlb_flush_pte_range, tlb_flush_pmd_range, tlb_finish_mmu,
)


cdef inline void zap_pte_entry(physmem_t* pm, mm_t* mm, pte_t e) noexcept nogil:
    """What zap_present_folio_ptes / zap_nonpresent_ptes do for one cleared entry: the
    rmap, rss and reference of a page (a dirty PTE dirties a file folio), or the slot of a
    swap entry."""
    cdef pfn_t pfn
    cdef uint32_t fl
    if is_swap_pte(e):
        swap_free(pm, swap_pte_slot(e))        # free_swap_and_cache
        mm.rss[MM_SWAPENTS] -= 1
        return
    if not pte_present(e):
        return
    pfn = pte_pfn(e)
    fl = pm.flags[pfn]
    if pte_special(e) or (fl & PG_ZERO):
        return
    if fl & PG_ANON:
        folio_remove_rmap_pte(pm, pfn, fl, mm.rss)
    else:
        if pte_dirty(e):
            pm.flags[pfn] = fl | PG_DIRTY
        folio_remove_rmap_pte(pm, pfn, fl, mm.rss)
    put_page(pm, pfn)


cdef struct zap_details:
    bint reclaim            # free a PTE table the zap emptied over its whole span
    bint drop_markers       # ZAP_FLAG_DROP_MARKER: guard markers go too (munmap, exit)
    int64_t zapped
    mmu_gather* tlb         # the range of present entries cleared (tlb_remove_tlb_entry)


cdef int zap_pte_range(pte_t* pmd, uint64_t addr, uint64_t end, mm_walk* walk) noexcept nogil:
    """zap_pte_range (pmd_entry) over [addr, end) inside one PMD span.

    Guard markers stay unless drop_markers; a table holding one is not empty, so PT
    reclaim keeps it."""
    cdef physmem_t* pm = walk.pm
    cdef zap_details* d = <zap_details*>walk.private
    cdef pte_t* t
    cdef int i, i0 = pte_index(addr), i1 = pte_index(end - 1) + 1
    cdef int64_t n = 0
    cdef pte_t e
    cdef pfn_t tp
    if pmd_leaf(pmd[0]):
        if end - addr == PMD_SIZE:
            zap_huge_pmd(pm, walk.mm, pmd)
            tlb_flush_pmd_range(d.tlb, addr, PMD_SIZE)     # tlb_remove_pmd_tlb_entry
            d.zapped += 1
            return 0
        split_huge_pmd(pm, walk.mm, pmd)
        if pmd[0] == 0:
            return 0        # a file PMD: the split dropped it, no PTE maps the range
    t = table_ptr(pm, pte_pfn(pmd[0]))
    for i in range(i0, i1):
        e = t[i]
        if e == 0 or (is_guard_pte(e) and not d.drop_markers):
            continue
        if pte_present(e):
            tlb_flush_pte_range(d.tlb, (addr & ~(PMD_SIZE - 1)) + (<uint64_t>i << PAGE_SHIFT), PAGE_SIZE)
        zap_pte_entry(pm, walk.mm, ptep_get_and_clear(pm, &t[i]))
        n += 1
    d.zapped += n
    if d.reclaim and end - addr >= PMD_SIZE:
        # try_get_and_clear_pmd + free_pte: the whole span was zapped and is empty
        for i in range(512):
            if t[i] != 0:
                return 0
        tp = pte_pfn(pmd[0])
        pmd_clear(pm, pmd)
        pm.pt_share[tp] -= 1
        pgtable_free(pm, walk.mm, tp, LEVEL_PTE)
    return 0


cdef mm_walk_ops zap_walk_ops
zap_walk_ops.pmd_entry = zap_pte_range


cdef int64_t zap_page_range(physmem_t* pm, mm_t* mm, uint64_t start, uint64_t end,
                            bint reclaim, bint drop_markers, mmu_gather* tlb) noexcept nogil:
    """unmap_page_range over [start, end) (one VMA or part of one), gathering into tlb."""
    cdef zap_details d
    d.reclaim = reclaim
    d.drop_markers = drop_markers
    d.zapped = 0
    d.tlb = tlb
    walk_page_range(pm, mm, start, end, &zap_walk_ops, &d)
    pm.ev[EV_PTES_ZAPPED] += d.zapped
    return d.zapped


cdef struct change_prot:
    pte_t newprot
    bint try_writable       # MM_CP_TRY_CHANGE_WRITABLE
    bint shared             # a shared mapping: dirty entries may become writable
    int64_t changed
    mmu_gather tlb          # entries whose change needs a flush (pte_needs_flush)


cdef inline bint pte_needs_flush(pte_t old, pte_t new) noexcept nogil:
    """x86 pte_needs_flush: a present entry whose PFN, RW, USER, PSE, GLOBAL or NX bit
    changed, or that lost its dirty or present bit (a lost accessed bit does not count)."""
    cdef pte_t diff = old ^ new
    if not (old & _bit(BIT_PRESENT)):
        return False
    if pte_pfn(old) != pte_pfn(new):
        return True
    if diff & (_bit(BIT_RW) | _bit(BIT_USER) | _bit(BIT_PSE) | _bit(BIT_PROTNONE) | _bit(BIT_NX)):
        return True
    return (diff & old & (_bit(BIT_DIRTY) | _bit(BIT_PRESENT))) != 0


cdef int change_pte_range(pte_t* pmd, uint64_t addr, uint64_t end, mm_walk* walk) noexcept nogil:
    """change_pte_range (pmd_entry): pte_modify each present entry; upgrade to RW where
    can_change_pte_writable allows."""
    cdef physmem_t* pm = walk.pm
    cdef change_prot* cp = <change_prot*>walk.private
    cdef pte_t* t
    cdef int i
    cdef pte_t e, ne
    cdef uint32_t fl
    cdef int64_t n = 0
    if pmd_leaf(pmd[0]):
        if end - addr == PMD_SIZE:
            e = pmd[0]
            if change_huge_pmd(pm, pmd, cp.newprot, cp.try_writable, cp.shared):
                cp.changed += 1
                if pte_needs_flush(e, pmd[0]):     # huge_pmd_needs_flush
                    tlb_flush_pmd_range(&cp.tlb, addr, PMD_SIZE)
            return 0
        split_huge_pmd(pm, walk.mm, pmd)
        if pmd[0] == 0:
            return 0        # a file PMD: the split dropped it
    t = table_ptr(pm, pte_pfn(pmd[0]))
    for i in range(pte_index(addr), pte_index(end - 1) + 1):
        e = t[i]
        if e == 0 or not pte_present(e):
            continue
        ne = pte_modify(e, cp.newprot)
        if cp.try_writable and not pte_write(ne) and (ne & _bit(BIT_PRESENT)):
            # can_change_pte_writable
            if cp.shared:
                if pte_dirty(ne):
                    ne = pte_mkwrite(ne)
            elif not pte_special(ne):
                fl = pm.flags[pte_pfn(ne)]
                if (fl & PG_ANON) and (fl & PG_ANON_EXCLUSIVE):
                    ne = pte_mkwrite(ne)
        if ne != e:
            set_pte_at(pm, &t[i], ne)
            n += 1
            if pte_needs_flush(e, ne):
                tlb_flush_pte_range(&cp.tlb, (addr & ~(PMD_SIZE - 1)) + (<uint64_t>i << PAGE_SHIFT), PAGE_SIZE)
    cp.changed += n
    return 0


cdef mm_walk_ops change_prot_ops
change_prot_ops.pmd_entry = change_pte_range


cdef int64_t change_protection(physmem_t* pm, mm_t* mm, uint64_t start, uint64_t end,
                               pte_t newprot, bint try_writable, bint shared) noexcept nogil:
    """change_protection over [start, end) with the new vm_page_prot."""
    cdef change_prot cp
    cp.newprot = newprot
    cp.try_writable = try_writable
    cp.shared = shared
    cp.changed = 0
    tlb_gather_mmu(&cp.tlb, False)
    walk_page_range(pm, mm, start, end, &change_prot_ops, &cp)
    tlb_finish_mmu(pm, mm, &cp.tlb)
    pm.ev[EV_PTES_PROTECTED] += cp.changed
    return cp.changed


def zap(MMCore mmc, uint64_t start, uint64_t end, bint reclaim_pt=False, bint drop_markers=False):
    """Zap [start, end); with reclaim_pt, free PTE tables emptied over a whole 2 MiB span;
    with drop_markers, guard markers go too (munmap)."""
    cdef int64_t n
    cdef mmu_gather tlb
    tlb_gather_mmu(&tlb, False)
    with nogil:
        n = zap_page_range(&mmc.phys.pm, &mmc.mm, start, end, reclaim_pt, drop_markers, &tlb)
        tlb_finish_mmu(&mmc.phys.pm, &mmc.mm, &tlb)
    return n


# ---- guard regions (madvise_guard_install / madvise_guard_remove) ----

cdef int guard_count_tables(uint64_t addr, uint64_t next, int depth, mm_walk* walk) noexcept nogil:
    """pte_hole of guard_install's dry run: the tables pte_alloc would need for each 2 MiB
    span of a hole, counted per span (an upper bound: 3 below a none PGD entry, 2 below a
    none PUD entry, 1 for a none PMD entry)."""
    cdef int64_t spans = <int64_t>(((next - 1) >> PMD_SHIFT) - (addr >> PMD_SHIFT)) + 1
    (<int64_t*>walk.private)[0] += spans * (depth - LEVEL_PTE)
    return 0


cdef int guard_install_pte(pte_t* pmd, uint64_t addr, uint64_t end, mm_walk* walk) noexcept nogil:
    """guard_install_pte_entry, inline per PMD: a guard marker in every none PTE."""
    cdef pte_t* t = table_ptr(walk.pm, pte_pfn(pmd[0]))
    cdef int i
    for i in range(pte_index(addr), pte_index(end - 1) + 1):
        if t[i] == 0:
            set_pte_at(walk.pm, &t[i], GUARD_PTE)
            (<int64_t*>walk.private)[0] += 1
    return 0


cdef int guard_remove_pte(pte_t* pmd, uint64_t addr, uint64_t end, mm_walk* walk) noexcept nogil:
    """guard_remove_pte_entry, inline per PMD: clear the guard markers."""
    cdef pte_t* t = table_ptr(walk.pm, pte_pfn(pmd[0]))
    cdef int i
    for i in range(pte_index(addr), pte_index(end - 1) + 1):
        if is_guard_pte(t[i]):
            pte_clear(walk.pm, &t[i])
            (<int64_t*>walk.private)[0] += 1
    return 0


cdef mm_walk_ops guard_count_ops
guard_count_ops.pte_hole = guard_count_tables
cdef mm_walk_ops guard_install_ops
guard_install_ops.pmd_entry = guard_install_pte
guard_install_ops.install = True
cdef mm_walk_ops guard_remove_ops
guard_remove_ops.pmd_entry = guard_remove_pte


def guard_install(MMCore mmc, uint64_t start, uint64_t end):
    """madvise_guard_install's walk: a guard marker in every none PTE of [start, end)
    (allocating tables). Returns the markers set, or -1 (ENOMEM) with nothing changed if
    the tables it may need (counted per 2 MiB span, an upper bound) are not free. The
    range must already be zapped and private."""
    cdef physmem_t* pm = &mmc.phys.pm
    cdef int64_t need = 0, n = 0
    cdef int rc
    with nogil:
        walk_page_range(pm, &mmc.mm, start, end, &guard_count_ops, &need)
    if reserve_frames(pm, need) < 0:
        return -1
    with nogil:
        rc = walk_page_range(pm, &mmc.mm, start, end, &guard_install_ops, &n)
        release_reserve(pm)
    if rc < 0:       # the tables were reserved (an upper bound): cannot happen
        raise RuntimeError("guard_install ran out of reserved frames")
    return n


def guard_remove(MMCore mmc, uint64_t start, uint64_t end):
    """madvise_guard_remove's walk: clear the guard markers of [start, end)."""
    cdef int64_t n = 0
    with nogil:
        walk_page_range(&mmc.phys.pm, &mmc.mm, start, end, &guard_remove_ops, &n)
    return n


def protect(MMCore mmc, uint64_t start, uint64_t end, pte_t newprot, bint try_writable, bint shared):
    """change_protection over [start, end) with the new vm_page_prot."""
    cdef int64_t n
    with nogil:
        n = change_protection(&mmc.phys.pm, &mmc.mm, start, end, newprot, try_writable, shared)
    return n


def free_pgtables(MMCore mmc, list batches):
    """free_pgtables: free_pgd_range(addr, end, floor, ceiling) for each batch tuple."""
    cdef uint64_t a, e, f, c
    for a, e, f, c in batches:
        with nogil:
            free_pgd_range(&mmc.phys.pm, &mmc.mm, a, e, f, c)


def exit_mmap(MMCore mmc, list spans):
    """exit_mmap: zap every VMA span, then free every table and the PGD."""
    cdef uint64_t s, e
    cdef mmu_gather tlb
    tlb_gather_mmu(&tlb, True)
    for s, e in spans:
        with nogil:
            zap_page_range(&mmc.phys.pm, &mmc.mm, s, e, False, True, &tlb)
    if mmc.mm.pgd >= 0:
        if mmc.mm.pgtables_bytes > 0:
            tlb.end = 1                 # free_pgtables: pte_free_tlb & co. gather the tables
        with nogil:
            tlb_finish_mmu(&mmc.phys.pm, &mmc.mm, &tlb)
            free_all_tables(&mmc.phys.pm, &mmc.mm)
