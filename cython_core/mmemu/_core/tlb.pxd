"""TLB flush accounting: the CONFIG_DEBUG_TLBFLUSH counters where the modelled kernel flushes.

Models arch/x86/mm/tlb.c flush_tlb_mm_range / flush_tlb_func (and flush_tlb_page,
flush_tlb_mm, flush_tlb_range built on it) and the range bookkeeping of mm/mmu_gather.c
(tlb_gather_mmu, tlb_flush_pte_range, tlb_finish_mmu). A range of more than
tlb_single_page_flush_ceiling (33) pages, or TLB_FLUSH_ALL, is one full flush
(NR_TLB_LOCAL_FLUSH_ALL); a shorter one invalidates page by page and counts each
(NR_TLB_LOCAL_FLUSH_ONE += pages). One CPU is modelled and every flush is of the mm that
runs on it (syscalls, faults, fork in the parent, exit), so every flush is local and the
remote counters stay 0. Leaves out: the TLB itself (nothing is cached), PCID/ASIDs,
lazy-TLB mode (an exiting mm is counted as loaded), INVLPGB.
"""
from libc.stdint cimport uint64_t
from mmemu._core.types cimport (
    PAGE_SHIFT, PAGE_SIZE, EV_TLB_LOCAL_FLUSH_ALL, EV_TLB_LOCAL_FLUSH_ONE,
)
from mmemu._core.physmem cimport physmem_t
from mmemu._core.pagetable cimport mm_t

cdef enum:
    TLB_SINGLE_PAGE_FLUSH_CEILING = 33      # arch/x86/mm/tlb.c tlb_single_page_flush_ceiling

cdef extern from *:
    """
    #define MM_TLB_FLUSH_ALL (~0ULL)
    """
    const uint64_t TLB_FLUSH_ALL "MM_TLB_FLUSH_ALL"


cdef inline void flush_tlb_mm_range(physmem_t* pm, mm_t* mm, uint64_t start, uint64_t end) noexcept nogil:
    """flush_tlb_mm_range(mm, start, end, PAGE_SHIFT, ...) on the CPU running mm:
    flush_tlb_func's full flush above the ceiling, else one invalidation per page."""
    cdef uint64_t pages
    if end == TLB_FLUSH_ALL or end <= start:
        pm.ev[EV_TLB_LOCAL_FLUSH_ALL] += 1
        return
    pages = (end - start) >> PAGE_SHIFT
    if pages > TLB_SINGLE_PAGE_FLUSH_CEILING:
        pm.ev[EV_TLB_LOCAL_FLUSH_ALL] += 1
    else:
        pm.ev[EV_TLB_LOCAL_FLUSH_ONE] += pages


cdef inline void flush_tlb_page(physmem_t* pm, mm_t* mm, uint64_t addr) noexcept nogil:
    """flush_tlb_page (ptep_clear_flush): one page of mm."""
    flush_tlb_mm_range(pm, mm, addr, addr + PAGE_SIZE)


cdef inline void flush_tlb_mm(physmem_t* pm, mm_t* mm) noexcept nogil:
    """flush_tlb_mm: all of mm (dup_mmap's flush of the parent)."""
    flush_tlb_mm_range(pm, mm, 0, TLB_FLUSH_ALL)


cdef struct mmu_gather:
    uint64_t start          # range of the entries cleared or changed so far (start >= end: none)
    uint64_t end
    bint fullmm             # exit_mmap: the whole mm is flushed once


cdef inline void tlb_gather_mmu(mmu_gather* tlb, bint fullmm) noexcept nogil:
    """tlb_gather_mmu / tlb_gather_mmu_fullmm: an empty range."""
    tlb.start = TLB_FLUSH_ALL
    tlb.end = 0
    tlb.fullmm = fullmm


cdef inline void tlb_flush_pte_range(mmu_gather* tlb, uint64_t addr, uint64_t size) noexcept nogil:
    """tlb_flush_pte_range (tlb_remove_tlb_entry): the range grows to cover [addr, addr+size)."""
    if addr < tlb.start:
        tlb.start = addr
    if addr + size > tlb.end:
        tlb.end = addr + size


cdef inline void tlb_finish_mmu(physmem_t* pm, mm_t* mm, mmu_gather* tlb) noexcept nogil:
    """tlb_finish_mmu -> tlb_flush_mmu_tlbonly -> tlb_flush: nothing if nothing was
    gathered, else flush_tlb_mm_range over the gathered range (all of mm for fullmm)."""
    if tlb.end == 0:
        return
    if tlb.fullmm:
        flush_tlb_mm(pm, mm)
    else:
        flush_tlb_mm_range(pm, mm, tlb.start, tlb.end)
    tlb_gather_mmu(tlb, tlb.fullmm)
