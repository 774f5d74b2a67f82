from libc.stdint cimport int64_t, uint64_t
from mmemu._core.types cimport pte_t, pfn_t, _bit, BIT_RW, pmd_leaf
from mmemu._core.physmem cimport physmem_t
from mmemu._core.pagetable cimport mm_t

cdef inline bint pmd_cow(pte_t pmd) noexcept nogil:
    """A PMD entry with RW clear marks a COW-shared (or not yet reused) PTE table (a huge
    PMD, a leaf, links no table)."""
    return pmd != 0 and (pmd & _bit(BIT_RW)) == 0 and not pmd_leaf(pmd)

cdef int break_cow_pte(physmem_t* pm, mm_t* mm, pte_t* pmdp, uint64_t addr) noexcept nogil
cdef void cow_pte_drop(physmem_t* pm, mm_t* mm, pte_t* pmdp, uint64_t addr) noexcept nogil
cdef int64_t account_table_pages(physmem_t* pm, mm_t* mm, pfn_t table, int sign) noexcept nogil
cdef void cow_pte_adopt(physmem_t* pm, mm_t* mm, pfn_t table) noexcept nogil
