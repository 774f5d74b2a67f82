# cython: language_level=3
"""MADV_COLLAPSE of private anonymous memory: a PTE table's 512 pages copied into a new
order-9 folio mapped by one huge PMD, the table kept as its deposited table; and of shmem:
512 page-cache pages copied into a PMD-sized shmem folio that replaces them in the cache.

Models mm/khugepaged.c as 6.18 runs it for madvise_collapse (collapse_control.is_khugepaged
false): hpage_collapse_scan_pmd (find_pmd_or_thp_or_none, then per PTE: swap entries and
markers counted for __collapse_huge_page_swapin, none and zero-page PTEs allowed without a
limit, special PTEs SCAN_PAGE_NULL, non-anonymous pages SCAN_PAGE_ANON, unexpected
references SCAN_PAGE_COUNT; no writable PTE is needed, as on 6.18), alloc_charge_folio
(thp_collapse_alloc / thp_collapse_alloc_failed), and collapse_huge_page:
__collapse_huge_page_isolate, pmdp_collapse_flush, __collapse_huge_page_copy and
_copy_succeeded (a PTE-mapped THP's pages are unmapped in one folio_remove_rmap_ptes batch,
so a folio wholly in the range is not queued for a deferred split), the new PMD (dirty,
writable if the VMA is) with the old table deposited. The policy, the loop over 2 MiB
blocks, the swap-in and the errnos are the Python side's (mmemu.khugepaged). For shmem:
hpage_collapse_scan_file, collapse_file (after the Python side's try_to_unmap of every
page: copy, holes zero-filled, the old pages freed, the folio dirty), retract_page_tables'
per-mm step (retract_page_table) and collapse_pte_mapped_thp (the caller's PMD, as
set_huge_pmd's do_set_pmd maps it). Leaves out: khugepaged itself and its
max_ptes_none/swap/shared limits (MADV_COLLAPSE ignores them), collapse of disk files
(CONFIG_READ_ONLY_THP_FOR_FS), shmem swap entries (mmemu does not swap shmem), uffd-wp,
LRU isolation, page locks and memcg charging (they never fail here), NUMA node choice.
"""
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memset

from mmemu._core.types cimport *
from mmemu._core.physmem cimport (
    physmem_t, PhysMem, alloc_pages, put_page, copy_frame, table_ptr, wmb,
)
from mmemu._core.filemap cimport PageCache, xa_load, xa_store, xa_erase
from mmemu._core.pagetable cimport (
    mm_t, vma_t, MMCore, pmd_offset, pmd_offset_alloc, vma_from_py, pgtable_free, LEVEL_PTE,
)
from mmemu._core.cow_pgtable cimport break_cow_pgtable
from mmemu._core.pgtable cimport set_pmd_at, pmd_clear, pte_clear
from mmemu._core.tlb cimport flush_tlb_mm_range
from mmemu._core.rmap cimport (
    folio_remove_rmap_pte, folio_add_new_anon_rmap_pmd, folio_nr_pages_mapped,
    deferred_split_folio, filemap_add_folio_pmd, filemap_remove_folio, folio_mark_dirty,
)
from mmemu._core.huge_memory cimport (
    pgtable_trans_huge_deposit, prep_compound_page, mk_huge_pmd, map_file_pmd,
)

# enum scan_result (mm/khugepaged.c), the values MADV_COLLAPSE can meet here
cpdef enum scan_result:
    SCAN_FAIL = 0
    SCAN_SUCCEED = 1
    SCAN_PMD_NULL = 2
    SCAN_PMD_NONE = 3
    SCAN_PMD_MAPPED = 4
    SCAN_PTE_NON_PRESENT = 8
    SCAN_PTE_MAPPED_HUGEPAGE = 10
    SCAN_PAGE_NULL = 13
    SCAN_PAGE_COUNT = 15
    SCAN_PAGE_ANON = 18
    SCAN_ALLOC_HUGE_PAGE_FAIL = 25
    SCAN_TRUNCATED = 27


cdef int find_pmd_or_thp_or_none(physmem_t* pm, mm_t* mm, uint64_t addr,
                                 pte_t** pmdpp) noexcept nogil:
    """find_pmd_or_thp_or_none: SCAN_PMD_NULL if no PMD table covers addr, SCAN_PMD_NONE
    if its entry is none, SCAN_PMD_MAPPED for a huge PMD (the huge zero folio's too),
    else SCAN_SUCCEED with *pmdpp the entry linking a PTE table."""
    cdef pte_t* pmdp = pmd_offset(pm, mm, addr) if mm.pgd >= 0 else NULL
    pmdpp[0] = pmdp
    if pmdp == NULL:
        return SCAN_PMD_NULL
    if pmdp[0] == 0:
        return SCAN_PMD_NONE
    if pmd_leaf(pmdp[0]):
        return SCAN_PMD_MAPPED
    return SCAN_SUCCEED


cdef int64_t folio_mapcount(physmem_t* pm, pfn_t head) noexcept nogil:
    """folio_mapcount of a THP: its PMD mappings plus every page's PTE mappings."""
    cdef int64_t i, n = pm.pt_share[head]
    for i in range(HPAGE_PMD_NR):
        n += pm.mapcount[head + i]
    return n


cdef int scan_ptes(physmem_t* pm, pte_t* ptes, bint isolate, int64_t* unmapped) noexcept nogil:
    """hpage_collapse_scan_pmd's loop (isolate false: a swap entry or marker sets its bit
    in the 512-bit map unmapped[8], for the swap-in) or __collapse_huge_page_isolate's
    (isolate true: a PTE still not present is SCAN_PTE_NON_PRESENT) for MADV_COLLAPSE."""
    cdef int i
    cdef pte_t e
    cdef pfn_t pfn, head, seen = -1
    cdef uint32_t fl
    for i in range(HPAGE_PMD_NR):
        e = ptes[i]
        if e != 0 and not pte_present(e):
            if isolate:
                return SCAN_PTE_NON_PRESENT
            unmapped[i >> 6] |= (<int64_t>1) << (i & 63)
            continue
        if e == 0 or pte_pfn(e) == pm.zero_pfn:
            continue
        if pte_special(e):
            return SCAN_PAGE_NULL       # vm_normal_page: no struct page
        pfn = pte_pfn(e)
        fl = pm.flags[pfn]
        if not (fl & PG_ANON):
            return SCAN_PAGE_ANON
        if fl & PG_COMPOUND:
            head = compound_head(pfn)
            if head != seen:            # is_refcount_suitable, once per folio
                if pm.refcount[head] != folio_mapcount(pm, head):
                    return SCAN_PAGE_COUNT
                seen = head
        elif pm.refcount[pfn] != pm.mapcount[pfn]:
            return SCAN_PAGE_COUNT
    return SCAN_SUCCEED


cdef void folio_remove_rmap_ptes(physmem_t* pm, pfn_t pfn, int n, int64_t* rss) noexcept nogil:
    """folio_remove_rmap_ptes + folio_put_refs for n PTEs mapping consecutive pages of one
    THP from pfn (__collapse_huge_page_copy_succeeded's folio_pte_batch): the folio becomes
    partially mapped only if some of its pages stay mapped by PTEs and none by a PMD."""
    cdef pfn_t head = compound_head(pfn)
    cdef int k, gone = 0
    for k in range(n):
        pm.mapcount[pfn + k] -= 1
        gone += pm.mapcount[pfn + k] == 0
    rss[MM_ANONPAGES] -= n
    if pm.pt_share[head] == 0:
        pm.nr_anon_mapped -= gone
        if gone and folio_nr_pages_mapped(pm, head) > 0:
            deferred_split_folio(pm, head)
    pm.refcount[head] -= n - 1
    put_page(pm, head)


cdef void collapse_copy(physmem_t* pm, mm_t* mm, pte_t* ptes, pfn_t head) noexcept nogil:
    """__collapse_huge_page_copy + _copy_succeeded: every mapped page copied into the new
    folio (none and zero-page PTEs leave its zeroed page), its PTE cleared and its mapping
    and reference dropped (MM_ANONPAGES -1 each; the caller's folio_add_new_anon_rmap_pmd
    adds 512, so a none or zero PTE counts in, as in Linux)."""
    cdef int i = 0, n
    cdef pte_t e
    cdef pfn_t pfn
    while i < HPAGE_PMD_NR:
        e = ptes[i]
        if e == 0:
            i += 1
            continue
        pfn = pte_pfn(e)
        if pfn == pm.zero_pfn:
            pte_clear(pm, &ptes[i])
            i += 1
            continue
        if pm.flags[pfn] & PG_COMPOUND:
            n = 1
            while (i + n < HPAGE_PMD_NR and ptes[i + n] != 0 and pte_present(ptes[i + n])
                   and pte_pfn(ptes[i + n]) == pfn + n
                   and compound_head(pfn + n) == compound_head(pfn)):
                n += 1
            for i in range(i, i + n):
                copy_frame(pm, head + i, pte_pfn(ptes[i]))
                pte_clear(pm, &ptes[i])
            folio_remove_rmap_ptes(pm, pfn, n, mm.rss)
        else:
            copy_frame(pm, head + i, pfn)
            pte_clear(pm, &ptes[i])
            folio_remove_rmap_pte(pm, pfn, pm.flags[pfn], mm.rss)
            put_page(pm, pfn)
        i += 1
    wmb()


# ---- Python ----

def hpage_collapse_scan_pmd(MMCore core, uint64_t addr):
    """hpage_collapse_scan_pmd for MADV_COLLAPSE at the 2 MiB-aligned addr: (scan result,
    the addresses of the swap entries and markers to swap in first). SCAN_SUCCEED means
    collapse_huge_page may go on."""
    cdef physmem_t* pm = &core.phys.pm
    cdef pte_t* pmdp
    cdef int64_t unmapped[8]
    cdef int i, r = find_pmd_or_thp_or_none(pm, &core.mm, addr, &pmdp)
    memset(unmapped, 0, sizeof(unmapped))
    if r == SCAN_SUCCEED:
        r = scan_ptes(pm, table_ptr(pm, pte_pfn(pmdp[0])), False, unmapped)
    return r, [addr + (i << PAGE_SHIFT) for i in range(HPAGE_PMD_NR)
               if unmapped[i >> 6] >> (i & 63) & 1]


def alloc_charge_folio(MMCore core):
    """alloc_charge_folio: an order-9 folio for a collapse (thp_collapse_alloc), or -1
    (thp_collapse_alloc_failed)."""
    cdef physmem_t* pm = &core.phys.pm
    cdef pfn_t head = alloc_pages(pm, HPAGE_PMD_ORDER, False, True)
    if head < 0:
        pm.ev[EV_THP_COLLAPSE_ALLOC_FAILED] += 1
        return -1
    pm.ev[EV_THP_COLLAPSE_ALLOC] += 1
    prep_compound_page(pm, head)
    return head


def folio_put(MMCore core, int64_t head):
    """folio_put of a collapse's folio that was not used."""
    put_page(&core.phys.pm, head)


def collapse_huge_page(MMCore core, object vma, uint64_t addr, int64_t head):
    """collapse_huge_page after alloc_charge_folio (and the swap-in): the PMD found again,
    the PTEs checked again (__collapse_huge_page_isolate), then the huge PMD mapping head
    replaces the table, which becomes its deposited table. Returns the scan result; the
    folio is put unless SCAN_SUCCEED."""
    cdef physmem_t* pm = &core.phys.pm
    cdef vma_t v
    cdef pte_t* pmdp
    cdef pte_t* ptes
    cdef pfn_t t
    cdef int64_t unmapped[8]
    cdef int r
    vma_from_py(&v, vma)
    r = find_pmd_or_thp_or_none(pm, &core.mm, addr, &pmdp)
    if r == SCAN_SUCCEED:
        t = pte_pfn(pmdp[0])
        ptes = table_ptr(pm, t)
        r = scan_ptes(pm, ptes, True, unmapped)
    if r != SCAN_SUCCEED:
        put_page(pm, head)
        return r
    pmd_clear(pm, pmdp)                 # pmdp_collapse_flush
    flush_tlb_mm_range(pm, &core.mm, 0, PMD_SIZE)
    collapse_copy(pm, &core.mm, ptes, head)
    folio_add_new_anon_rmap_pmd(pm, head, core.mm.rss, True)
    pm.pt_owner[t] = core.mm.id         # a COW table reused under eager accounting kept its old owner
    pgtable_trans_huge_deposit(pm, &core.mm, t)
    set_pmd_at(pm, pmdp, pte_mkdirty(mk_huge_pmd(head, &v)))
    return SCAN_SUCCEED


# ---- shmem: collapse_file, retract_page_tables, collapse_pte_mapped_thp ----

def hpage_collapse_scan_file(PhysMem phys, PageCache cache, int64_t start):
    """hpage_collapse_scan_file for MADV_COLLAPSE of the 512 shmem indexes from start
    (aligned): SCAN_PTE_MAPPED_HUGEPAGE if a PMD-sized folio is cached there already,
    SCAN_PAGE_COUNT if a page holds a reference besides the cache's and its mappings'
    (is_refcount_suitable), else SCAN_SUCCEED (holes allowed without a limit)."""
    cdef physmem_t* pm = &phys.pm
    cdef int64_t i
    cdef pfn_t p
    for i in range(HPAGE_PMD_NR):
        p = xa_load(&cache.xa, start + i)
        if p < 0:
            continue
        if pm.flags[p] & PG_COMPOUND:
            return SCAN_PTE_MAPPED_HUGEPAGE
        if pm.refcount[p] != 1 + pm.mapcount[p]:
            return SCAN_PAGE_COUNT
    return SCAN_SUCCEED


def collapse_file(PhysMem phys, PageCache cache, int64_t start, int64_t head):
    """collapse_file for shmem after alloc_charge_folio and try_to_unmap of every page (the
    caller unmapped them in every mm): each cached page of the 512 indexes from start is
    copied into the new folio and leaves the cache (filemap_remove_folio, freed), holes
    stay zero (shmem_charge: they count now), and the folio (dirty, NR_SHMEM_THPS) takes
    the 512 indexes. SCAN_TRUNCATED if the range holds no page at all, SCAN_PAGE_COUNT if
    a page is still mapped or referenced, SCAN_FAIL if the cache's tree has no host
    memory for a hole; then nothing changed and the folio is put."""
    cdef physmem_t* pm = &phys.pm
    cdef int64_t old[HPAGE_PMD_NR]
    cdef int64_t i, j, present = 0
    for i in range(HPAGE_PMD_NR):
        old[i] = xa_load(&cache.xa, start + i)
        if old[i] < 0:
            continue
        present += 1
        if pm.flags[old[i]] & PG_COMPOUND or pm.refcount[old[i]] != 1 or pm.mapcount[old[i]]:
            put_page(pm, head)
            return SCAN_PAGE_COUNT
    if present == 0:
        put_page(pm, head)
        return SCAN_TRUNCATED
    for i in range(HPAGE_PMD_NR):   # the holes first: only they may need tree nodes
        if old[i] < 0 and xa_store(&cache.xa, start + i, head + i) < 0:
            for j in range(i):
                if old[j] < 0:
                    xa_erase(&cache.xa, start + j)
            put_page(pm, head)
            return SCAN_FAIL
    for i in range(HPAGE_PMD_NR):
        if old[i] >= 0:
            copy_frame(pm, head + i, old[i])
            xa_store(&cache.xa, start + i, head + i)     # an existing slot: no node needed
            filemap_remove_folio(pm, old[i], True)
    wmb()
    filemap_add_folio_pmd(pm, head, True)
    folio_mark_dirty(pm, head)
    return SCAN_SUCCEED


def retract_page_table(MMCore core, uint64_t addr):
    """retract_page_tables for one mm: the PTE table mapping the 2 MiB at addr (aligned),
    empty once collapse_file unmapped the pages, is unlinked (pmdp_collapse_flush) and
    freed (pte_free_defer, VmPTE). Nothing if no table is there, or it maps something or
    is COW-shared (or its shared PUD/PMD tables cannot be broken: no free frame). True if
    one was freed."""
    cdef physmem_t* pm = &core.phys.pm
    cdef pte_t* pmdp
    cdef int r = find_pmd_or_thp_or_none(pm, &core.mm, addr, &pmdp)
    cdef pfn_t t
    cdef pte_t* ptes
    cdef int i
    if r != SCAN_SUCCEED or break_cow_pgtable(pm, &core.mm, addr, 0) < 0:
        return False
    pmdp = pmd_offset(pm, &core.mm, addr)      # (the path may be private copies now)
    t = pte_pfn(pmdp[0])
    ptes = table_ptr(pm, t)
    if pm.pt_share[t] != 1:
        return False
    for i in range(HPAGE_PMD_NR):
        if ptes[i] != 0:
            return False
    pmd_clear(pm, pmdp)
    flush_tlb_mm_range(pm, &core.mm, 0, PMD_SIZE)
    pm.pt_share[t] -= 1
    pgtable_free(pm, &core.mm, t, LEVEL_PTE)
    return True


def collapse_pte_mapped_thp(MMCore core, object vma, uint64_t addr):
    """collapse_pte_mapped_thp(install_pmd) for the caller's mm: the PMD-sized folio cached
    at the aligned 2 MiB at addr mapped by one PMD as set_huge_pmd/do_set_pmd maps it
    (young, writable if the VMA's protection is, thp_file_mapped); a PTE table still there
    must map only the folio's own pages (each unmapped, the table freed), else SCAN_FAIL
    (SCAN_PTE_NON_PRESENT for a swap entry or marker). Without a PMD table (a none PUD
    entry) the tables are allocated and the PMD installed, as 6.18 does here (measured:
    VmPTE +4 for the PMD table); SCAN_FAIL if no frame is free for them or for breaking
    shared PUD/PMD tables on the path (whole-table COW). SCAN_PMD_MAPPED if a huge PMD
    maps the span already."""
    cdef physmem_t* pm = &core.phys.pm
    cdef vma_t v
    cdef pte_t* pmdp
    cdef pte_t* ptes
    cdef pte_t e
    cdef pfn_t head, t
    cdef int i, r
    vma_from_py(&v, vma)
    head = xa_load(v.cache, v.pgoff + <int64_t>((addr - v.start) >> PAGE_SHIFT))
    if head < 0 or not (pm.flags[head] & PG_HEAD):
        return SCAN_PAGE_NULL
    r = find_pmd_or_thp_or_none(pm, &core.mm, addr, &pmdp)
    if r == SCAN_PMD_MAPPED or core.mm.pgd < 0:
        return r
    if break_cow_pgtable(pm, &core.mm, addr, 2) < 0:
        return SCAN_FAIL
    pmdp = pmd_offset_alloc(pm, &core.mm, addr)
    if pmdp == NULL:
        return SCAN_FAIL
    if r == SCAN_SUCCEED:
        t = pte_pfn(pmdp[0])
        ptes = table_ptr(pm, t)
        if pm.pt_share[t] != 1:
            return SCAN_FAIL
        for i in range(HPAGE_PMD_NR):
            e = ptes[i]
            if e == 0:
                continue
            if not pte_present(e):
                return SCAN_PTE_NON_PRESENT
            if pte_pfn(e) != head + i:
                return SCAN_FAIL
        for i in range(HPAGE_PMD_NR):
            e = ptes[i]
            if e != 0:
                pte_clear(pm, &ptes[i])
                folio_remove_rmap_pte(pm, head + i, pm.flags[head + i], core.mm.rss)
                put_page(pm, head)
        pmd_clear(pm, pmdp)             # pmdp_collapse_flush, pte_free_defer
        flush_tlb_mm_range(pm, &core.mm, 0, PMD_SIZE)
        pm.pt_share[t] -= 1
        pgtable_free(pm, &core.mm, t, LEVEL_PTE)
    map_file_pmd(pm, &core.mm, pmdp, head,
                 mk_pte(head, v.prot) | _bit(BIT_PSE) | _bit(BIT_ACCESSED))
    pm.ev[EV_THP_FILE_MAPPED] += 1
    return SCAN_SUCCEED
