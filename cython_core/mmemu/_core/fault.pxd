from libc.stdint cimport int64_t, uint64_t
from mmemu._core.types cimport pte_t, pfn_t
from mmemu._core.physmem cimport physmem_t
from mmemu._core.pagetable cimport mm_t, vma_t

cdef int handle_mm_fault(physmem_t* pm, mm_t* mm, vma_t* vma, uint64_t addr, bint write) noexcept nogil
