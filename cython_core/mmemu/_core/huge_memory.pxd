"""Transparent huge pages: anonymous THPs and PMD-mapped page-cache folios (mm/huge_memory.c,
do_set_pmd): see huge_memory.pyx."""
from libc.stdint cimport int64_t, uint64_t
from mmemu._core.types cimport pte_t, pfn_t, pte_pfn, PMD_SIZE
from mmemu._core.physmem cimport physmem_t
from mmemu._core.pagetable cimport mm_t, vma_t

cdef enum:
    FAULT_FALLBACK = -1     # VM_FAULT_FALLBACK: go on with base pages (after a split)


cdef inline bint thp_vma_suitable(vma_t* vma, uint64_t addr) noexcept nogil:
    """thp_vma_allowable_order (the policy, vma.thp, decided in Python; for a file VMA:
    do_set_pmd's vma_thp_disabled) and thp_vma_suitable_order: the aligned 2 MiB around
    addr lies inside the VMA (do_set_pmd checks the file offset's alignment)."""
    cdef uint64_t haddr = addr & ~(PMD_SIZE - 1)
    return vma.thp != 0 and haddr >= vma.start and haddr + PMD_SIZE <= vma.end


cdef inline bint is_huge_zero_pmd(physmem_t* pm, pte_t e) noexcept nogil:
    """is_huge_zero_pmd: the PMD maps the huge zero folio."""
    return pte_pfn(e) == pm.huge_zero_pfn


cdef void pgtable_trans_huge_deposit(physmem_t* pm, mm_t* mm, pfn_t t) noexcept nogil
cdef void prep_compound_page(physmem_t* pm, pfn_t head) noexcept nogil
cdef pte_t mk_huge_pmd(pfn_t pfn, vma_t* vma) noexcept nogil
cdef int do_huge_pmd_anonymous_page(physmem_t* pm, mm_t* mm, vma_t* vma, pte_t* pmdp,
                                    bint write) noexcept nogil
cdef int huge_pmd_fault(physmem_t* pm, mm_t* mm, vma_t* vma, pte_t* pmdp, bint write) noexcept nogil
cdef int huge_pmd_access(physmem_t* pm, mm_t* mm, vma_t* vma, pte_t* pmdp, bint write) noexcept nogil
cdef void split_huge_pmd(physmem_t* pm, mm_t* mm, pte_t* pmdp) noexcept nogil
cdef int copy_huge_pmd(physmem_t* pm, mm_t* dst_mm, pte_t* dst_pmd, pte_t* src_pmd) noexcept nogil
cdef void zap_huge_pmd(physmem_t* pm, mm_t* mm, pte_t* pmdp) noexcept nogil
cdef int change_huge_pmd(physmem_t* pm, pte_t* pmdp, pte_t newprot, bint try_writable,
                         bint shared) noexcept nogil
cdef void map_file_pmd(physmem_t* pm, mm_t* mm, pte_t* pmdp, pfn_t head, pte_t e) noexcept nogil
cdef int do_set_pmd(physmem_t* pm, mm_t* mm, vma_t* vma, pte_t* pmdp, uint64_t addr,
                    bint write) noexcept nogil
