# Pagemap entry bits (fs/proc/task_mmu.c, Documentation/admin-guide/mm/pagemap.rst): the
# one definition; task_mmu.pyx writes them, mmemu._core.constants gives them to Python.
from libc.stdint cimport uint64_t

cdef extern from *:
    """
    #define MM_PM_PFN_MASK ((1ULL << 55) - 1)
    #define MM_PM_SOFT_DIRTY (1ULL << 55)
    #define MM_PM_MMAP_EXCLUSIVE (1ULL << 56)
    #define MM_PM_GUARD_REGION (1ULL << 58)
    #define MM_PM_FILE (1ULL << 61)
    #define MM_PM_SWAP (1ULL << 62)
    #define MM_PM_PRESENT (1ULL << 63)
    /* a guard marker reads as a swap entry of the marker type (31) with PTE_MARKER_GUARD
       (4) as its offset, swp_type | offset << 5 -- 0x440000000000009f, verified on 6.18 */
    #define MM_PM_GUARD_ENTRY (MM_PM_SWAP | MM_PM_GUARD_REGION | 31 | (4 << 5))
    """
    const uint64_t PM_PFN_MASK "MM_PM_PFN_MASK"
    const uint64_t PM_SOFT_DIRTY "MM_PM_SOFT_DIRTY"
    const uint64_t PM_MMAP_EXCLUSIVE "MM_PM_MMAP_EXCLUSIVE"
    const uint64_t PM_GUARD_REGION "MM_PM_GUARD_REGION"
    const uint64_t PM_FILE "MM_PM_FILE"
    const uint64_t PM_SWAP "MM_PM_SWAP"
    const uint64_t PM_PRESENT "MM_PM_PRESENT"
    const uint64_t PM_GUARD_ENTRY "MM_PM_GUARD_ENTRY"
