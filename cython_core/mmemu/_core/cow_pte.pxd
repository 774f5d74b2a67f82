from libc.stdint cimport int64_t, uint64_t
from mmemu._core.types cimport pte_t, pfn_t, _bit, BIT_RW, pmd_leaf
from mmemu._core.physmem cimport physmem_t
from mmemu._core.pagetable cimport mm_t

cdef inline bint pmd_cow(pte_t pmd) noexcept nogil:
    """A PMD entry with RW clear marks a COW-shared (or not yet reused) PTE table (a huge
    PMD, a leaf, links no table)."""
    return pmd != 0 and (pmd & _bit(BIT_RW)) == 0 and not pmd_leaf(pmd)

# cow_range's walk state (shared with cow_pgtable.pyx's upper-level callbacks)
cdef enum:
    BELOW_PRIVATE = 0       # the entries above are writable: the tables below are as they say
    BELOW_COW = 1           # an upper table is (to be) reused: the entries below turn read-only
    BELOW_COPY = 2          # an upper table is (to be) copied: every table below gets shared

cdef struct cow_walk:
    uint64_t start
    uint64_t end
    int mode
    int64_t n
    int below_pgd           # BELOW_* for the PUD entries under the current PGD entry
    int below_pud           # BELOW_* for the PMD entries under the current PUD entry

cdef void table_rss(physmem_t* pm, pfn_t table, int64_t* out) noexcept nogil
cdef int break_cow_pte(physmem_t* pm, mm_t* mm, pte_t* pmdp, uint64_t addr) noexcept nogil
cdef void cow_pte_drop(physmem_t* pm, mm_t* mm, pte_t* pmdp, uint64_t addr) noexcept nogil
cdef int64_t account_table_pages(physmem_t* pm, mm_t* mm, pfn_t table, int sign) noexcept nogil
cdef void cow_pte_adopt(physmem_t* pm, mm_t* mm, pfn_t table) noexcept nogil
