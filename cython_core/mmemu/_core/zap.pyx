# cython: language_level=3
"""Removing and changing mappings: zap, change_protection, exit.

Models zap_page_range_single/unmap_page_range/zap_pte_range (with CONFIG_PT_RECLAIM's
reclaim of emptied PTE tables for MADV_DONTNEED), change_protection/change_pte_range
(mm/mprotect.c) and exit_mmap's teardown. Leaves out: swap entries, PTE markers, THP.
"""
from libc.stdint cimport uint8_t, uint32_t, int32_t, int64_t, uint64_t

from mmemu._core.types cimport *
from mmemu._core.physmem cimport physmem_t, table_ptr, reserve_frames, release_reserve
from mmemu._core.pagetable cimport (
    mm_t, vma_t, MMCore, zap_pte_entry, pgtable_free, free_pgd_range, free_all_tables,
    pmd_walk_next, pte_offset_alloc, tables_needed, vma_from_py, LEVEL_PTE,
)
from mmemu._core.cow_pte cimport assert_table_private


cdef int64_t zap_pte_range(physmem_t* pm, mm_t* mm, pte_t* pmd, uint64_t addr, uint64_t end,
                           bint reclaim, bint drop_markers) noexcept nogil:
    """zap_pte_range over [addr, end) inside one PMD span; returns entries cleared.

    Guard markers stay unless drop_markers (ZAP_FLAG_DROP_MARKER: munmap and exit); a
    table holding one is not empty, so PT reclaim keeps it."""
    cdef pte_t* t = table_ptr(pm, pte_pfn(pmd[0]))
    cdef int i, i0 = pte_index(addr), i1 = pte_index(end - 1) + 1
    cdef int64_t n = 0
    cdef pte_t e
    cdef pfn_t tp
    for i in range(i0, i1):
        e = t[i]
        if e == 0 or (is_guard_pte(e) and not drop_markers):
            continue
        assert_table_private(pm, &t[i])
        zap_pte_entry(pm, mm, e)
        t[i] = 0
        n += 1
    if reclaim and end - addr >= PMD_SIZE:
        # try_get_and_clear_pmd + free_pte: the whole span was zapped and is empty
        for i in range(512):
            if t[i] != 0:
                return n
        tp = pte_pfn(pmd[0])
        pmd[0] = 0
        pm.pt_share[tp] -= 1
        pgtable_free(pm, mm, tp, LEVEL_PTE)
    return n


cdef int64_t zap_page_range(physmem_t* pm, mm_t* mm, uint64_t start, uint64_t end,
                            bint reclaim, bint drop_markers) noexcept nogil:
    """unmap_page_range over [start, end) (one VMA or part of one)."""
    cdef uint64_t addr = start, nxt
    cdef pte_t* pmd
    cdef int64_t n = 0
    while True:
        pmd = pmd_walk_next(pm, mm, &addr, end)
        if pmd == NULL:
            break
        nxt = pmd_addr_end(addr, end)
        if pmd[0] != 0:
            n += zap_pte_range(pm, mm, pmd, addr, nxt, reclaim, drop_markers)
        addr = nxt
    pm.ev[EV_PTES_ZAPPED] += n
    if n:
        pm.ev[EV_TLB_FLUSH] += 1
    return n


cdef int64_t change_pte_range(physmem_t* pm, pte_t* t, int i0, int i1, pte_t newprot,
                              bint try_writable, bint shared) noexcept nogil:
    """change_pte_range: pte_modify each present entry; upgrade to RW where allowed."""
    cdef int i
    cdef pte_t e, ne
    cdef pfn_t pfn
    cdef uint32_t fl
    cdef int64_t n = 0
    for i in range(i0, i1):
        e = t[i]
        if e == 0 or not pte_present(e):
            continue
        ne = pte_modify(e, newprot)
        if try_writable and not pte_write(ne) and (ne & _bit(BIT_PRESENT)):
            # can_change_pte_writable
            if shared:
                if pte_dirty(ne):
                    ne = pte_mkwrite(ne)
            elif not pte_special(ne):
                pfn = pte_pfn(ne)
                fl = pm.flags[pfn]
                if (fl & PG_ANON) and (fl & PG_ANON_EXCLUSIVE):
                    ne = pte_mkwrite(ne)
        if ne != e:
            assert_table_private(pm, &t[i])
            t[i] = ne
            n += 1
    return n


cdef int64_t change_protection(physmem_t* pm, mm_t* mm, uint64_t start, uint64_t end,
                               pte_t newprot, bint try_writable, bint shared) noexcept nogil:
    cdef uint64_t addr = start, nxt
    cdef pte_t* pmd
    cdef int64_t n = 0
    while True:
        pmd = pmd_walk_next(pm, mm, &addr, end)
        if pmd == NULL:
            break
        nxt = pmd_addr_end(addr, end)
        if pmd[0] != 0:
            n += change_pte_range(pm, table_ptr(pm, pte_pfn(pmd[0])), pte_index(addr),
                                  pte_index(nxt - 1) + 1, newprot, try_writable, shared)
        addr = nxt
    pm.ev[EV_PTES_PROTECTED] += n
    if n:
        pm.ev[EV_TLB_FLUSH] += 1
    return n


def zap(MMCore mmc, uint64_t start, uint64_t end, bint reclaim_pt=False, bint drop_markers=False):
    """Zap [start, end); with reclaim_pt, free PTE tables emptied over a whole 2 MiB span;
    with drop_markers, guard markers go too (munmap)."""
    cdef int64_t n
    with nogil:
        n = zap_page_range(&mmc.phys.pm, &mmc.mm, start, end, reclaim_pt, drop_markers)
    return n


def guard_install(MMCore mmc, uint64_t start, uint64_t end):
    """madvise_guard_install's walk: a guard marker in every none PTE of [start, end)
    (allocating tables). Returns the markers set, or -1 (ENOMEM) with nothing changed if
    the tables it may need (counted per 2 MiB span, an upper bound) are not free. The
    range must already be zapped and private."""
    cdef physmem_t* pm = &mmc.phys.pm
    cdef uint64_t addr = start
    cdef int64_t need = 0, n = 0
    cdef pte_t* ptep
    with nogil:
        while addr < end:
            need += tables_needed(pm, &mmc.mm, addr)
            addr = pmd_addr_end(addr, end)
    if reserve_frames(pm, need) < 0:
        return -1
    addr = start
    with nogil:
        while addr < end:
            ptep = pte_offset_alloc(pm, &mmc.mm, addr, NULL)
            if ptep == NULL:
                n = -1
                break
            if ptep[0] == 0:
                assert_table_private(pm, ptep)
                ptep[0] = GUARD_PTE
                n += 1
            addr += PAGE_SIZE
        release_reserve(pm)
    if n < 0:       # the tables were reserved (an upper bound): cannot happen
        raise RuntimeError("guard_install ran out of reserved frames")
    return n


def guard_remove(MMCore mmc, uint64_t start, uint64_t end):
    """madvise_guard_remove's walk: clear the guard markers of [start, end)."""
    cdef physmem_t* pm = &mmc.phys.pm
    cdef uint64_t addr = start, nxt
    cdef pte_t* pmd
    cdef pte_t* t
    cdef int i
    cdef int64_t n = 0
    with nogil:
        while True:
            pmd = pmd_walk_next(pm, &mmc.mm, &addr, end)
            if pmd == NULL:
                break
            nxt = pmd_addr_end(addr, end)
            if pmd[0] != 0:
                t = table_ptr(pm, pte_pfn(pmd[0]))
                for i in range(pte_index(addr), pte_index(nxt - 1) + 1):
                    if is_guard_pte(t[i]):
                        assert_table_private(pm, &t[i])
                        t[i] = 0
                        n += 1
            addr = nxt
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
    for s, e in spans:
        with nogil:
            zap_page_range(&mmc.phys.pm, &mmc.mm, s, e, False, True)
    if mmc.mm.pgd >= 0:
        with nogil:
            free_all_tables(&mmc.phys.pm, &mmc.mm)
