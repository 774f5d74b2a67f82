"""MM (mm_struct): the VMA set, the virtual-memory counters and the mechanism core.

VMA-set operations follow mm/vma.c: find_vma, split (__split_vma), merge
(vma_merge_new_range / vma_modify), and vm_stat_account (mm/internal.h); mm_alloc and
mm_init make a new address space.
"""
from __future__ import annotations

import bisect
from typing import Iterator, List, Optional

from ._core.huge_memory import split_huge_pmd_address
from ._core.pagetable import MMCore
from .args import cow_pgtable_state, load_cow_pgtable
from .errors import enomem
from .flags import VmFlags
from .memory import break_cow_pte_range
from .state import bad, field, integer, refuse_undeclared
from .vma import (
    MMAP_BASE, MMAP_MIN_ADDR, PAGE_SHIFT, TASK_SIZE, VM_IGNORE_MERGE, VM_STACK, VM_STICKY, VMA,
)

_EXEC, _WRITE, _STACK = int(VmFlags.EXEC), int(VmFlags.WRITE), int(VM_STACK)
_EXEC_MASK = _EXEC | _WRITE | _STACK
_DATA_MASK = _WRITE | int(VmFlags.SHARED) | _STACK


# the mm_struct counters and addresses a snapshot saves, besides the core and the VMAs
MM_COUNTERS = ("total_vm", "data_vm", "exec_vm", "stack_vm", "locked_vm", "hiwater_vm",
               "hiwater_rss", "start_brk", "brk", "start_stack", "start_code", "end_code")


class MM:
    """An address space: VMAs sorted by start, counters, and the page-table core
    (``core``: a new one, without a PGD yet, unless given)."""

    def __init__(self, machine, core: Optional[MMCore] = None):
        self.machine = machine
        self.core = core if core is not None else MMCore(machine.phys)
        self.cow_pgtable = 0            # MMF_COW_PGTABLE: the level every fork shares (args.py)
        self.vmas: List[VMA] = []
        self.total_vm = 0
        self.data_vm = 0
        self.exec_vm = 0
        self.stack_vm = 0
        self.locked_vm = 0
        self.hiwater_vm = 0
        self.hiwater_rss = 0
        self.start_brk = 0
        self.brk = 0
        self.start_stack = 0
        self.start_code = 0
        self.end_code = 0

    # ---- counters ----
    @property
    def rss(self) -> int:
        f, a, _s, sh = self.core.rss
        return f + a + sh

    def update_hiwater_rss(self) -> None:
        self.hiwater_rss = max(self.hiwater_rss, self.rss)

    def update_hiwater_vm(self) -> None:
        self.hiwater_vm = max(self.hiwater_vm, self.total_vm)

    def vm_stat_account(self, flags: int, npages: int) -> None:
        """vm_stat_account: total_vm and the exec/stack/data split (mm/internal.h)."""
        self.total_vm += npages
        if (flags & _EXEC_MASK) == _EXEC:
            self.exec_vm += npages
        elif (flags & _STACK) == _STACK:
            self.stack_vm += npages
        elif (flags & _DATA_MASK) == _WRITE:
            self.data_vm += npages

    # ---- lookup ----
    def _index(self, addr: int) -> int:
        """Index of the first VMA with end > addr (find_vma)."""
        i = bisect.bisect_right(self.vmas, addr, key=lambda v: v.start) - 1
        if i >= 0 and self.vmas[i].end > addr:
            return i
        return i + 1

    def find_vma(self, addr: int) -> Optional[VMA]:
        """find_vma: the first VMA with vm_end > addr, or None."""
        i = self._index(addr)
        return self.vmas[i] if i < len(self.vmas) else None

    def vma_at(self, addr: int) -> Optional[VMA]:
        v = self.find_vma(addr)
        return v if v is not None and v.start <= addr else None

    def overlapping(self, start: int, end: int) -> List[VMA]:
        """VMAs intersecting [start, end), in order."""
        out = []
        i = self._index(start)
        while i < len(self.vmas) and self.vmas[i].start < end:
            out.append(self.vmas[i])
            i += 1
        return out

    def neighbours(self, start: int, end: int):
        """(prev, next): the VMAs just below start and at/after end."""
        i = self._index(start)
        prev = self.vmas[i - 1] if i > 0 and self.vmas[i - 1].end <= start else None
        j = self._index(end)
        nxt = self.vmas[j] if j < len(self.vmas) and self.vmas[j].start >= end else None
        return prev, nxt

    def __iter__(self) -> Iterator[VMA]:
        return iter(self.vmas)

    @property
    def map_count(self) -> int:
        return len(self.vmas)

    # ---- structural changes ----
    def insert(self, vma: VMA) -> None:
        i = bisect.bisect_left(self.vmas, vma.start, key=lambda v: v.start)
        self.vmas.insert(i, vma)
        if vma.backing is not None:
            vma.backing.users += 1

    def remove(self, vma: VMA) -> None:
        self.vmas.remove(vma)
        if vma.backing is not None:
            vma.backing.users -= 1
            if vma.backing.users == 0:
                self.machine.release_backing(vma.backing)

    def split(self, vma: VMA, addr: int) -> VMA:
        """__split_vma at addr: vma keeps [start, addr), the returned VMA is [addr, end).
        A huge PMD across addr is split first (vma_adjust_trans_huge)."""
        assert vma.start < addr < vma.end
        split_huge_pmd_address(self.core, addr)
        new = vma.copy(start=addr, pgoff=vma.pgoff + ((addr - vma.start) >> PAGE_SHIFT))
        vma.end = addr
        self.insert(new)
        return new

    def isolate(self, start: int, end: int) -> List[VMA]:
        """Split so that [start, end) is covered by whole VMAs; return those VMAs."""
        for v in self.overlapping(start, end):
            if v.start < start < v.end:
                self.split(v, start)
        for v in self.overlapping(start, end):
            if v.start < end < v.end:
                self.split(v, end)
        return self.overlapping(start, end)

    @staticmethod
    def can_merge(a: VMA, b: VMA) -> bool:
        """is_mergeable_vma + is_mergeable_anon_vma for a directly followed by b."""
        if a.end != b.start:
            return False
        if (a.flags ^ b.flags) & ~VM_IGNORE_MERGE:
            return False
        if a.backing is not b.backing or a.name != b.name:
            return False
        if a.pgoff + a.npages != b.pgoff:
            return False
        if a.anon_vma is not None and b.anon_vma is not None:
            return a.anon_vma is b.anon_vma
        # one side has no anon_vma: mergeable unless the other's chain was cloned at fork
        other = a.anon_vma or b.anon_vma
        return other is None or not other.forked

    def try_merge_around(self, vma: VMA) -> VMA:
        """Merge vma with its neighbours where allowed (vma_merge); return the survivor.

        Like vma_merge_new_range/vma_merge_existing_range: when both sides could merge
        but prev and next have different anon_vmas, only the left merge happens."""
        i = self.vmas.index(vma)
        prev = self.vmas[i - 1] if i > 0 else None
        nxt = self.vmas[i + 1] if i + 1 < len(self.vmas) else None
        left = prev is not None and self.can_merge(prev, vma)
        right = nxt is not None and self.can_merge(vma, nxt)
        if (left and right and prev.anon_vma is not None and nxt.anon_vma is not None
                and prev.anon_vma is not nxt.anon_vma):
            right = False
        if right:
            vma.end = nxt.end
            vma.set_flags(vma.flags | (nxt.flags & VM_STICKY))
            if vma.anon_vma is None:
                vma.anon_vma = nxt.anon_vma
            self.remove(nxt)
        if left:
            prev.end = vma.end
            prev.set_flags(prev.flags | (vma.flags & VM_STICKY))
            if prev.anon_vma is None:
                prev.anon_vma = vma.anon_vma
            self.remove(vma)
            vma = prev
        return vma

    def vma_modify(self, vma: VMA, start: int, end: int) -> VMA:
        """vma_modify's splits: isolate [start, end) of vma and return that part. Each
        __split_vma checks max_map_count on its own, so a second split can fail after the
        first (like Linux); each split first breaks the COW-shared table at its address."""
        if vma.start < start:
            self.check_map_count(1)
            break_cow_pte_range(self, start - 1, start + 1)
            vma = self.split(vma, start)
        if end < vma.end:
            self.check_map_count(1)
            break_cow_pte_range(self, end - 1, end + 1)
            self.split(vma, end)
        return vma

    def check_map_count(self, extra: int) -> None:
        """__split_vma / mmap_region: ENOMEM if map_count would pass max_map_count."""
        if self.map_count + extra > self.machine.max_map_count:
            raise enomem(f"map_count would exceed max_map_count ({self.machine.max_map_count})")

    # ---- snapshots (mmemu.snapshot) ----
    def dump_state(self, refs, where) -> dict:
        """The counters, the PR_SET_COW_PTE switch, the core's state and the VMAs."""
        refuse_undeclared(self, f"the mm of {where}")
        rec = {k: int(getattr(self, k)) for k in MM_COUNTERS}
        rec.update(core=self.core.dump_state(), cow_pgtable=cow_pgtable_state(self.cow_pgtable),
                   vmas=[v.dump_state(refs, where) for v in self.vmas])
        return rec

    @classmethod
    def from_state(cls, machine, rec, refs, where) -> "MM":
        """The mm dump_state gave, on a machine whose physical memory is restored: its core
        takes its saved id, PGD and counters (MMCore(phys, state), which checks them); the
        VMAs are checked and sorted without overlap, and each adds a user to its backing
        object. Counters are page counts of the address space, addresses below 2^64."""
        core_state = field(rec, "core", dict, where)
        try:
            core = MMCore(machine.phys, core_state)
        except ValueError as e:
            raise bad(f"{where}: {e}") from None
        mm = cls(machine, core)
        mm.cow_pgtable = load_cow_pgtable(field(rec, "cow_pgtable", (bool, int), where), where)
        for k in MM_COUNTERS:
            hi = (TASK_SIZE >> PAGE_SHIFT) if k.endswith("_vm") or k == "hiwater_rss" else (1 << 64) - 1
            setattr(mm, k, integer(rec, k, where, 0, hi))
        if mm.brk < mm.start_brk:
            raise bad(f"{where}: the break {mm.brk:#x} lies below start_brk {mm.start_brk:#x}")
        end = 0
        for v in field(rec, "vmas", list, where):
            vma = VMA.from_state(v, refs, where, end)
            end = vma.end
            mm.insert(vma)
        return mm

    # ---- address-space search ----
    def get_unmapped_area(self, length: int, align: int = 0, phase: int = 0) -> Optional[int]:
        """vm_unmapped_area top-down from mmap_base, then bottom-up; None if no gap fits.
        With align, the address is phase modulo align (the highest such in a gap)."""
        mask = (align - 1) if align else 0
        high = MMAP_BASE
        for v in reversed(self.vmas):
            if v.start >= high:
                continue
            if v.end < high:
                cand = ((high - length - phase) & ~mask) + phase
                if cand >= v.end and cand >= MMAP_MIN_ADDR:
                    return cand
            high = min(high, v.start)
        cand = ((high - length - phase) & ~mask) + phase
        if cand >= MMAP_MIN_ADDR and high - length >= MMAP_MIN_ADDR:
            return cand
        # bottom-up fallback over the whole range
        low = MMAP_MIN_ADDR
        for v in self.vmas:
            start = ((low - phase + mask) & ~mask) + phase
            if start + length <= v.start:
                return start
            low = max(low, v.end)
        start = ((low - phase + mask) & ~mask) + phase
        if start + length <= TASK_SIZE:
            return start
        return None


def mm_alloc(machine) -> MM:
    """mm_alloc + mm_init: a new, empty address space with its PGD; MMError(ENOMEM) if
    there is no frame for the PGD."""
    mm = MM(machine)
    if not mm.core.pgd_alloc():
        raise enomem("no frame for the PGD")
    return mm
