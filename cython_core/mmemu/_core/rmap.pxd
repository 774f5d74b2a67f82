"""The rmap and page-cache accounting: the one place where a page's mapcount, refcount and
PageAnonExclusive, the NR_ANON_MAPPED / NR_FILE_MAPPED / NR_FILE_PAGES / NR_SHMEM node
counters and an mm's rss change when a page is mapped, duplicated at fork, unmapped, or
enters or leaves a page cache.

Models mm/rmap.c (folio_add_new_anon_rmap, folio_add_file_rmap_pte,
folio_try_dup_anon_rmap_pte / folio_dup_file_rmap_pte, folio_remove_rmap_pte, and for
order-9 folios the _pmd variants (anonymous and file) and folio_add_anon_rmap_ptes), the
page flags they keep (SetPageAnonExclusive), mm/filemap.c (filemap_add_folio and its
order-9 case, filemap_remove_folio), mm/shmem.c (shmem_alloc_and_add_folio) and the mm
counters the callers pair with them (mm_counter, add_mm_counter). Leaves out: the reverse
walk itself (anon_vma and i_mmap trees: reclaim will add it), large folios of orders other
than 0 and 9, lruvec and memcg statistics, pinned pages (the dup never fails).

A THP folio (PG_HEAD + 511 PG_TAIL frames) keeps, as Linux does, one refcount on its head
(every PMD and every PTE mapping holds one), a PTE mapcount per page (mapcount[pfn]) and
the entire (PMD) mapcount in its head's pt_share (folio->_entire_mapcount: pt_share means
something only for page tables); NR_ANON_MAPPED counts the pages mapped either way,
NR_ANON_THPS the folios mapped by a PMD. A PMD-sized page-cache folio is the same shape:
the cache holds one reference on its head (its 512 indexes name its 512 pages), and
NR_FILE_THPS / NR_FILE_PMDMAPPED (NR_SHMEM_THPS / NR_SHMEM_PMDMAPPED for a shmem folio,
PG_SWAPBACKED) count it in a cache / mapped by a PMD.

`rss` is the counter array to charge: an mm_t's rss, or a batch the caller adds to the mm
afterwards (copy_pte_range's rss[], as Linux's add_mm_rss_vec).
"""
from libc.stdint cimport uint32_t, int64_t
from libc.stdio cimport fprintf, stderr
from libc.stdlib cimport abort

from mmemu._core.types cimport (
    pfn_t, MMEMU_DEBUG_BUILD, PG_ANON, PG_ANON_EXCLUSIVE, PG_FILE, PG_SWAPBACKED, PG_DIRTY,
    PG_COMPOUND, PG_PARTIALLY_MAPPED, MM_ANONPAGES, MM_FILEPAGES, MM_SHMEMPAGES,
    HPAGE_PMD_NR, EV_THP_DEFERRED_SPLIT_PAGE, compound_head,
)
from mmemu._core.physmem cimport physmem_t, alloc_frame, put_page
from mmemu._core.filemap cimport xarray_t, xa_store


cdef inline int mm_counter(uint32_t fl) noexcept nogil:
    """mm_counter: the rss counter a page counts in (MM_ANONPAGES, MM_SHMEMPAGES or
    MM_FILEPAGES), from its flags."""
    if fl & PG_ANON:
        return MM_ANONPAGES
    if fl & PG_SWAPBACKED:
        return MM_SHMEMPAGES
    return MM_FILEPAGES


cdef inline void folio_get(physmem_t* pm, pfn_t pfn) noexcept nogil:
    """folio_get: one more reference (put_page drops it); a THP's is its head's."""
    if pm.flags[pfn] & PG_COMPOUND:
        pfn = compound_head(pfn)
    pm.refcount[pfn] += 1


cdef inline void folio_mark_dirty(physmem_t* pm, pfn_t pfn) noexcept nogil:
    """folio_mark_dirty: the folio of a page-cache page is dirty (every page of a large
    folio: mmemu keeps PG_DIRTY per frame, Linux per folio)."""
    cdef int64_t i
    if pm.flags[pfn] & PG_COMPOUND:
        pfn = compound_head(pfn)
        for i in range(HPAGE_PMD_NR):
            pm.flags[pfn + i] |= PG_DIRTY
    else:
        pm.flags[pfn] |= PG_DIRTY


cdef inline void SetPageAnonExclusive(physmem_t* pm, pfn_t pfn) noexcept nogil:
    """SetPageAnonExclusive: only this PTE maps the anonymous page (do_wp_page's reuse)."""
    pm.flags[pfn] |= PG_ANON_EXCLUSIVE


cdef inline void folio_add_new_anon_rmap(physmem_t* pm, pfn_t pfn, int64_t* rss,
                                         bint exclusive) noexcept nogil:
    """folio_add_new_anon_rmap (RMAP_EXCLUSIVE if exclusive) + rss[MM_ANONPAGES]++: a page
    no mm maps yet becomes anonymous, mapped once."""
    pm.flags[pfn] |= PG_ANON | (PG_ANON_EXCLUSIVE if exclusive else 0)
    pm.mapcount[pfn] = 1
    pm.nr_anon_mapped += 1
    rss[MM_ANONPAGES] += 1


cdef inline void folio_add_file_rmap_pte(physmem_t* pm, pfn_t pfn, int64_t* rss) noexcept nogil:
    """folio_add_file_rmap_pte + rss[mm_counter_file]++: one more PTE maps a page-cache
    page; the first counts it in NR_FILE_MAPPED. The caller holds a reference (folio_get)."""
    pm.mapcount[pfn] += 1
    if pm.mapcount[pfn] == 1 and not (
            (pm.flags[pfn] & PG_COMPOUND) and pm.pt_share[compound_head(pfn)] > 0):
        pm.nr_file_mapped += 1      # (a page of a large folio a PMD maps counts already)
    rss[mm_counter(pm.flags[pfn])] += 1


cdef inline void folio_dup_rmap_pte(physmem_t* pm, pfn_t pfn, uint32_t fl, int64_t* rss) noexcept nogil:
    """copy_present_ptes' part for one normal page (flags fl) another PTE maps already:
    folio_get, then folio_try_dup_anon_rmap_pte (the anonymous page is no longer
    exclusive) or folio_dup_file_rmap_pte, and rss[mm_counter]++."""
    if MMEMU_DEBUG_BUILD and pm.mapcount[pfn] < 1:
        fprintf(stderr, b"mmemu: folio_dup_rmap_pte: frame %lld is not mapped\n", <long long>pfn)
        abort()
    pm.mapcount[pfn] += 1
    # two stores, not one to a slot computed from fl: fork's loop over PTEs runs ~15% faster
    if fl & PG_COMPOUND:
        pm.refcount[compound_head(pfn)] += 1
    else:
        pm.refcount[pfn] += 1
    if fl & PG_ANON:
        pm.flags[pfn] = fl & ~PG_ANON_EXCLUSIVE
        rss[MM_ANONPAGES] += 1
    elif fl & PG_SWAPBACKED:
        rss[MM_SHMEMPAGES] += 1
    else:
        rss[MM_FILEPAGES] += 1


cdef inline void folio_remove_rmap_pte(physmem_t* pm, pfn_t pfn, uint32_t fl, int64_t* rss) noexcept nogil:
    """folio_remove_rmap_pte + rss[mm_counter]--: one PTE fewer maps the page (flags fl);
    the last one counts it out of NR_ANON_MAPPED / NR_FILE_MAPPED. The caller then drops
    the PTE's reference (put_page)."""
    pm.mapcount[pfn] -= 1
    rss[mm_counter(fl)] -= 1
    if pm.mapcount[pfn] == 0 and fl & PG_COMPOUND:
        _thp_page_unmapped(pm, compound_head(pfn))
    elif pm.mapcount[pfn] == 0:
        if fl & PG_ANON:
            pm.nr_anon_mapped -= 1
        else:
            pm.nr_file_mapped -= 1


# ---- THP folios (order 9, anonymous) ----

cdef inline int64_t folio_nr_pages_mapped(physmem_t* pm, pfn_t head) noexcept nogil:
    """folio->_nr_pages_mapped: pages of the folio some PTE maps (a scan of 512)."""
    cdef int64_t i, n = 0
    for i in range(HPAGE_PMD_NR):
        n += pm.mapcount[head + i] > 0
    return n


cdef inline void deferred_split_folio(physmem_t* pm, pfn_t head) noexcept nogil:
    """deferred_split_folio(partially_mapped): the first time a THP becomes partially
    mapped it is queued for a split (thp_deferred_split_page). The queue's shrinker is left
    out: the folio stays whole until its last reference goes."""
    if not (pm.flags[head] & PG_PARTIALLY_MAPPED):
        pm.flags[head] |= PG_PARTIALLY_MAPPED
        pm.ev[EV_THP_DEFERRED_SPLIT_PAGE] += 1


cdef inline void _thp_page_unmapped(physmem_t* pm, pfn_t head) noexcept nogil:
    """__folio_remove_rmap(RMAP_LEVEL_PTE)'s accounting when a page of a THP loses its last
    PTE: it leaves NR_ANON_MAPPED (NR_FILE_MAPPED for a page-cache folio) unless a PMD
    still maps the folio; an anonymous folio still mapped (the caller still holds this
    PTE's reference) becomes partially mapped."""
    if pm.pt_share[head] != 0:
        return
    if not (pm.flags[head] & PG_ANON):
        pm.nr_file_mapped -= 1
        return
    pm.nr_anon_mapped -= 1
    if pm.refcount[head] > 1:
        deferred_split_folio(pm, head)


cdef inline void folio_add_new_anon_rmap_pmd(physmem_t* pm, pfn_t head, int64_t* rss,
                                             bint exclusive) noexcept nogil:
    """folio_add_new_anon_rmap (RMAP_EXCLUSIVE if exclusive) for a new THP folio mapped by
    one PMD (its one reference is that PMD's) + add_mm_counter(MM_ANONPAGES, 512). Only the
    head carries PageAnonExclusive, as in Linux."""
    cdef int64_t i
    for i in range(HPAGE_PMD_NR):
        pm.flags[head + i] |= PG_ANON
    if exclusive:
        pm.flags[head] |= PG_ANON_EXCLUSIVE
    pm.pt_share[head] = 1
    pm.nr_anon_mapped += HPAGE_PMD_NR
    pm.nr_anon_thps += 1
    rss[MM_ANONPAGES] += HPAGE_PMD_NR


cdef inline void folio_dup_rmap_pmd(physmem_t* pm, pfn_t head, int64_t* rss) noexcept nogil:
    """copy_huge_pmd's folio_get + folio_try_dup_anon_rmap_pmd (the folio is no longer
    exclusive) + add_mm_counter(MM_ANONPAGES, 512) for the child."""
    pm.refcount[head] += 1
    pm.pt_share[head] += 1
    pm.flags[head] &= ~PG_ANON_EXCLUSIVE
    rss[MM_ANONPAGES] += HPAGE_PMD_NR


cdef inline void folio_add_file_rmap_pmd(physmem_t* pm, pfn_t head, int64_t* rss) noexcept nogil:
    """do_set_pmd's reference (the lookup's, which the PMD keeps) + folio_add_file_rmap_pmd
    + add_mm_counter(mm_counter_file, 512): one more PMD maps a PMD-sized page-cache folio.
    The first one counts it in NR_FILE_PMDMAPPED and its pages no PTE maps yet in
    NR_FILE_MAPPED."""
    pm.refcount[head] += 1
    pm.pt_share[head] += 1
    if pm.pt_share[head] == 1:
        if pm.flags[head] & PG_SWAPBACKED:
            pm.nr_shmem_pmdmapped += 1
        else:
            pm.nr_file_pmdmapped += 1
        # the cache's reference and this PMD's alone: no PTE maps a page, no scan
        pm.nr_file_mapped += HPAGE_PMD_NR - (
            0 if pm.refcount[head] == 2 else folio_nr_pages_mapped(pm, head))
    rss[mm_counter(pm.flags[head])] += HPAGE_PMD_NR


cdef inline void _file_pmd_unmapped(physmem_t* pm, pfn_t head, int64_t* rss) noexcept nogil:
    """folio_remove_rmap_pmd's accounting for a page-cache folio (its entire mapcount
    already dropped): the last PMD takes it out of NR_FILE_PMDMAPPED and its pages no PTE
    maps out of NR_FILE_MAPPED. No deferred split (anonymous folios only)."""
    rss[mm_counter(pm.flags[head])] -= HPAGE_PMD_NR
    if pm.pt_share[head] == 0:
        if pm.flags[head] & PG_SWAPBACKED:
            pm.nr_shmem_pmdmapped -= 1
        else:
            pm.nr_file_pmdmapped -= 1
        # the cache's reference and this PMD's alone: no PTE maps a page, no scan
        pm.nr_file_mapped -= HPAGE_PMD_NR - (
            0 if pm.refcount[head] == 2 else folio_nr_pages_mapped(pm, head))


cdef inline void folio_remove_rmap_pmd(physmem_t* pm, pfn_t head, int64_t* rss) noexcept nogil:
    """folio_remove_rmap_pmd + add_mm_counter(mm_counter, -512): one PMD fewer maps the
    folio (a page-cache folio: _file_pmd_unmapped). The last one takes it out of NR_ANON_THPS and its pages no PTE maps out of
    NR_ANON_MAPPED; if some PTEs still map pages, it becomes partially mapped. The caller
    then drops the PMD's reference (put_page)."""
    cdef int64_t nr
    pm.pt_share[head] -= 1
    if not (pm.flags[head] & PG_ANON):
        _file_pmd_unmapped(pm, head, rss)
        return
    rss[MM_ANONPAGES] -= HPAGE_PMD_NR
    if pm.pt_share[head] == 0:
        pm.nr_anon_thps -= 1
        # only this PMD's reference left: no PTE maps a page, no scan
        nr = HPAGE_PMD_NR - (0 if pm.refcount[head] == 1 else folio_nr_pages_mapped(pm, head))
        pm.nr_anon_mapped -= nr
        if 0 < nr < HPAGE_PMD_NR:
            deferred_split_folio(pm, head)


cdef inline void folio_add_anon_rmap_ptes(physmem_t* pm, pfn_t head, int64_t* rss,
                                          bint exclusive) noexcept nogil:
    """__split_huge_pmd_locked's folio_ref_add(511) + folio_add_anon_rmap_ptes (RMAP_EXCLUSIVE
    if the PMD was exclusive) for the 512 PTEs that replace one PMD mapping: every page gets
    a PTE mapcount (and PageAnonExclusive). No page becomes newly mapped: the PMD maps them
    until folio_remove_rmap_pmd, which the caller does next (rss[MM_ANONPAGES] += 512 here,
    -= 512 there: unchanged, as Linux's split leaves the counters)."""
    cdef int64_t i
    pm.refcount[head] += HPAGE_PMD_NR - 1
    for i in range(HPAGE_PMD_NR):
        pm.mapcount[head + i] += 1
        if exclusive:
            pm.flags[head + i] |= PG_ANON_EXCLUSIVE
    rss[MM_ANONPAGES] += HPAGE_PMD_NR


# ---- the page cache ----

cdef inline void filemap_add_folio(physmem_t* pm, pfn_t pfn, bint swapbacked) noexcept nogil:
    """filemap_add_folio / shmem_add_to_page_cache's accounting: the page becomes a
    page-cache page (PG_FILE, and PG_SWAPBACKED for shmem) counted in NR_FILE_PAGES (and
    NR_SHMEM). Its one reference is the cache's; the caller stores it at its index."""
    pm.flags[pfn] |= PG_FILE | (PG_SWAPBACKED if swapbacked else 0)
    pm.nr_file_pages += 1
    if swapbacked:
        pm.nr_shmem += 1


cdef inline void filemap_add_folio_pmd(physmem_t* pm, pfn_t head, bint swapbacked) noexcept nogil:
    """filemap_add_folio's accounting for an order-9 folio (the caller stores its 512 pages
    at their indexes): PG_FILE on every page, NR_FILE_PAGES += 512, NR_FILE_THPS += 1
    (__lruvec_stat_mod_folio for a PMD-mappable folio; for shmem PG_SWAPBACKED too, NR_SHMEM
    += 512 and NR_SHMEM_THPS instead). Its one reference is the cache's."""
    cdef int64_t i
    for i in range(HPAGE_PMD_NR):
        pm.flags[head + i] |= PG_FILE | (PG_SWAPBACKED if swapbacked else 0)
    pm.nr_file_pages += HPAGE_PMD_NR
    if swapbacked:
        pm.nr_shmem += HPAGE_PMD_NR
        pm.nr_shmem_thps += 1
    else:
        pm.nr_file_thps += 1


cdef inline pfn_t shmem_alloc_and_add_folio(physmem_t* pm, xarray_t* cache, int64_t idx,
                                            bint swapbacked) noexcept nogil:
    """shmem_alloc_and_add_folio (filemap_fault's filemap_add_folio for a file): a zeroed
    page enters the cache at index idx, a hole read or written through a mapping. -1 if
    no frame is free or the host has no memory for the cache's tree (nothing changed)."""
    cdef pfn_t pfn = alloc_frame(pm, False, True)
    if pfn < 0:
        return -1
    if xa_store(cache, idx, pfn) < 0:
        put_page(pm, pfn)
        return -1
    filemap_add_folio(pm, pfn, swapbacked)
    return pfn


cdef inline void filemap_remove_folio(physmem_t* pm, pfn_t pfn, bint swapbacked) noexcept nogil:
    """filemap_remove_folio's accounting (filemap_unaccount_folio) and the cache's
    reference (folio_put) of an unmapped page; the caller has cleared its index."""
    pm.nr_file_pages -= 1
    if swapbacked:
        pm.nr_shmem -= 1
    put_page(pm, pfn)
