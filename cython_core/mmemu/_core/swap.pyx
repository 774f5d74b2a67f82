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
from mmemu._core.pagetable cimport MMCore
from mmemu._core.pgtable cimport set_pte_at
from mmemu._core.rmap cimport folio_remove_rmap_pte
from mmemu._core.pagewalk cimport (
    mm_walk, mm_walk_ops, walk_page_range, page_list, walk_page_list, WALK_ALL_END,
)


def attach(PhysMem phys, cnp.ndarray swap_map, cnp.ndarray swap_data):
    """Point the machine at its swap arrays (int32 counts, uint8 slots x 4096); the caller
    keeps them alive and copies the old contents when it grows them."""
    if swap_map.dtype != np.int32 or swap_data.dtype != np.uint8:
        raise TypeError("swap_map int32, swap_data uint8")
    if swap_data.shape[0] != swap_map.shape[0] * 4096 or not swap_map.flags.c_contiguous \
            or not swap_data.flags.c_contiguous:
        raise ValueError("swap_data must hold 4096 bytes per slot, both contiguous")
    phys.pm.swap_map = <int32_t*>cnp.PyArray_DATA(swap_map)
    phys.pm.swap_data = <uint8_t*>cnp.PyArray_DATA(swap_data)
    phys.pm.swap_slots = swap_map.shape[0]
    phys.pm.nr_swap_used = int(np.count_nonzero(swap_map))


def nr_swap_used(PhysMem phys):
    return phys.pm.nr_swap_used


cdef struct swap_out_walk:
    const int64_t* slots    # free slots, one per page that may go
    int64_t nslots
    int64_t n               # pages written


cdef int swap_out_pte_range(pte_t* pmd, uint64_t addr, uint64_t end, mm_walk* walk) noexcept nogil:
    """The pages of [addr, end) of one PTE table that go to swap: try_to_unmap_one for an
    exclusive anonymous page (the data to its slot, a swap entry in its PTE)."""
    cdef physmem_t* pm = walk.pm
    cdef swap_out_walk* w = <swap_out_walk*>walk.private
    cdef pte_t* t = table_ptr(pm, pte_pfn(pmd[0]))
    cdef int i
    cdef pte_t e
    cdef pfn_t pfn
    cdef uint32_t fl
    cdef int64_t slot
    for i in range(pte_index(addr), pte_index(end - 1) + 1):
        e = t[i]
        if not pte_present(e) or pte_special(e):
            continue
        pfn = pte_pfn(e)
        fl = pm.flags[pfn]
        if (fl & PG_ANON) and pm.mapcount[pfn] == 1 and pm.refcount[pfn] == 1 \
                and w.n < w.nslots:
            slot = w.slots[w.n]
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


def swap_out(MMCore core, uint64_t start, uint64_t end, const int64_t[::1] slots):
    """Write the exclusive anonymous pages of [start, end) to the given free slots (one
    per page, in order) and leave swap entries: rmap, rss and the page reference go as
    reclaim drops them. Returns how many pages went (other entries are left alone)."""
    cdef swap_out_walk w
    w.slots = &slots[0] if slots.shape[0] else NULL
    w.nslots = slots.shape[0]
    w.n = 0
    with nogil:
        walk_page_range(&core.phys.pm, &core.mm, start, end, &swap_out_ops, &w)
    return w.n


cdef struct swap_entries:
    page_list pages
    const int64_t* slots


cdef int install_swap_pte_range(pte_t* pmd, uint64_t addr, uint64_t end, mm_walk* walk) noexcept nogil:
    """pmd_entry of an install walk: a swap entry in each listed none PTE (one more
    reference to its slot)."""
    cdef physmem_t* pm = walk.pm
    cdef swap_entries* w = <swap_entries*>walk.private
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
    cdef swap_entries w
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
    those tables at fork instead of sharing them)."""
    out = []
    if core.mm.rss[MM_SWAPENTS] == 0:
        return np.empty(0, dtype=np.int64)
    walk_page_range(&core.phys.pm, &core.mm, 0, 1ULL << 47, &swap_spans_ops, <void*>out)
    return np.array(out, dtype=np.int64)


cdef struct swap_refs:
    int64_t* refs
    int64_t nrefs
    int64_t bad             # entries naming a slot outside the device


cdef int count_refs_entry(pte_t* pmd, uint64_t addr, uint64_t end, mm_walk* walk) noexcept nogil:
    """The swap entries of one PTE table, into refs[slot]."""
    cdef swap_refs* r = <swap_refs*>walk.private
    cdef pte_t* t = table_ptr(walk.pm, pte_pfn(pmd[0]))
    cdef int i
    cdef int64_t slot
    for i in range(512):
        if is_swap_pte(t[i]):
            slot = swap_pte_slot(t[i])
            if 0 <= slot < r.nrefs:
                r.refs[slot] += 1
            else:
                r.bad += 1
    return 0


cdef mm_walk_ops count_refs_ops
count_refs_ops.pmd_entry = count_refs_entry


def count_refs(MMCore core, cnp.ndarray[cnp.int64_t, ndim=1] refs):
    """Add this mm's swap entries to refs[slot] (the checker's recount); returns the count
    of entries naming a slot outside the device."""
    cdef swap_refs r
    cdef int64_t[::1] rv = refs
    r.refs = &rv[0] if rv.shape[0] else NULL
    r.nrefs = rv.shape[0]
    r.bad = 0
    walk_page_range(&core.phys.pm, &core.mm, 0, 1ULL << 47, &count_refs_ops, &r)
    return r.bad
