# cython: language_level=3
"""The emulated swap device: swap slots with a swap count (swap_map) and 4 KiB of data
each, swap entries in PTEs (x86-64 encoding, type 0), and the walks around them.

Models swap_duplicate / free_swap_and_cache (the inline helpers in physmem.pxd, used by
fork and zap), do_swap_page (fault.pyx) and the per-entry part of reclaim that writes an
exclusive anonymous page to swap (try_to_unmap_one for swap-backed pages). Leaves out
the swap cache: a page read back is a new page of the faulting process. The device has a
fixed number of slots (Machine(swap=...)); its map and data are host MAP_NORESERVE mappings,
so the host pays for the slots in use only.
"""
from libc.stdint cimport uint8_t, uint32_t, int32_t, int64_t, uint64_t
from libc.string cimport memcpy

import numpy as np

from mmemu._core.types cimport *
from mmemu._core.physmem cimport physmem_t, PhysMem, frame_ptr, table_ptr, put_page, swap_dup
from mmemu._core.pagetable cimport MMCore
from mmemu._core.pgtable cimport set_pte_at
from mmemu._core.tlb cimport flush_tlb_mm
from mmemu._core.rmap cimport folio_remove_rmap_pte
from mmemu._core.pagewalk cimport (
    mm_walk, mm_walk_ops, walk_page_range, page_list, walk_page_list, WALK_ALL_END,
)


def attach(PhysMem phys, int64_t nslots):
    """swapon: give the machine a swap device of nslots slots. Its swap map (int32 count
    per slot) and its data (4 KiB per slot) are host MAP_NORESERVE mappings owned by phys:
    the host pays only for the slots that are used."""
    cdef physmem_t* pm = &phys.pm
    if pm.swap_slots or pm.swap_map != NULL:
        raise ValueError("the machine has a swap device already")
    if nslots < 0:
        raise ValueError(f"{nslots} swap slots")
    cdef int32_t* smap
    if nslots:
        smap = <int32_t*>phys._map(<size_t>nslots * sizeof(int32_t))
        try:
            pm.swap_data = <uint8_t*>phys._map(<size_t>nslots * PAGE_SIZE)
        except MemoryError:
            phys._unmap_last()          # all or nothing: no device, nothing mapped
            raise
        pm.swap_map = smap
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


def restore_slots(PhysMem phys, const int64_t[::1] slots, const int32_t[::1] counts, data=()):
    """Snapshots: on an empty device, slots[i] gets count counts[i] (> 0); ``data`` yields
    the slots' 4096 bytes each, in order, in pieces of whole slots (what read_slots gave).
    ValueError, before anything is written, unless the slots increase inside the device;
    and if data holds more or fewer slots."""
    cdef physmem_t* pm = &phys.pm
    cdef int64_t i, k, done = 0, n = slots.shape[0]
    cdef const uint8_t[::1] d
    if counts.shape[0] != n:
        raise ValueError("one count per slot")
    if pm.nr_swap_used:
        raise ValueError("the swap device is not empty")
    for i in range(n):
        if not 0 <= slots[i] < pm.swap_slots or counts[i] <= 0 or (i and slots[i] <= slots[i - 1]):
            raise ValueError(f"slot {slots[i]} (count {counts[i]}): slots must increase "
                             f"inside the device, with counts > 0")
    for i in range(n):
        pm.swap_map[slots[i]] = counts[i]
    pm.nr_swap_used = n
    pm.swap_hwm = slots[n - 1] + 1 if n else 0
    for piece in data:
        d = piece
        k = d.shape[0] // PAGE_SIZE
        if d.shape[0] % PAGE_SIZE or k > n - done:
            raise ValueError(f"swap data: {d.shape[0]} bytes at slot {done} of {n}")
        for i in range(k):
            memcpy(pm.swap_data + (<uint64_t>slots[done + i] << PAGE_SHIFT), &d[i * PAGE_SIZE],
                   PAGE_SIZE)
        done += k
    if done != n:
        raise ValueError(f"swap data for {done} of {n} slots")


cdef struct swap_out_walk:
    int64_t cursor          # get_swap_page's scan position
    int64_t n               # pages written


cdef int swap_out_pte_range(pte_t* pmd, uint64_t addr, uint64_t end, mm_walk* walk) noexcept nogil:
    """The pages of [addr, end) of one PTE table that go to swap: try_to_unmap_one for an
    exclusive anonymous page (the data to the lowest free slot, a swap entry in its PTE).
    A full device stops the walk (1): the page stays resident."""
    cdef physmem_t* pm = walk.pm
    cdef swap_out_walk* w = <swap_out_walk*>walk.private
    cdef pte_t* t = table_ptr(pm, pte_pfn(pmd[0]))
    cdef int i
    cdef pte_t e
    cdef pfn_t pfn
    cdef uint32_t fl
    cdef int64_t slot
    if pmd_leaf(pmd[0]):
        return 0        # THP swap-out (thp_swpout, or a split first) is left out
    for i in range(pte_index(addr), pte_index(end - 1) + 1):
        e = t[i]
        if not pte_present(e) or pte_special(e):
            continue
        pfn = pte_pfn(e)
        fl = pm.flags[pfn]
        if (not (fl & PG_ANON) or (fl & PG_COMPOUND) or pm.mapcount[pfn] != 1
                or pm.refcount[pfn] != 1):
            continue
        slot = get_swap_page(pm, &w.cursor)
        if slot < 0:
            return 1
        memcpy(pm.swap_data + (<uint64_t>slot << PAGE_SHIFT), frame_ptr(pm, pfn), 4096)
        pm.swap_map[slot] = 1
        pm.nr_swap_used += 1
        folio_remove_rmap_pte(pm, pfn, fl, walk.mm.rss)
        walk.mm.rss[MM_SWAPENTS] += 1
        set_pte_at(pm, &t[i], mk_swap_pte(slot))
        put_page(pm, pfn)
        pm.ev[EV_SWAPOUT] += 1
        w.n += 1
    return 0


cdef mm_walk_ops swap_out_ops
swap_out_ops.pmd_entry = swap_out_pte_range


def swap_out(MMCore core, uint64_t start, uint64_t end):
    """shrink_folio_list + try_to_unmap_one for the exclusive anonymous pages of [start,
    end) (below 2**47): each is written to the lowest free slot and its PTE becomes a swap
    entry; rmap, rss and the page reference go as reclaim drops them. When no slot is
    free, folio_alloc_swap fails and the page stays resident (activate_locked), as do
    the rest. Returns how many pages went (other entries are left alone)."""
    cdef swap_out_walk w
    if end > (<uint64_t>1) << 47:
        raise ValueError("swap_out above the 47-bit address space")
    w.cursor = 0
    w.n = 0
    with nogil:
        walk_page_range(&core.phys.pm, &core.mm, start, end, &swap_out_ops, &w)
        if w.n:     # TTU_BATCH_FLUSH: try_to_unmap_flush -> arch_tlbbatch_flush, a full flush
            flush_tlb_mm(&core.phys.pm, &core.mm)
    return w.n


cdef struct swap_install:
    page_list pages
    const int64_t* slots


cdef int install_swap_pte_range(pte_t* pmd, uint64_t addr, uint64_t end, mm_walk* walk) noexcept nogil:
    """pmd_entry of an install walk: a swap entry in each listed none PTE (one more
    reference to its slot)."""
    cdef physmem_t* pm = walk.pm
    cdef swap_install* w = <swap_install*>walk.private
    cdef pte_t* t = table_ptr(pm, pte_pfn(pmd[0]))
    cdef pte_t* ptep
    cdef int64_t i, slot
    for i in range(w.pages.i, w.pages.run_end):
        ptep = &t[pte_index(w.pages.addrs[i])]
        if ptep[0] != 0:
            continue
        slot = w.slots[i]
        if pm.swap_map[slot] == 0:
            pm.nr_swap_used += 1
            if slot >= pm.swap_hwm:
                pm.swap_hwm = slot + 1
        swap_dup(pm, slot)
        set_pte_at(pm, ptep, mk_swap_pte(slot))
        walk.mm.rss[MM_SWAPENTS] += 1
    return 0


cdef mm_walk_ops install_swap_ops
install_swap_ops.pmd_entry = install_swap_pte_range
install_swap_ops.install = True


def install_swap_entries(MMCore core, const uint64_t[::1] addrs, const int64_t[::1] slots):
    """Put a swap entry for slots[i] at addrs[i] (importing swapped pages): the slot's
    count rises by one per entry. Returns 0, or -1 if a page table could not be had."""
    cdef physmem_t* pm = &core.phys.pm
    cdef swap_install w
    cdef int64_t i
    cdef int rc
    if slots.shape[0] != addrs.shape[0]:
        raise ValueError("one slot per address")
    for i in range(addrs.shape[0]):
        if slots[i] < 0 or slots[i] >= pm.swap_slots:
            raise ValueError(f"slot {slots[i]} outside the swap device")
    if addrs.shape[0] == 0:
        return 0
    w.pages.addrs = &addrs[0]
    w.pages.n = addrs.shape[0]
    w.slots = &slots[0]
    with nogil:
        rc = walk_page_list(pm, &core.mm, &w.pages, &install_swap_ops, &w)
    return rc


cdef int swap_span_entry(pte_t* pmd, uint64_t addr, uint64_t end, mm_walk* walk) noexcept nogil:
    """Does this PTE table hold a swap entry? Then its span (addr >> 21) is listed."""
    cdef pte_t* t = table_ptr(walk.pm, pte_pfn(pmd[0]))
    cdef int i
    if pmd_leaf(pmd[0]):
        return 0
    for i in range(512):
        if is_swap_pte(t[i]):
            with gil:
                (<list>walk.private).append(addr >> PMD_SHIFT)
            return 0
    return 0


cdef mm_walk_ops swap_spans_ops
swap_spans_ops.pmd_entry = swap_span_entry


def swap_spans(MMCore core):
    """PMD spans (addr >> 21) whose PTE table holds a swap entry (COW page tables copy
    those tables at fork instead of sharing them; the v3-v5 profiles share them)."""
    out = []
    if core.mm.rss[MM_SWAPENTS] == 0:
        return np.empty(0, dtype=np.int64)
    walk_page_range(&core.phys.pm, &core.mm, 0, 1ULL << 47, &swap_spans_ops, <void*>out)
    return np.array(out, dtype=np.int64)


cdef struct swap_slots_walk:
    int64_t* out
    int64_t n               # entries seen
    int64_t cap             # room in out


cdef int swap_entries_entry(pte_t* pmd, uint64_t addr, uint64_t end, mm_walk* walk) noexcept nogil:
    """The slots of the swap entries of one PTE table, into out (counted past its room)."""
    cdef swap_slots_walk* w = <swap_slots_walk*>walk.private
    cdef pte_t* t = table_ptr(walk.pm, pte_pfn(pmd[0]))
    cdef int i
    if pmd_leaf(pmd[0]):
        return 0
    for i in range(512):
        if is_swap_pte(t[i]):
            if w.n < w.cap:
                w.out[w.n] = swap_pte_slot(t[i])
            w.n += 1
    return 0


cdef mm_walk_ops swap_entries_ops
swap_entries_ops.pmd_entry = swap_entries_entry


def swap_entries(MMCore core):
    """The slot of every swap entry of this mm (int64, one per entry): the checker's
    recount, whose host memory follows the entries, not the device nor MM_SWAPENTS (which
    only sizes the first try, up to 2^16). More entries than room: recounted with the room
    the walk found."""
    cdef swap_slots_walk w
    cdef int64_t cap = min(max(core.mm.rss[MM_SWAPENTS], 0), 1 << 16)
    cdef int64_t[::1] o
    while True:
        out = np.empty(cap, dtype=np.int64)
        o = out
        w.out = &o[0] if cap else NULL
        w.n = 0
        w.cap = cap
        walk_page_range(&core.phys.pm, &core.mm, 0, 1ULL << 47, &swap_entries_ops, &w)
        if w.n <= cap:
            return out[:w.n]
        cap = w.n
