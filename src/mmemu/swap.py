"""The emulated swap device (policy): its size, slot allocation and swap-out.

Every machine has one swap device of a fixed size, ``Machine(swap=...)`` (default: as
large as its memory), shown as SwapTotal. Its swap map (a count per slot) and its data
(4 KiB per slot) are host MAP_NORESERVE mappings (mmemu._core.swap): the host pays for
the slots used, not for the size. Slots are taken lowest first. A PTE holding a swap
entry (x86-64 encoding, type 0, the slot as offset) counts in the process's MM_SWAPENTS
(VmSwap); fork duplicates it (the slot's count rises), zap frees it, a fault reads the
page back (do_swap_page). There is no swap cache: two processes that share a swap entry
each get their own page when they fault it in. COW page tables copy a table that holds
a swap entry, except the series' v3-v5 profiles, which share it and duplicate each swap
entry at fork (docs/series-versions.md).

A full device is what reclaim meets when folio_alloc_swap fails (mm/vmscan.c
shrink_folio_list: ``goto activate_locked_split``): the page stays resident and mapped,
and MADV_PAGEOUT still returns 0; ``swap_out`` then returns fewer pages than it could
have written.
"""
from __future__ import annotations

import numpy as np

from ._core import swap as _swap
from .state import bad, refuse_undeclared
from .vma import PAGE_SIZE

MAX_SWAP = 1 << 46          # 64 TiB: the host reserves the device's data as one mapping


class SwapDevice:
    """The machine's swap device (swapon of nbytes: a multiple of 4096, at most MAX_SWAP).
    Its swap map and data live with the machine's physical memory (mmemu._core.swap)."""

    def __init__(self, phys, nbytes: int):
        if nbytes % PAGE_SIZE or not 0 <= nbytes <= MAX_SWAP:
            raise ValueError(f"swap must be a multiple of 4096 bytes in [0, {MAX_SWAP}], "
                             f"not {nbytes}")
        _swap.attach(phys, nbytes // PAGE_SIZE)
        self.phys = phys
        self.size = nbytes

    # ---- snapshots (mmemu.snapshot) ----
    def dump_state(self):
        """(slots, counts): the slots in use, in order, and their swap counts; their data:
        read_slots."""
        refuse_undeclared(self, "the swap device")
        return _swap.used_slots(self.phys)

    def read_slots(self, slots: np.ndarray) -> np.ndarray:
        """The 4096 bytes of each of these slots (one row each, a copy)."""
        return _swap.read_slots(self.phys, slots)

    def restore_state(self, slots: np.ndarray, counts: np.ndarray, data=()) -> None:
        """Fill this empty device with what dump_state gave: slots increasing inside the
        device with counts > 0, ``data`` yielding their bytes in order (pieces of whole
        slots). SnapshotError otherwise; which entries name the slots, the checker proves."""
        if len(counts) != len(slots):
            raise bad(f"swap sections disagree: {len(slots)} slots, {len(counts)} counts")
        try:
            _swap.restore_slots(self.phys, np.ascontiguousarray(slots, np.int64),
                                np.ascontiguousarray(counts, np.int32), data)
        except ValueError as e:
            raise bad(str(e)) from None


def slots_total(machine) -> int:
    return int(_swap.swap_slots(machine.phys))


def slots_used(machine) -> int:
    return int(_swap.nr_swap_used(machine.phys))


def alloc_slots(machine, n: int) -> np.ndarray:
    """n free slots, lowest first, or fewer if the device has fewer. They stay free until
    a swap entry takes them."""
    return _swap.alloc_slots(machine.phys, n)


def swap_out(proc, start: int, end: int) -> int:
    """Write the exclusive anonymous pages of [start, end) to swap; returns how many."""
    n = 0
    for v in proc.mm.overlapping(start, end):
        n += _swap.swap_out(proc.mm.core, max(start, v.start), min(end, v.end))
    return n


def check(machine, problems: list) -> None:
    """The checker's part: each slot's count is the number of swap entries naming it."""
    total = slots_total(machine)
    entries = [_swap.swap_entries(p.mm.core) for p in machine.processes]
    for p, e in zip(machine.processes, entries):
        bad = int(np.count_nonzero((e < 0) | (e >= total)))
        if bad:
            problems.append(f"pid {p.pid}: {bad} swap entries name no slot of the device")
    refs, nrefs = np.unique(np.concatenate(entries) if entries else np.empty(0, np.int64),
                            return_counts=True)
    keep = (refs >= 0) & (refs < total)
    refs, nrefs = refs[keep], nrefs[keep]
    slots, counts = _swap.used_slots(machine.phys)
    if not (np.array_equal(slots, refs) and np.array_equal(counts, nrefs)):
        both = np.union1d(slots, refs)
        cnt = dict(zip(slots.tolist(), counts.tolist()))
        ref = dict(zip(refs.tolist(), nrefs.tolist()))
        diff = [s for s in both.tolist() if cnt.get(s, 0) != ref.get(s, 0)]
        i = diff[0]
        problems.append(f"swap slot {i}: count {cnt.get(i, 0)}, {ref.get(i, 0)} entries "
                        f"({len(diff)} slots differ)")
    if len(slots) != slots_used(machine):
        problems.append(f"nr_swap_used {slots_used(machine)}, {len(slots)} slots in use")
