from libc.stdint cimport uint8_t, uint64_t
from mmemu._core.types cimport (
    pte_t, pfn_t, mk_pte, pte_mkwrite, pte_mkdirty, pte_wrprotect, _bit, BIT_ACCESSED,
    BIT_SPECIAL, VM_WRITE,
)
from mmemu._core.physmem cimport physmem_t
from mmemu._core.pagetable cimport mm_t, vma_t
from mmemu._core.pgtable cimport set_pte_at
from mmemu._core.rmap cimport folio_get, folio_add_file_rmap_pte


cdef inline pte_t mk_anon_pte(pfn_t pfn, vma_t* vma) noexcept nogil:
    """do_anonymous_page's entry for a new exclusive page: mk_pte(vm_page_prot), young,
    and dirty + writable if the VMA is writable (wp_page_copy, do_swap_page alike)."""
    cdef pte_t e = mk_pte(pfn, vma.prot) | _bit(BIT_ACCESSED)
    if vma.flags & VM_WRITE:
        e = pte_mkwrite(pte_mkdirty(e))
    return e


cdef inline pte_t mk_zero_pte(physmem_t* pm, vma_t* vma) noexcept nogil:
    """do_anonymous_page's entry on a read: the zero page, special, read-only, young."""
    return pte_wrprotect(mk_pte(pm.zero_pfn, vma.prot)) | _bit(BIT_SPECIAL) | _bit(BIT_ACCESSED)


cdef inline void set_pte_range(physmem_t* pm, mm_t* mm, vma_t* vma, pte_t* ptep, pfn_t pfn,
                               bint write) noexcept nogil:
    """set_pte_range for one page-cache page (finish_fault, filemap_map_pages): a reference
    and the file rmap for the PTE, then a young entry, dirty and writable on a write."""
    cdef pte_t e = mk_pte(pfn, vma.prot) | _bit(BIT_ACCESSED)
    if write:
        e = pte_mkwrite(pte_mkdirty(e))
    folio_get(pm, pfn)
    folio_add_file_rmap_pte(pm, pfn, mm.rss)
    set_pte_at(pm, ptep, e)


cdef int handle_mm_fault(physmem_t* pm, mm_t* mm, vma_t* vma, uint64_t addr, bint write) noexcept nogil
cdef int access_range(physmem_t* pm, mm_t* mm, vma_t* vma, uint64_t start, uint64_t end,
                      bint write, uint8_t* buf, int mode, uint64_t* fail_addr) noexcept nogil
