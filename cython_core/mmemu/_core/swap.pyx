# cython: language_level=3
"""The emulated swap device: swap slots with a swap count (swap_map) and 4 KiB of data
each, swap entries in PTEs (x86-64 encoding, type 0), and the walks around them.

Models swap_duplicate / free_swap_and_cache (the inline helpers in physmem.pxd, used by
fork and zap), do_swap_page (fault.pyx) and the per-entry part of reclaim that writes an
exclusive anonymous page to swap (try_to_unmap_one for swap-backed pages). Leaves out
the swap cache: a page read back is a new page of the faulting process.
"""
from libc.stdint cimport uint8_t, uint32_t, int32_t, int64_t, uint64_t
from libc.string cimport memcpy

cimport numpy as cnp
import numpy as np

from mmemu._core.types cimport *
from mmemu._core.physmem cimport physmem_t, PhysMem, frame_ptr, table_ptr, put_page, swap_dup
from mmemu._core.pagetable cimport mm_t, MMCore, pte_offset, pte_offset_alloc, pmd_walk_next


def attach(PhysMem phys, cnp.ndarray swap_map, cnp.ndarray swap_data):
    """Point the machine at its swap arrays (int32 counts, uint8 slots x 4096), which the
    PhysMem keeps alive while it points into them; the caller copies the old contents when
    it grows them."""
    if swap_map.dtype != np.int32 or swap_data.dtype != np.uint8:
        raise TypeError("swap_map int32, swap_data uint8")
    if swap_data.shape[0] != swap_map.shape[0] * 4096 or not swap_map.flags.c_contiguous \
            or not swap_data.flags.c_contiguous:
        raise ValueError("swap_data must hold 4096 bytes per slot, both contiguous")
    phys._swap_arrays = (swap_map, swap_data)
    phys.pm.swap_map = <int32_t*>cnp.PyArray_DATA(swap_map)
    phys.pm.swap_data = <uint8_t*>cnp.PyArray_DATA(swap_data)
    phys.pm.swap_slots = swap_map.shape[0]
    phys.pm.nr_swap_used = int(np.count_nonzero(swap_map))


def nr_swap_used(PhysMem phys):
    return phys.pm.nr_swap_used


def swap_out(MMCore core, uint64_t start, uint64_t end, const int64_t[::1] slots):
    """Write the exclusive anonymous pages of [start, end) to the given free slots (one
    per page, in order) and leave swap entries: rmap, rss and the page reference go as
    reclaim drops them. Returns how many pages went (other entries are left alone)."""
    cdef physmem_t* pm = &core.phys.pm
    cdef mm_t* mm = &core.mm
    cdef uint64_t addr = start
    cdef pte_t* ptep
    cdef pte_t e
    cdef pfn_t pfn
    cdef uint32_t fl
    cdef int64_t n = 0, slot
    with nogil:
        while addr < end:
            ptep = pte_offset(pm, mm, addr, NULL)
            if ptep != NULL:
                e = ptep[0]
                if pte_present(e) and not pte_special(e):
                    pfn = pte_pfn(e)
                    fl = pm.flags[pfn]
                    if (fl & PG_ANON) and pm.mapcount[pfn] == 1 and pm.refcount[pfn] == 1 \
                            and n < slots.shape[0]:
                        slot = slots[n]
                        memcpy(pm.swap_data + (<uint64_t>slot << PAGE_SHIFT), frame_ptr(pm, pfn), 4096)
                        pm.swap_map[slot] = 1
                        pm.nr_swap_used += 1
                        pm.mapcount[pfn] = 0
                        pm.nr_anon_mapped -= 1
                        mm.rss[MM_ANONPAGES] -= 1
                        mm.rss[MM_SWAPENTS] += 1
                        ptep[0] = mk_swap_pte(slot)
                        put_page(pm, pfn)
                        pm.ev[EV_SWAPOUT] += 1
                        n += 1
            addr += PAGE_SIZE
    return n


def install_swap_entries(MMCore core, const uint64_t[::1] addrs, const int64_t[::1] slots):
    """Put a swap entry for slots[i] at addrs[i] (importing swapped pages): the slot's
    count rises by one per entry. Returns 0, or -1 if a page table could not be had."""
    cdef physmem_t* pm = &core.phys.pm
    cdef mm_t* mm = &core.mm
    cdef int64_t i
    cdef int rc = 0
    cdef pte_t* ptep
    for i in range(addrs.shape[0]):
        if slots[i] < 0 or slots[i] >= pm.swap_slots:
            raise ValueError(f"slot {slots[i]} outside the swap device")
    with nogil:
        for i in range(addrs.shape[0]):
            ptep = pte_offset_alloc(pm, mm, addrs[i], NULL)
            if ptep == NULL:
                rc = -1
                break
            if ptep[0] != 0:
                continue
            if pm.swap_map[slots[i]] == 0:
                pm.nr_swap_used += 1
            swap_dup(pm, slots[i])
            ptep[0] = mk_swap_pte(slots[i])
            mm.rss[MM_SWAPENTS] += 1
    return rc


def swap_spans(MMCore core):
    """PMD spans (addr >> 21) whose PTE table holds a swap entry (COW page tables copy
    those tables at fork instead of sharing them)."""
    cdef physmem_t* pm = &core.phys.pm
    cdef uint64_t addr = 0, end = 1ULL << 47
    cdef pte_t* pmd
    cdef pte_t* t
    cdef int i
    out = []
    if core.mm.rss[MM_SWAPENTS] == 0:
        return np.empty(0, dtype=np.int64)
    while True:
        pmd = pmd_walk_next(pm, &core.mm, &addr, end)
        if pmd == NULL:
            break
        if pmd[0] != 0:
            t = table_ptr(pm, pte_pfn(pmd[0]))
            for i in range(512):
                if is_swap_pte(t[i]):
                    out.append(addr >> 21)
                    break
        addr = pmd_addr_end(addr, end)
        if addr == end:
            break
    return np.array(out, dtype=np.int64)


def count_refs(MMCore core, cnp.ndarray[cnp.int64_t, ndim=1] refs):
    """Add this mm's swap entries to refs[slot] (the checker's recount); returns the count
    of entries naming a slot outside the device."""
    cdef physmem_t* pm = &core.phys.pm
    cdef uint64_t addr = 0, end = 1ULL << 47
    cdef pte_t* pmd
    cdef pte_t* t
    cdef int i
    cdef int64_t slot, bad = 0
    while True:
        pmd = pmd_walk_next(pm, &core.mm, &addr, end)
        if pmd == NULL:
            break
        if pmd[0] != 0:
            t = table_ptr(pm, pte_pfn(pmd[0]))
            for i in range(512):
                if is_swap_pte(t[i]):
                    slot = swap_pte_slot(t[i])
                    if 0 <= slot < refs.shape[0]:
                        refs[slot] += 1
                    else:
                        bad += 1
        addr = pmd_addr_end(addr, end)
        if addr == end:
            break
    return bad
