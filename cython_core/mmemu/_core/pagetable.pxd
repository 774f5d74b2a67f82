from libc.stdint cimport int32_t, int64_t, uint64_t
from mmemu._core.types cimport pte_t, pfn_t
from mmemu._core.physmem cimport physmem_t, PhysMem
from mmemu._core.filemap cimport xarray_t

cdef enum:
    LEVEL_PTE = 1
    LEVEL_PMD = 2
    LEVEL_PUD = 3
    LEVEL_PGD = 4

cdef struct mm_t:
    pfn_t pgd
    int64_t rss[4]          # MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES
    int64_t pgtables_bytes  # VmPTE * 1024: PUD, PMD and PTE tables (the PGD is not counted)
    int32_t id
    int64_t slot            # index in the registry of live mms (physmem_t.mms), -1 if none
    pfn_t pmd_huge_pte      # deposited PTE tables (pgtable_trans_huge_deposit): the first,
    int64_t nr_deposited    #   linked through buddy_next (page->lru), and how many
    int64_t nr_file_pmds    # huge PMDs mapping page-cache folios (do_set_pmd; no deposit)

# What the kernels need to know of one VMA (a flattened vm_area_struct).
cdef struct vma_t:
    uint64_t start
    uint64_t end
    uint64_t flags          # VM_*
    pte_t prot              # vm_page_prot
    int64_t pgoff           # in pages
    xarray_t* cache         # page cache of the backing object (filemap.pxd xa_load); NULL if anon
    int64_t cache_pages     # size of the backing object in pages (SIGBUS at or beyond)
    int has_vm_ops          # backed by a file or shmem object (do_fault), else anonymous
    int swapbacked          # shmem backing: RssShmem, Shmem
    int anon_vma            # in/out: the VMA has an anon_vma (set by anon faults)
    int thp                 # a PMD-sized THP may be faulted in (thp_vma_allowable_order)

cdef pfn_t pgtable_alloc(physmem_t* pm, mm_t* mm, int level) noexcept nogil
cdef void pgtable_free(physmem_t* pm, mm_t* mm, pfn_t pfn, int level) noexcept nogil
cdef pte_t* pmd_offset(physmem_t* pm, mm_t* mm, uint64_t addr) noexcept nogil
cdef pte_t* pmd_offset_alloc(physmem_t* pm, mm_t* mm, uint64_t addr) noexcept nogil
cdef pte_t* pte_offset(physmem_t* pm, mm_t* mm, uint64_t addr, pte_t** pmdp) noexcept nogil
cdef pte_t* pte_offset_alloc(physmem_t* pm, mm_t* mm, uint64_t addr, pte_t** pmdp) noexcept nogil
cdef int tables_needed(physmem_t* pm, mm_t* mm, uint64_t addr) noexcept nogil
cdef void free_pgd_range(physmem_t* pm, mm_t* mm, uint64_t addr, uint64_t end,
                         uint64_t floor, uint64_t ceiling) noexcept nogil
cdef void free_all_tables(physmem_t* pm, mm_t* mm) noexcept nogil

cdef class MMCore:
    cdef mm_t mm
    cdef PhysMem phys
    cdef void _unregister(self)
    cdef _restore_state(self, dict s)

cdef int vma_from_py(vma_t* v, object vma) except -1
