# cython: language_level=3
"""The emulated swap device: swap slots with a swap count (swap_map) and 4 KiB of data
each, swap entries in PTEs (x86-64 encoding, type 0), and the walks around them. The
device has a fixed size (Machine(swap=...)) and lives in host MAP_NORESERVE mappings.

Models swapon, get_swap_pages (the lowest free slot first; no clusters),
swap_duplicate / free_swap_and_cache (the inline helpers in physmem.pxd, used by fork and
zap), do_swap_page (fault.pyx) and the per-entry part of reclaim that writes an exclusive
anonymous page to swap (shrink_folio_list / try_to_unmap_one for swap-backed pages).
Leaves out the swap cache: a page read back is a new page of the faulting process.
"""
from libc.stdint cimport uint8_t, uint32_t, int32_t, int64_t, uint64_t
from libc.string cimport memcpy

import numpy as np

from mmemu._core.types cimport *
from mmemu._core.physmem cimport physmem_t, PhysMem, frame_ptr, table_ptr, put_page, swap_dup
from mmemu._core.pagetable cimport mm_t, MMCore, pte_offset_alloc, pmd_walk_next


def attach(PhysMem phys, int64_t nslots):
    """swapon: give the machine a swap device of nslots slots. Its swap map (int32 count
    per slot) and its data (4 KiB per slot) are host MAP_NORESERVE mappings owned by phys:
    the host pays only for the slots that are used."""
    cdef physmem_t* pm = &phys.pm
    if pm.swap_slots or pm.swap_map != NULL:
        raise ValueError("the machine has a swap device already")
    if nslots < 0:
        raise ValueError(f"{nslots} swap slots")
    if nslots:
        pm.swap_map = <int32_t*>phys._map(<size_t>nslots * sizeof(int32_t), False)
        pm.swap_data = <uint8_t*>phys._map(<size_t>nslots * PAGE_SIZE, False)
    pm.swap_slots = nslots
    pm.nr_swap_used = 0
    pm.swap_hwm = 0


def nr_swap_used(PhysMem phys):
    return phys.pm.nr_swap_used


def swap_slots(PhysMem phys):
    return phys.pm.swap_slots


cdef int64_t get_swap_page(physmem_t* pm, int64_t* cursor) noexcept nogil:
    """get_swap_pages for one slot: the lowest free slot at or after *cursor (which moves
    past it), or -1 when the device is full. The slot stays free until a swap entry
    takes it."""
    cdef int64_t s = cursor[0]
    if pm.nr_swap_used >= pm.swap_slots:
        return -1
    while s < pm.swap_slots and pm.swap_map[s] != 0:
        s += 1
    if s >= pm.swap_slots:
        return -1
    cursor[0] = s + 1
    if s >= pm.swap_hwm:
        pm.swap_hwm = s + 1
    return s


def alloc_slots(PhysMem phys, int64_t n):
    """n free slots, lowest first (fewer if the device has fewer free)."""
    cdef int64_t cursor = 0, k = 0, s
    out = np.empty(max(n, 0), dtype=np.int64)
    cdef int64_t[::1] o = out
    while k < n:
        s = get_swap_page(&phys.pm, &cursor)
        if s < 0:
            break
        o[k] = s
        k += 1
    return out[:k]


def used_slots(PhysMem phys):
    """(slots, counts): every slot holding a page, in slot order (int64, int32)."""
    cdef physmem_t* pm = &phys.pm
    cdef int64_t s, k = 0
    for s in range(pm.swap_hwm):
        k += pm.swap_map[s] != 0
    slots = np.empty(k, dtype=np.int64)
    counts = np.empty(k, dtype=np.int32)
    cdef int64_t[::1] so = slots
    cdef int32_t[::1] co = counts
    k = 0
    for s in range(pm.swap_hwm):
        if pm.swap_map[s] != 0:
            so[k] = s
            co[k] = pm.swap_map[s]
            k += 1
    return slots, counts


def read_slots(PhysMem phys, const int64_t[::1] slots):
    """The 4096 bytes of each slot (a copy, one row per slot)."""
    cdef physmem_t* pm = &phys.pm
    cdef int64_t i
    for i in range(slots.shape[0]):
        if not 0 <= slots[i] < pm.swap_slots:
            raise ValueError(f"slot {slots[i]} outside the swap device")
    out = np.empty((slots.shape[0], PAGE_SIZE), dtype=np.uint8)
    cdef uint8_t[:, ::1] o = out
    for i in range(slots.shape[0]):
        memcpy(&o[i, 0], pm.swap_data + (<uint64_t>slots[i] << PAGE_SHIFT), PAGE_SIZE)
    return out


def restore_slots(PhysMem phys, const int64_t[::1] slots, const int32_t[::1] counts,
                  const uint8_t[:, ::1] data):
    """Snapshots: slots[i] gets count counts[i] (> 0) and data row i, on an empty device."""
    cdef physmem_t* pm = &phys.pm
    cdef int64_t i, n = slots.shape[0]
    if counts.shape[0] != n or data.shape[0] != n or (n and data.shape[1] != PAGE_SIZE):
        raise ValueError("one count and one 4096-byte row per slot")
    if pm.nr_swap_used:
        raise ValueError("the swap device is not empty")
    for i in range(n):
        if not 0 <= slots[i] < pm.swap_slots or counts[i] <= 0 or (i and slots[i] <= slots[i - 1]):
            raise ValueError(f"slot {slots[i]} (count {counts[i]}): slots must increase "
                             f"inside the device, with counts > 0")
    for i in range(n):
        pm.swap_map[slots[i]] = counts[i]
        memcpy(pm.swap_data + (<uint64_t>slots[i] << PAGE_SHIFT), &data[i, 0], PAGE_SIZE)
    pm.nr_swap_used = n
    pm.swap_hwm = slots[n - 1] + 1 if n else 0


def swap_out(MMCore core, uint64_t start, uint64_t end):
    """shrink_folio_list + try_to_unmap_one for the exclusive anonymous pages of [start,
    end) (below 2**47): each is written to the lowest free slot and its PTE becomes a swap
    entry; rmap, rss and the page reference go as reclaim drops them. When no slot is
    free, folio_alloc_swap fails and the page stays resident (activate_locked), as do
    the rest. Returns how many pages went (other entries are left alone)."""
    cdef physmem_t* pm = &core.phys.pm
    cdef mm_t* mm = &core.mm
    cdef uint64_t addr = start, nxt
    cdef pte_t* pmd
    cdef pte_t* t
    cdef pte_t e
    cdef pfn_t pfn
    cdef uint32_t fl
    cdef int64_t n = 0, slot = 0, cursor = 0
    cdef int i
    if end > (<uint64_t>1) << 47:
        raise ValueError("swap_out above the 47-bit address space")
    with nogil:
        while addr < end and slot >= 0:
            pmd = pmd_walk_next(pm, mm, &addr, end)
            if pmd == NULL:
                break
            nxt = pmd_addr_end(addr, end)
            if pmd[0] != 0:
                t = table_ptr(pm, pte_pfn(pmd[0]))
                for i in range(pte_index(addr), pte_index(nxt - 1) + 1):
                    e = t[i]
                    if not pte_present(e) or pte_special(e):
                        continue
                    pfn = pte_pfn(e)
                    fl = pm.flags[pfn]
                    if not (fl & PG_ANON) or pm.mapcount[pfn] != 1 or pm.refcount[pfn] != 1:
                        continue
                    slot = get_swap_page(pm, &cursor)
                    if slot < 0:
                        break
                    memcpy(pm.swap_data + (<uint64_t>slot << PAGE_SHIFT), frame_ptr(pm, pfn), 4096)
                    pm.swap_map[slot] = 1
                    pm.nr_swap_used += 1
                    pm.mapcount[pfn] = 0
                    pm.nr_anon_mapped -= 1
                    mm.rss[MM_ANONPAGES] -= 1
                    mm.rss[MM_SWAPENTS] += 1
                    t[i] = mk_swap_pte(slot)
                    put_page(pm, pfn)
                    pm.ev[EV_SWAPOUT] += 1
                    n += 1
            addr = nxt
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
                if slots[i] >= pm.swap_hwm:
                    pm.swap_hwm = slots[i] + 1
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


def swap_entries(MMCore core):
    """The slot of every swap entry of this mm (int64, one per entry): the checker's
    recount, whose host memory follows the entries, not the device."""
    cdef physmem_t* pm = &core.phys.pm
    cdef uint64_t addr = 0, end = 1ULL << 47
    cdef pte_t* pmd
    cdef pte_t* t
    cdef int i
    cdef int64_t k = 0
    out = np.empty(core.mm.rss[MM_SWAPENTS] if core.mm.rss[MM_SWAPENTS] > 0 else 0, dtype=np.int64)
    extra = []
    cdef int64_t[::1] o = out
    while True:
        pmd = pmd_walk_next(pm, &core.mm, &addr, end)
        if pmd == NULL:
            break
        if pmd[0] != 0:
            t = table_ptr(pm, pte_pfn(pmd[0]))
            for i in range(512):
                if is_swap_pte(t[i]):
                    if k < o.shape[0]:
                        o[k] = swap_pte_slot(t[i])
                        k += 1
                    else:
                        extra.append(swap_pte_slot(t[i]))
        addr = pmd_addr_end(addr, end)
        if addr == end:
            break
    return np.concatenate([out[:k], np.array(extra, dtype=np.int64)])
