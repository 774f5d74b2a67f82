from libc.stdint cimport int64_t, uint64_t
from mmemu._core.types cimport pte_t, pfn_t
from mmemu._core.physmem cimport physmem_t
from mmemu._core.pagetable cimport mm_t
from mmemu._core.pagewalk cimport mm_walk

cdef enum:
    COW_LEVEL_NONE = 0      # classic fork: every table copied
    COW_LEVEL_PTE = 1       # share PTE tables (the COW page table series)
    COW_LEVEL_PMD = 2       # share PMD tables (and everything under them)
    COW_LEVEL_PUD = 3       # share PUD tables

cdef inline int table_share(physmem_t* pm, pfn_t t) noexcept nogil:
    """Entries linking an upper-level table: pt_share, where 0 (never shared) means 1."""
    return pm.pt_share[t] if pm.pt_share[t] > 1 else 1

cdef void wrprotect_ptes(physmem_t* pm, pfn_t table) noexcept nogil
cdef bint pgtable_path_cow(physmem_t* pm, mm_t* mm, uint64_t addr) noexcept nogil
cdef int break_cow_pgtable(physmem_t* pm, mm_t* mm, uint64_t addr, int64_t extra) noexcept nogil
cdef void share_cow_table(physmem_t* pm, mm_t* dst_mm, pte_t* sentry, pte_t* dentry, int level,
                          bint src_private) noexcept nogil
cdef int cow_pgd_entry(pte_t* pgd, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil
cdef int cow_pud_entry(pte_t* pud, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil
