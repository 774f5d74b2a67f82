# cython: language_level=3
"""Transparent huge pages for private anonymous memory: huge PMDs mapping order-9 folios.

Models mm/huge_memory.c: do_huge_pmd_anonymous_page (with the huge zero folio on a read,
get_huge_zero_folio), do_huge_pmd_wp_page (reuse, else split and let do_wp_page copy the
4 KiB page, as 6.18 does) and do_huge_zero_wp_pmd, huge_pmd_set_accessed, copy_huge_pmd,
zap_huge_pmd, change_huge_pmd, __split_huge_pmd_locked, split_huge_pmd_address,
move_huge_pmd, and the deposited PTE table of every huge PMD (pgtable_trans_huge_deposit /
withdraw, counted in VmPTE and NR_PAGETABLE as mm_inc_nr_ptes does). The range kernels
(fault.pyx, fork.pyx, zap.pyx, mremap.pyx, task_mmu.pyx) call these from their walk's
pmd_entry when they meet a leaf PMD.
A PMD-sized page-cache folio (a disk file's large folio, made by a write: mmemu.file) is
mapped by do_set_pmd at a read fault or a shared write fault, with no deposited table (x86
deposits none for a file PMD); every other path drops such a PMD where Linux does: a split
clears it (the pages refault through PTEs), fork leaves it to the child's faults
(copy_huge_pmd skips file VMAs), zap drops the mapping. The page cache's own side (the
folio made and freed) is here too (filemap_alloc_folio_pmd, filemap_remove_folio_pmd); a
folio is never split (it is dirty: mmemu has no writeback, and ext4 cannot split a dirty
large folio, thp_split_page_failed). A PMD-sized shmem folio (made by MADV_COLLAPSE:
khugepaged.pyx collapse_file) is mapped and dropped the same way, counted in
NR_SHMEM_THPS / NR_SHMEM_PMDMAPPED and MM_SHMEMPAGES; unlike ext4's it can be split
(split_shmem_folio, for a truncate or hole that cuts it).
Leaves out: shmem THPs at a fault (shmem_enabled), mTHP orders and file folios of orders
1-8, khugepaged and MADV_COLLAPSE of disk-file ranges,
the deferred split shrinker (a partially mapped folio stays whole until its last reference
goes: thp_split_page never counts), swap-out of a THP, PMD-level uffd, NUMA and migration
entries, the huge zero folio's shrinker (it stays allocated once allocated).
"""
from libc.stdint cimport uint32_t, int64_t, uint64_t
from libc.string cimport memset

from mmemu._core.types cimport *
from mmemu._core.physmem cimport (
    physmem_t, PhysMem, alloc_pages, free_pages, put_page, table_ptr,
)
from mmemu._core.filemap cimport PageCache, xa_load, xa_store, xa_erase
from mmemu._core.pagetable cimport (
    mm_t, vma_t, MMCore, pmd_offset, pmd_offset_alloc, pgtable_alloc, pgtable_free, LEVEL_PTE,
    vma_from_py,
)
from mmemu._core.pgtable cimport (
    set_pte_at, set_pmd_at, pmd_populate, pmd_clear, pmdp_set_access_flags,
    pmdp_set_wrprotect,
)
from mmemu._core.tlb cimport flush_tlb_mm_range
from mmemu._core.rmap cimport (
    folio_add_new_anon_rmap_pmd, folio_dup_rmap_pmd, folio_remove_rmap_pmd,
    folio_add_anon_rmap_ptes, folio_add_file_rmap_pmd, filemap_add_folio_pmd, folio_mark_dirty,
)


# ---- the deposited PTE table ----

cdef void pgtable_trans_huge_deposit(physmem_t* pm, mm_t* mm, pfn_t t) noexcept nogil:
    """pgtable_trans_huge_deposit: keep a preallocated PTE table with the mm (linked
    through the table page's lru, here buddy_next) for the split of a huge PMD. The
    table stays counted in VmPTE; no PMD links it (pt_share 0)."""
    pm.pt_share[t] = 0
    pm.buddy_next[t] = mm.pmd_huge_pte if mm.nr_deposited else -1
    mm.pmd_huge_pte = t
    mm.nr_deposited += 1


cdef inline pfn_t pgtable_trans_huge_withdraw(physmem_t* pm, mm_t* mm) noexcept nogil:
    """pgtable_trans_huge_withdraw: take one deposited table back (every huge PMD has
    deposited one, so there is one)."""
    cdef pfn_t t = mm.pmd_huge_pte
    mm.pmd_huge_pte = pm.buddy_next[t]
    mm.nr_deposited -= 1
    return t


# ---- folios ----

cdef void prep_compound_page(physmem_t* pm, pfn_t head) noexcept nogil:
    """prep_compound_page: an order-9 block becomes one folio; the tails' references are
    the head's."""
    cdef int64_t i
    pm.flags[head] |= PG_HEAD
    for i in range(1, HPAGE_PMD_NR):
        pm.flags[head + i] |= PG_TAIL
        pm.refcount[head + i] = 0


cdef pte_t mk_huge_pmd(pfn_t pfn, vma_t* vma) noexcept nogil:
    """map_anon_folio_pmd's entry: mk_huge_pmd(vm_page_prot), young, and dirty + writable
    if the VMA is writable."""
    cdef pte_t e = mk_pte(pfn, vma.prot) | _bit(BIT_PSE) | _bit(BIT_ACCESSED)
    if vma.flags & VM_WRITE:
        e = pte_mkwrite(pte_mkdirty(e))
    return e


cdef pfn_t vma_alloc_anon_folio_pmd(physmem_t* pm) noexcept nogil:
    """vma_alloc_anon_folio_pmd: a zeroed order-9 folio, or -1 (thp_fault_fallback)."""
    cdef pfn_t head = alloc_pages(pm, HPAGE_PMD_ORDER, False, True)
    if head < 0:
        pm.ev[EV_THP_FAULT_FALLBACK] += 1
        return -1
    prep_compound_page(pm, head)
    return head


cdef void map_anon_folio_pmd(physmem_t* pm, mm_t* mm, vma_t* vma, pte_t* pmdp,
                             pfn_t head) noexcept nogil:
    """map_anon_folio_pmd: the new exclusive folio mapped by the PMD, thp_fault_alloc."""
    folio_add_new_anon_rmap_pmd(pm, head, mm.rss, True)
    set_pmd_at(pm, pmdp, mk_huge_pmd(head, vma))
    pm.ev[EV_THP_FAULT_ALLOC] += 1


cdef bint get_huge_zero_folio(physmem_t* pm) noexcept nogil:
    """get_huge_zero_folio: the huge zero folio, allocated (zeroed, reserved) on first use
    (thp_zero_page_alloc); False if no order-9 block is free."""
    cdef pfn_t z
    cdef int64_t i
    if pm.huge_zero_pfn >= 0:
        return True
    z = alloc_pages(pm, HPAGE_PMD_ORDER, False, True)
    if z < 0:
        return False
    for i in range(HPAGE_PMD_NR):
        pm.flags[z + i] |= PG_ZERO | PG_RESERVED
    pm.huge_zero_pfn = z
    pm.ev[EV_THP_ZERO_PAGE_ALLOC] += 1
    return True


# ---- faults ----

cdef int do_huge_pmd_anonymous_page(physmem_t* pm, mm_t* mm, vma_t* vma, pte_t* pmdp,
                                    bint write) noexcept nogil:
    """do_huge_pmd_anonymous_page on a none PMD of a suitable VMA: a read maps the huge zero
    folio, a write a new zeroed THP; each with a deposited PTE table. FAULT_FALLBACK
    (thp_fault_fallback) when no order-9 block is free, FAULT_OOM when the table is not."""
    cdef pfn_t t, head = -1
    vma.anon_vma = 1                    # vmf_anon_prepare, on a read fault too
    if write:
        head = vma_alloc_anon_folio_pmd(pm)
        if head < 0:
            return FAULT_FALLBACK
    t = pgtable_alloc(pm, mm, LEVEL_PTE)
    if t < 0:
        if head >= 0:
            put_page(pm, head)
        return FAULT_OOM
    if not write and not get_huge_zero_folio(pm):
        pgtable_free(pm, mm, t, LEVEL_PTE)
        pm.ev[EV_THP_FAULT_FALLBACK] += 1
        return FAULT_FALLBACK
    pgtable_trans_huge_deposit(pm, mm, t)
    if write:
        map_anon_folio_pmd(pm, mm, vma, pmdp, head)
    else:
        # set_huge_zero_folio: read-only, no rmap, no rss
        set_pmd_at(pm, pmdp, pte_wrprotect(mk_pte(pm.huge_zero_pfn, vma.prot))
                   | _bit(BIT_PSE) | _bit(BIT_ACCESSED))
    pm.ev[EV_PGFAULT] += 1
    return FAULT_OK


cdef inline bint is_file_pmd(physmem_t* pm, pte_t e) noexcept nogil:
    """The huge PMD maps a page-cache folio (not an anonymous THP, not the huge zero folio)."""
    return (pm.flags[pte_pfn(e)] & (PG_ANON | PG_ZERO)) == 0


cdef void map_file_pmd(physmem_t* pm, mm_t* mm, pte_t* pmdp, pfn_t head,
                       pte_t e) noexcept nogil:
    """do_set_pmd's mapping: the folio's file rmap (and the PMD's reference), the entry e,
    and the mm's count of file PMDs."""
    folio_add_file_rmap_pmd(pm, head, mm.rss)
    set_pmd_at(pm, pmdp, e)
    mm.nr_file_pmds += 1


cdef int do_set_pmd(physmem_t* pm, mm_t* mm, vma_t* vma, pte_t* pmdp, uint64_t addr,
                    bint write) noexcept nogil:
    """do_set_pmd on a none PMD of a file VMA the policy allows (not MADV_NOHUGEPAGE: the
    caller's vma.thp): filemap_map_pmd at a read fault, finish_fault at a shared write
    fault. The PMD-sized folio cached at the aligned index is mapped by one huge PMD
    (young; dirty and writable on a write, the folio dirtied), with no deposited table,
    thp_file_mapped. FAULT_FALLBACK when the folio there is not PMD-sized or the VMA's
    file offset is not aligned with its address (thp_vma_suitable_order)."""
    cdef uint64_t haddr = addr & ~(PMD_SIZE - 1)
    cdef int64_t idx = vma.pgoff + <int64_t>((haddr - vma.start) >> PAGE_SHIFT)
    cdef pfn_t head
    cdef pte_t e
    if ((<int64_t>(vma.start >> PAGE_SHIFT) - vma.pgoff) & (HPAGE_PMD_NR - 1)) != 0:
        return FAULT_FALLBACK
    head = xa_load(vma.cache, idx)
    if head < 0 or not (pm.flags[head] & PG_HEAD):
        return FAULT_FALLBACK
    e = mk_pte(head, vma.prot) | _bit(BIT_PSE) | _bit(BIT_ACCESSED)
    if write:
        e = pte_mkwrite(pte_mkdirty(e))
        folio_mark_dirty(pm, head)
    map_file_pmd(pm, mm, pmdp, head, e)
    pm.ev[EV_THP_FILE_MAPPED] += 1
    pm.ev[EV_FAULT_SHMEM] += 1
    pm.ev[EV_PGFAULT] += 1
    return FAULT_OK


cdef int do_huge_pmd_wp_page(physmem_t* pm, mm_t* mm, vma_t* vma, pte_t* pmdp) noexcept nogil:
    """do_huge_pmd_wp_page: the huge zero folio gets a new THP (do_huge_zero_wp_pmd); an
    exclusive folio, or one with no other reference, is reused; otherwise the PMD is split
    and FAULT_FALLBACK lets do_wp_page copy the one 4 KiB page. A file PMD (wp_huge_pmd
    without a huge_fault) is split, and the PTE fault follows (do_cow_fault, or
    do_shared_fault mapping the folio by a PMD again)."""
    cdef pte_t e = pmdp[0]
    cdef pfn_t head = pte_pfn(e)
    if is_file_pmd(pm, e):
        # wp_huge_pmd for a file VMA (no huge_fault): split, and the PTE fault goes on
        split_huge_pmd(pm, mm, pmdp)
        return FAULT_FALLBACK
    if is_huge_zero_pmd(pm, e):
        head = vma_alloc_anon_folio_pmd(pm)
        if head < 0:
            split_huge_pmd(pm, mm, pmdp)
            return FAULT_FALLBACK
        map_anon_folio_pmd(pm, mm, vma, pmdp, head)
        # pmdp_huge_clear_flush: flush_pmd_tlb_range over the 2 MiB (only its length counts)
        flush_tlb_mm_range(pm, mm, 0, PMD_SIZE)
        pm.ev[EV_PGFAULT] += 1
        return FAULT_OK
    if (pm.flags[head] & PG_ANON_EXCLUSIVE) or pm.refcount[head] == 1:
        pm.flags[head] |= PG_ANON_EXCLUSIVE
        pmdp_set_access_flags(pm, pmdp, pte_mkwrite(pte_mkdirty(pte_mkyoung(e))))
        pm.ev[EV_WP_REUSE] += 1
        pm.ev[EV_PGFAULT] += 1
        return FAULT_OK
    split_huge_pmd(pm, mm, pmdp)
    return FAULT_FALLBACK


cdef int huge_pmd_fault(physmem_t* pm, mm_t* mm, vma_t* vma, pte_t* pmdp, bint write) noexcept nogil:
    """__handle_mm_fault on a huge PMD: a write to a read-only one is do_huge_pmd_wp_page,
    anything else huge_pmd_set_accessed (A, and D on a write). FAULT_FALLBACK after a
    split: the caller goes on with the PTE."""
    cdef pte_t e = pmdp[0]
    if write and not pte_write(e):
        return do_huge_pmd_wp_page(pm, mm, vma, pmdp)
    pmdp_set_access_flags(pm, pmdp, e | _bit(BIT_ACCESSED) | (_bit(BIT_DIRTY) if write else 0))
    pm.ev[EV_SPURIOUS] += 1
    pm.ev[EV_PGFAULT] += 1
    return FAULT_OK


cdef int huge_pmd_access(physmem_t* pm, mm_t* mm, vma_t* vma, pte_t* pmdp, bint write) noexcept nogil:
    """The MMU on a huge PMD: an allowed access sets A (and D), anything else faults
    (huge_pmd_fault)."""
    cdef pte_t e = pmdp[0]
    cdef pte_t want = _bit(BIT_ACCESSED) | (_bit(BIT_DIRTY) if write else 0)
    if (e & _bit(BIT_PRESENT)) and (not write or pte_write(e)):
        if (e & want) != want:
            pmdp_set_access_flags(pm, pmdp, e | want)
        return FAULT_OK
    return huge_pmd_fault(pm, mm, vma, pmdp, write)


# ---- split, fork, zap, mprotect ----

cdef void zap_file_pmd(physmem_t* pm, mm_t* mm, pte_t* pmdp) noexcept nogil:
    """zap_huge_pmd / __split_huge_pmd_locked for a file PMD: clear it (a dirty PMD dirties
    the folio), drop the folio's PMD mapping and the PMD's reference; the cache keeps the
    folio. No deposited table."""
    cdef pte_t e = pmdp[0]
    pmd_clear(pm, pmdp)
    if pte_dirty(e):
        folio_mark_dirty(pm, pte_pfn(e))
    folio_remove_rmap_pmd(pm, pte_pfn(e), mm.rss)
    put_page(pm, pte_pfn(e))
    mm.nr_file_pmds -= 1


cdef void split_huge_pmd(physmem_t* pm, mm_t* mm, pte_t* pmdp) noexcept nogil:
    """__split_huge_pmd_locked for an anonymous folio or the huge zero folio: the deposited
    table takes 512 PTEs with the PMD's bits (the 4 KiB zero page for the huge zero folio)
    and replaces the PMD (thp_split_pmd, a TLB flush). The folio stays whole; each page
    gets a PTE mapcount and the PMD's exclusivity. A file PMD is cleared instead
    (zap_file_pmd): the pages refault through PTEs; the PMD entry is then none."""
    cdef pte_t e = pmdp[0]
    cdef pfn_t t
    cdef pte_t* ptes
    cdef pte_t bits = e & ~PTE_PFN_MASK() & ~_bit(BIT_PSE)
    cdef pfn_t head = pte_pfn(e)
    cdef int i
    if is_file_pmd(pm, e):
        zap_file_pmd(pm, mm, pmdp)
        pm.ev[EV_THP_SPLIT_PMD] += 1
        flush_tlb_mm_range(pm, mm, 0, PMD_SIZE)
        return
    t = pgtable_trans_huge_withdraw(pm, mm)
    ptes = table_ptr(pm, t)
    if is_huge_zero_pmd(pm, e):
        for i in range(HPAGE_PMD_NR):   # __split_huge_zero_page_pmd
            set_pte_at(pm, &ptes[i], mk_pte(pm.zero_pfn, bits) | _bit(BIT_SPECIAL))
    else:
        folio_add_anon_rmap_ptes(pm, head, mm.rss, (pm.flags[head] & PG_ANON_EXCLUSIVE) != 0)
        for i in range(HPAGE_PMD_NR):
            set_pte_at(pm, &ptes[i], mk_pte(head + i, bits))
        folio_remove_rmap_pmd(pm, head, mm.rss)
    pm.pt_share[t] = 1
    pmd_populate(pm, pmdp, t)
    pm.ev[EV_THP_SPLIT_PMD] += 1
    # pmdp_invalidate: flush_pmd_tlb_range over the 2 MiB (only its length counts)
    flush_tlb_mm_range(pm, mm, 0, PMD_SIZE)


cdef int copy_huge_pmd(physmem_t* pm, mm_t* dst_mm, pte_t* dst_pmd, pte_t* src_pmd) noexcept nogil:
    """copy_huge_pmd for an anonymous VMA: a deposited table for the child, the folio
    shared (folio_try_dup_anon_rmap_pmd, MM_ANONPAGES += 512; nothing for the huge zero
    folio), both PMDs write-protected, the child's old. -1 if no table is free. A file PMD
    is not copied (the child's PMD stays none)."""
    cdef pfn_t t
    cdef pte_t e = src_pmd[0]
    if is_file_pmd(pm, e):
        return 0        # "Skip if can be re-fill on fault": the child faults the folio in
    t = pgtable_alloc(pm, dst_mm, LEVEL_PTE)
    if t < 0:
        return -1
    if not is_huge_zero_pmd(pm, e):
        folio_dup_rmap_pmd(pm, pte_pfn(e), dst_mm.rss)
    pgtable_trans_huge_deposit(pm, dst_mm, t)
    if pte_write(e):
        pmdp_set_wrprotect(pm, src_pmd)
    set_pmd_at(pm, dst_pmd, pte_wrprotect(e) & ~_bit(BIT_ACCESSED))
    return 0


cdef void zap_huge_pmd(physmem_t* pm, mm_t* mm, pte_t* pmdp) noexcept nogil:
    """zap_huge_pmd: clear the PMD, free its deposited table (zap_deposited_table) and
    drop the folio's PMD mapping and reference."""
    cdef pte_t e = pmdp[0]
    if is_file_pmd(pm, e):
        zap_file_pmd(pm, mm, pmdp)
        return
    pmd_clear(pm, pmdp)
    pgtable_free(pm, mm, pgtable_trans_huge_withdraw(pm, mm), LEVEL_PTE)
    if not is_huge_zero_pmd(pm, e):
        folio_remove_rmap_pmd(pm, pte_pfn(e), mm.rss)
        put_page(pm, pte_pfn(e))


cdef int change_huge_pmd(physmem_t* pm, pte_t* pmdp, pte_t newprot, bint try_writable,
                         bint shared) noexcept nogil:
    """change_huge_pmd: pmd_modify to the new protection, writable again where
    can_change_pmd_writable allows (an exclusive anonymous folio in a private VMA, a dirty
    PMD in a shared one). 1 if it changed."""
    cdef pte_t e = pmdp[0]
    cdef pte_t ne = pte_modify(e, newprot) | _bit(BIT_PSE)
    if (try_writable and not pte_write(ne) and (ne & _bit(BIT_PRESENT))
            and not is_huge_zero_pmd(pm, e)
            and (pte_dirty(ne) if shared else (pm.flags[pte_pfn(e)] & PG_ANON_EXCLUSIVE) != 0)):
        ne = pte_mkwrite(ne)
    if ne == e:
        return 0
    set_pmd_at(pm, pmdp, ne)
    return 1


# ---- Python ----

def split_huge_pmd_address(MMCore mmc, uint64_t addr):
    """split_huge_pmd_address (vma_adjust_trans_huge): a VMA boundary at addr splits the
    huge PMD across it. True if one was split."""
    cdef pte_t* pmdp
    if addr & (PMD_SIZE - 1) == 0 or mmc.mm.pgd < 0:
        return False
    pmdp = pmd_offset(&mmc.phys.pm, &mmc.mm, addr)
    if pmdp == NULL or not pmd_leaf(pmdp[0]):
        return False
    split_huge_pmd(&mmc.phys.pm, &mmc.mm, pmdp)
    return True


cdef pte_t* _none_pmd(physmem_t* pm, mm_t* mm, uint64_t addr, int* rc) noexcept nogil:
    """The importer's PMD entry at addr, the tables above it allocated: NULL with rc -1 if
    a frame for one is missing (those allocated stay, as after a failed fault), -2 if the
    entry is not none."""
    cdef pte_t* pmdp = pmd_offset_alloc(pm, mm, addr)
    if pmdp == NULL:
        rc[0] = -1
    elif pmdp[0] != 0:
        rc[0] = -2
        pmdp = NULL
    return pmdp


HUGE_NEW = -1       # install_huge_pmd: a new folio
HUGE_ZERO = -2      # ... the huge zero folio


def install_huge_pmd(MMCore core, object vma, uint64_t addr, int64_t head, bint exclusive):
    """The importer's huge PMD at addr (2 MiB aligned, inside vma, its PMD entry none), as
    the fault path would have made it: head HUGE_NEW: a new zeroed THP folio, exclusive
    (writable if the VMA is) or not (read-only, as after a fork whose other side is gone);
    HUGE_ZERO: the huge zero folio; head >= 0: the THP another imported process maps by a
    PMD, shared as copy_huge_pmd shares it (read-only). Each with its deposited table.
    Returns the folio's head, -1 if a frame is missing (upper tables allocated on the way
    stay, as after a failed fault), -2 if the PMD entry is not none or head is not a
    PMD-mapped THP."""
    cdef physmem_t* pm = &core.phys.pm
    cdef vma_t v
    cdef pte_t* pmdp
    cdef pte_t e
    cdef pfn_t t
    cdef int rc = 0
    vma_from_py(&v, vma)
    if addr & (PMD_SIZE - 1) or addr < v.start or addr + PMD_SIZE > v.end:
        raise ValueError("the 2 MiB span is not aligned inside the VMA")
    if head >= 0 and (head >= pm.nframes or not (pm.flags[head] & PG_HEAD) or pm.pt_share[head] < 1):
        return -2
    pmdp = _none_pmd(pm, &core.mm, addr, &rc)
    if pmdp == NULL:
        return rc
    if head == HUGE_ZERO and not get_huge_zero_folio(pm):
        return -1
    t = pgtable_alloc(pm, &core.mm, LEVEL_PTE)
    if t < 0:
        return -1
    if head == HUGE_NEW:
        head = alloc_pages(pm, HPAGE_PMD_ORDER, False, True)
        if head < 0:
            pgtable_free(pm, &core.mm, t, LEVEL_PTE)
            return -1
        prep_compound_page(pm, head)
        folio_add_new_anon_rmap_pmd(pm, head, core.mm.rss, exclusive)
    elif head == HUGE_ZERO:
        head = pm.huge_zero_pfn
        exclusive = False
    else:
        folio_dup_rmap_pmd(pm, head, core.mm.rss)
        exclusive = False
    e = mk_huge_pmd(head, &v) if exclusive else pte_wrprotect(
        mk_pte(head, v.prot) | _bit(BIT_PSE) | _bit(BIT_ACCESSED))
    pgtable_trans_huge_deposit(pm, &core.mm, t)
    set_pmd_at(pm, pmdp, e)
    return head


def huge_pmd_head(MMCore core, uint64_t addr):
    """The folio head a huge PMD maps at addr, or -1 (no huge PMD there)."""
    cdef pte_t* pmdp
    if core.mm.pgd < 0:
        return -1
    pmdp = pmd_offset(&core.phys.pm, &core.mm, addr)
    if pmdp == NULL or not pmd_leaf(pmdp[0]):
        return -1
    return pte_pfn(pmdp[0])


# ---- PMD-sized page-cache folios (mm/filemap.c, mm/huge_memory.c) ----

def filemap_alloc_folio_pmd(PhysMem phys, PageCache cache, int64_t index, bint swapbacked):
    """__filemap_get_folio(FGP_CREAT) at order 9, as ext4's write_begin asks for a write
    that covers the aligned 2 MiB at index whole: a zeroed order-9 folio enters the cache
    at the 512 indexes from index (aligned, all holes). Its head, or -1 when no order-9
    block is free (the caller goes on with single pages, as the kernel's order loop does)
    or the cache's tree has no host memory; nothing changed then."""
    cdef physmem_t* pm = &phys.pm
    cdef pfn_t head
    cdef int64_t i, j
    if index < 0 or index & (HPAGE_PMD_NR - 1):
        raise ValueError("a PMD-sized folio's index must be 512-aligned")
    for i in range(HPAGE_PMD_NR):
        if xa_load(&cache.xa, index + i) >= 0:
            raise ValueError(f"page {index + i} is cached already")
    head = alloc_pages(pm, HPAGE_PMD_ORDER, False, True)
    if head < 0:
        return -1
    for i in range(HPAGE_PMD_NR):
        if xa_store(&cache.xa, index + i, head + i) < 0:
            for j in range(i):
                xa_erase(&cache.xa, index + j)
            free_pages(pm, head, HPAGE_PMD_ORDER)
            return -1
    prep_compound_page(pm, head)
    filemap_add_folio_pmd(pm, head, swapbacked)
    return head


cdef int _cache_folio(physmem_t* pm, pfn_t head) except -1:
    """ValueError unless head heads a PMD-sized page-cache folio."""
    if not (0 <= head < pm.nframes) or (pm.flags[head] & (PG_HEAD | PG_FILE)) != PG_HEAD | PG_FILE:
        raise ValueError(f"frame {head} does not head a page-cache folio")
    return 0


def filemap_remove_folio_pmd(PhysMem phys, pfn_t head, bint swapbacked):
    """filemap_remove_folio + folio_put of a whole PMD-sized page-cache folio nothing maps
    (the caller has cleared its 512 indexes): the order-9 block is freed. ValueError if
    head is not such a folio, or it is still mapped."""
    cdef physmem_t* pm = &phys.pm
    _cache_folio(pm, head)
    if pm.refcount[head] != 1:
        raise ValueError(f"page-cache folio {head} is still mapped")
    pm.nr_file_pages -= HPAGE_PMD_NR
    if swapbacked:
        pm.nr_shmem -= HPAGE_PMD_NR
        pm.nr_shmem_thps -= 1
    else:
        pm.nr_file_thps -= 1
    put_page(pm, head)


def split_shmem_folio(PhysMem phys, pfn_t head):
    """split_folio of a PMD-sized shmem folio nothing maps (shmem_undo_range's
    truncate_inode_partial_folio, after unmap_folio: a page-cache folio's mappings are
    dropped, not remapped): its 512 pages stay cached at their indexes as single pages
    (the cache's reference on each), thp_split_page. 6.18 splits non-uniformly
    (try_folio_split_to_order), keeping folios of orders 1-8 away from the cut: left out.
    ValueError if head is not such a folio or it is still mapped."""
    cdef physmem_t* pm = &phys.pm
    cdef int64_t i
    _cache_folio(pm, head)
    if not (pm.flags[head] & PG_SWAPBACKED):
        raise ValueError(f"page-cache folio {head} is not shmem")
    if pm.refcount[head] != 1:
        raise ValueError(f"shmem folio {head} is still mapped")
    for i in range(HPAGE_PMD_NR):
        pm.flags[head + i] &= ~(PG_HEAD | PG_TAIL | PG_PARTIALLY_MAPPED)
        pm.refcount[head + i] = 1
    pm.nr_shmem_thps -= 1
    pm.ev[EV_THP_SPLIT_PAGE] += 1


def folio_zero_range(PhysMem phys, pfn_t head, int64_t start, int64_t end, bint truncating):
    """truncate_inode_partial_folio (a truncate) or truncate_inode_pages_range's partial
    folio (a hole punched) for a PMD-sized page-cache folio: its split fails, since it is
    dirty, so bytes [start, end) of it (offsets in the folio) are zeroed and it stays whole
    in the cache; a truncate counts thp_split_page_failed."""
    cdef physmem_t* pm = &phys.pm
    _cache_folio(pm, head)
    if not 0 <= start <= end <= PMD_SIZE:
        raise ValueError("range outside the folio")
    memset(pm.mem + (<uint64_t>head << PAGE_SHIFT) + start, 0, end - start)
    if truncating:
        pm.ev[EV_THP_SPLIT_PAGE_FAILED] += 1


def install_file_pmd(MMCore core, object vma, uint64_t addr):
    """The importer's file PMD at addr (2 MiB aligned inside a file or shmem VMA whose
    offset is aligned with it, its PMD entry none), as do_set_pmd at a read fault makes
    it: the PMD-sized folio cached at the aligned index (filemap_alloc_folio_pmd put it
    there) mapped young with vm_page_prot (writable only in a shared shmem VMA). Returns
    the folio's head, -1 if a frame for an upper table is missing (tables allocated on the
    way stay, as after a failed fault), -2 if the PMD entry is not none or no PMD-sized
    folio is cached there."""
    cdef physmem_t* pm = &core.phys.pm
    cdef vma_t v
    cdef pte_t* pmdp
    cdef pfn_t head
    cdef int64_t idx
    cdef int rc = 0
    vma_from_py(&v, vma)
    if addr & (PMD_SIZE - 1) or addr < v.start or addr + PMD_SIZE > v.end or v.cache == NULL:
        raise ValueError("the 2 MiB span is not aligned inside a file VMA")
    idx = v.pgoff + <int64_t>((addr - v.start) >> PAGE_SHIFT)
    head = xa_load(v.cache, idx)
    if idx & (HPAGE_PMD_NR - 1) or head < 0 or not (pm.flags[head] & PG_HEAD):
        return -2
    pmdp = _none_pmd(pm, &core.mm, addr, &rc)
    if pmdp == NULL:
        return rc
    map_file_pmd(pm, &core.mm, pmdp, head, mk_pte(head, v.prot) | _bit(BIT_PSE) | _bit(BIT_ACCESSED))
    return head
