"""The emulated swap device (policy): slot allocation and swap-out.

A machine's swap device is created on first use: a swap count per slot and 4 KiB of data
(numpy arrays the Cython kernels see through ``_core.swap.attach``), growing by doubling.
A PTE holding a swap entry (x86-64 encoding, type 0, the slot as offset) counts in the
process's MM_SWAPENTS (VmSwap); fork duplicates it (the slot's count rises), zap frees it,
a fault reads the page back (do_swap_page). There is no swap cache: two processes that
share a swap entry each get their own page when they fault it in. COW page tables copy,
never share, a table that holds a swap entry.
"""
from __future__ import annotations

import numpy as np

from ._core import swap as _swap


def _device(machine):
    dev = machine.__dict__.get("_swap_dev")
    if dev is None:
        dev = machine._swap_dev = {"map": np.zeros(0, np.int32), "data": np.zeros(0, np.uint8)}
    return dev


def slots_total(machine) -> int:
    return len(_device(machine)["map"])


def slots_used(machine) -> int:
    return int(_swap.nr_swap_used(machine.phys)) if "_swap_dev" in machine.__dict__ else 0


def alloc_slots(machine, n: int) -> np.ndarray:
    """n free slots (count 0), growing the device if needed. They stay free until a swap
    entry takes them."""
    dev = _device(machine)
    free = np.flatnonzero(dev["map"] == 0)
    if len(free) < n:
        old = len(dev["map"])
        size = max(64, 2 * old, old + n - len(free))
        m = np.zeros(size, np.int32)
        m[:old] = dev["map"]
        d = np.zeros(size * 4096, np.uint8)
        d[:old * 4096] = dev["data"]
        dev["map"], dev["data"] = m, d
        _swap.attach(machine.phys, m, d)
        free = np.flatnonzero(m == 0)
    return free[:n].astype(np.int64)


def swap_out(proc, start: int, end: int) -> int:
    """Write the exclusive anonymous pages of [start, end) to swap; returns how many."""
    n = 0
    for v in proc.mm.overlapping(start, end):
        s, e = max(start, v.start), min(end, v.end)
        slots = alloc_slots(proc.machine, (e - s) >> 12)
        n += _swap.swap_out(proc.mm.core, s, e, slots)
    return n


def check(machine, problems: list) -> None:
    """The checker's part: each slot's count is the number of swap entries naming it."""
    if "_swap_dev" not in machine.__dict__:
        return
    dev = machine._swap_dev
    refs = np.zeros(len(dev["map"]), np.int64)
    for p in machine.processes:
        bad = _swap.count_refs(p.mm.core, refs)
        if bad:
            problems.append(f"pid {p.pid}: {bad} swap entries name no slot of the device")
    diff = np.flatnonzero(refs != dev["map"])
    if len(diff):
        i = int(diff[0])
        problems.append(f"swap slot {i}: count {int(dev['map'][i])}, {int(refs[i])} entries "
                        f"({len(diff)} slots differ)")
    used = int(np.count_nonzero(dev["map"]))
    if used != slots_used(machine):
        problems.append(f"nr_swap_used {slots_used(machine)}, {used} slots in use")
