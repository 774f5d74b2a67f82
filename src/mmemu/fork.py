"""fork's copy of an address space, after kernel/fork.c (dup_mm, dup_mmap, clone3's flag
checks) and mm/memory.c (vma_needs_copy).

The page-table work is the Cython kernel ``_core.fork``: copy_page_range per VMA that
needs it, or, for a COW page-table fork, the sharing of every eligible PTE table
(copy_cow_pte_range). The frames the copy needs are counted and reserved first, so a fork
that does not fit fails with ENOMEM and changes nothing. Left out: threads (CLONE_VM),
namespaces, ksm/khugepaged/uprobes state, userfaultfd, the anon_vma chains themselves (a
forked anon_vma is only marked).
"""
from __future__ import annotations

import numpy as np

from ._core import cow_pte as _cow_pte
from ._core import fork as _fork
from ._core.task_mmu import pte_tables
from ._core.constants import MM_SWAPENTS, PMD_SHIFT
from .errors import einval
from .flags import CloneFlags, VmFlags
from .mm import MM, mm_alloc
from .reserve import reserving
from .vma import AnonVma

_NO_COPY = int(VmFlags.DONTCOPY | VmFlags.WIPEONFORK)
_DONTCOPY, _WIPEONFORK = int(VmFlags.DONTCOPY), int(VmFlags.WIPEONFORK)
_MAYBE_GUARD = int(VmFlags.MAYBE_GUARD)     # vma_needs_copy: guard markers must reach the child
_PFN_COPY = int(VmFlags.PFNMAP | VmFlags.MIXEDMAP)   # vma_needs_copy: (imported) PFN mappings
_ALWAYS_COPY = _MAYBE_GUARD | _PFN_COPY
_NOT_LOCKED = ~int(VmFlags.LOCKED | VmFlags.LOCKONFAULT)
_NO_COW_PTE = int(VmFlags.SHARED | VmFlags.DONTCOPY | VmFlags.WIPEONFORK | VmFlags.IO
                  | VmFlags.PFNMAP | VmFlags.MIXEDMAP)
_CLONE_LEGACY = 0xFFFFFFFF & ~0xFF       # flags below bit 32, the exit signal excluded
_CLONE_KNOWN = _CLONE_LEGACY | int(CloneFlags.CLEAR_SIGHAND | CloneFlags.INTO_CGROUP
                                   | CloneFlags.COW_PGTABLE | CloneFlags.COW_PGTABLE_PMD
                                   | CloneFlags.COW_PGTABLE_PUD)


def clone3_args_valid(flags: int, exit_signal: int) -> None:
    """clone3_args_valid and copy_process's flag checks: MMError(EINVAL) for a bad
    combination; NotImplementedError for CLONE_VM (threads are not modelled)."""
    if flags & ~_CLONE_KNOWN or flags & 0xFF:
        raise einval("unknown clone3 flags (or an exit signal in flags)")
    if (flags & (CloneFlags.NEWNS | CloneFlags.FS)) == (CloneFlags.NEWNS | CloneFlags.FS):
        raise einval("CLONE_NEWNS with CLONE_FS")
    if flags & CloneFlags.THREAD and not flags & CloneFlags.SIGHAND:
        raise einval("CLONE_THREAD without CLONE_SIGHAND")
    if flags & CloneFlags.SIGHAND and not flags & CloneFlags.VM:
        raise einval("CLONE_SIGHAND without CLONE_VM")
    if flags & CloneFlags.CLEAR_SIGHAND and flags & CloneFlags.SIGHAND:
        raise einval("CLONE_CLEAR_SIGHAND with CLONE_SIGHAND")
    cow = flags & (CloneFlags.COW_PGTABLE | CloneFlags.COW_PGTABLE_PMD | CloneFlags.COW_PGTABLE_PUD)
    if cow and flags & CloneFlags.VM:
        raise einval("CLONE_COW_PGTABLE with CLONE_VM: there is no second address space")
    if flags & CloneFlags.COW_PGTABLE_PMD and flags & CloneFlags.COW_PGTABLE_PUD:
        raise einval("CLONE_COW_PGTABLE_PMD with CLONE_COW_PGTABLE_PUD: one sharing level")
    if not 0 <= exit_signal < 65:
        raise einval("bad exit signal")
    if flags & CloneFlags.VM:
        raise NotImplementedError("CLONE_VM (threads sharing one mm) is not modelled")


def vma_needs_copy(flags: int, has_anon_vma: bool) -> bool:
    """vma_needs_copy: the child gets the VMA's PTEs only where the page tables hold
    something the child cannot fault back (anonymous pages, guard markers, PFN maps)."""
    return not (flags & _NO_COPY) and (has_anon_vma or bool(flags & _ALWAYS_COPY))


def cow_blocked_spans(mm: MM):
    """PMD spans (addr >> 21) whose PTE table may not be shared at fork: spans touching
    a shared, VM_DONTCOPY, VM_WIPEONFORK, I/O or brk-heap VMA fall back to a copy, and so
    do tables holding swap entries (only spans that have a PTE table: the others have
    nothing to share, and a 64 TiB mapping must not cost an array of its spans). A sorted
    int64 array, or None for none (whole-table COW forks are a few microseconds: no
    empty array made and converted for them)."""
    spans = []
    for v in mm.vmas:
        heap = v.name == "[heap]" or (mm.brk > mm.start_brk and v.start < mm.brk
                                      and v.end > mm.start_brk)
        if heap or v.flags & _NO_COW_PTE:
            spans.append(pte_tables(mm.core, v.start, v.end) >> PMD_SHIFT)
    if mm.core.rss[MM_SWAPENTS]:
        from ._core.swap import swap_spans
        spans.append(swap_spans(mm.core))
    if not spans:
        return None
    return np.unique(np.concatenate(spans))


def dup_mm(machine, oldmm: MM, cow: int) -> MM:
    """dup_mm: a copy of oldmm for a child (copy_page_range for every VMA that
    vma_needs_copy; with cow, copy_cow_pte_range shares each eligible PTE table instead,
    and at cow 2 / 3 each PMD / PUD table with only eligible spans under it).
    The child's PGD and tables come from a reservation made first: MMError(ENOMEM) with
    nothing changed if they do not fit."""
    copy_spans, ranges = [], []
    for v in oldmm.vmas:
        if vma_needs_copy(v.flags, v.anon_vma is not None):
            copy_spans.append((v.start, v.end, v.flags))
            ranges.append((v.start, v.end))
    prof = machine.cow_pte_profile
    blocked = (prof.blocked_spans(oldmm) if prof else cow_blocked_spans(oldmm)) if cow else None
    need = 1 + _fork.count_fork_tables(oldmm.core, ranges, cow, blocked)
    with reserving(machine.phys, need, "fork"):
        mm = mm_alloc(machine)
        dup_mmap(mm, oldmm, copy_spans, cow, blocked)
    if cow and prof is not None:    # v5: every VMA of a shared span (mmemu.profiles)
        _cow_pte.cow_pte_mkold(oldmm.core, [(v.start, v.end, v.flags) for v in oldmm.vmas
                                            if not v.flags & _DONTCOPY])
    return mm


def dup_mmap(mm: MM, oldmm: MM, copy_spans, cow: bool, blocked) -> None:
    """dup_mmap inside fork's reservation: the counters, the VMAs (VM_DONTCOPY ones left
    out, VM_WIPEONFORK ones emptied, mlock dropped), then the page tables of copy_spans.
    The tables cannot fail to allocate (they were reserved)."""
    mm.total_vm, mm.data_vm = oldmm.total_vm, oldmm.data_vm
    mm.exec_vm, mm.stack_vm = oldmm.exec_vm, oldmm.stack_vm
    mm.start_brk, mm.brk, mm.start_stack = oldmm.start_brk, oldmm.brk, oldmm.start_stack
    mm.start_code, mm.end_code = oldmm.start_code, oldmm.end_code
    vmas = mm.vmas
    for v in oldmm.vmas:
        flags = v.flags
        if flags & _NO_COPY:
            if flags & _DONTCOPY:
                mm.vm_stat_account(flags, -v.npages)
                continue
            anon_vma = None             # VM_WIPEONFORK
        else:
            anon_vma = None if v.anon_vma is None else AnonVma(True)
        vmas.append(v.copy(flags=flags & _NOT_LOCKED, anon_vma=anon_vma))
        if v.backing is not None:
            v.backing.users += 1
    mm.cow_pgtable = oldmm.cow_pgtable
    rc = _fork.fork_copy_ranges(mm.core, oldmm.core, copy_spans, cow, blocked)
    if rc != 0:    # every table came from the reservation: count and copy disagree
        raise RuntimeError("copy_page_range needed more page tables than fork reserved")
    mm.hiwater_rss = mm.rss
    mm.hiwater_vm = mm.total_vm
