"""madvise(2) over an mm, after mm/madvise.c (do_madvise, madvise_vma_behavior,
madvise_guard_install/remove, madvise_populate).

DONTNEED, FREE, REMOVE, POPULATE_READ/WRITE, DONTFORK/DOFORK, WIPEONFORK/KEEPONFORK,
DONTDUMP/DODUMP, HUGEPAGE/NOHUGEPAGE, RANDOM/SEQUENTIAL/NORMAL, the guard regions, and
the hints that change nothing on a machine without readahead, KSM or reclaim, and
MADV_COLLAPSE (mmemu.khugepaged). Left out: HWPOISON/SOFT_OFFLINE (EINVAL: no
CONFIG_MEMORY_FAILURE), process_madvise, lazy freeing under memory pressure (MADV_FREE
frees at once).
"""
from __future__ import annotations

import errno
import operator

from ._core import zap as _zap
from .args import U64, page_align, ulong
from .errors import BusError, MMError, SegmentationFault, einval, enomem
from .file import exclusive_anon_runs, punch_hole
from .flags import Madv, VmFlags
from .khugepaged import madvise_collapse
from .memory import break_cow_pte_range, handle_mm_fault_range, reserve_cow_pte_breaks
from .vma import PAGE_SHIFT, PAGE_SIZE, VMA, AnonVma

# advice with no effect on a machine without swap, KSM or readahead: accepted, no change
MADV_HINTS = frozenset({Madv.WILLNEED, Madv.COLD, Madv.PAGEOUT, Madv.MERGEABLE, Madv.UNMERGEABLE})


def do_madvise(mm, addr, length, advice) -> int:
    """do_madvise: returns 0 or raises MMError. Unmapped parts of the range give ENOMEM
    after the mapped parts were advised, as in Linux."""
    addr, length = ulong(addr), ulong(length)
    advice = operator.index(advice)
    try:
        advice = Madv(advice)
    except ValueError:
        raise einval(f"unknown advice {advice}") from None
    if advice in (Madv.HWPOISON, Madv.SOFT_OFFLINE):
        # the development kernel has no CONFIG_MEMORY_FAILURE: madvise_behavior_valid
        # refuses them (with it, root would poison the page and others get EPERM)
        raise einval("MADV_HWPOISON/MADV_SOFT_OFFLINE: no CONFIG_MEMORY_FAILURE")
    if addr & (PAGE_SIZE - 1):
        raise einval("address not page aligned")
    alen = page_align(length) & U64
    if length and not alen:
        raise einval("length overflows")
    end = (addr + alen) & U64
    if end < addr:
        raise einval("range wraps")
    if end == addr:
        return 0
    if advice not in MADV_HINTS:
        reserve_cow_pte_breaks(mm, addr, end)     # breaking shared page tables: all or nothing
    if advice in (Madv.POPULATE_READ, Madv.POPULATE_WRITE):
        return madvise_populate(mm, addr, end, advice == Madv.POPULATE_WRITE)
    unmapped = False
    start = addr
    while True:
        vma = mm.find_vma(start)
        if vma is None:
            raise enomem("range extends past the last mapping")
        if start < vma.start:
            unmapped = True
            start = vma.start
            if start >= end:
                break
        tmp = min(vma.end, end)
        madvise_vma_behavior(mm, vma, start, tmp, advice)
        start = tmp
        if start >= end:
            break
    if unmapped:
        raise enomem("range has unmapped parts (the mapped parts were advised)")
    return 0


def _check_guard_vma(vma: VMA, install: bool) -> None:
    """madvise_guard_install/remove's VMA check: VM_SPECIAL, hugetlb and (for install)
    VM_LOCKED mappings give EINVAL."""
    disallowed = (VmFlags.IO | VmFlags.DONTEXPAND | VmFlags.PFNMAP | VmFlags.MIXEDMAP
                  | VmFlags.HUGETLB | (VmFlags.LOCKED if install else 0))
    if vma.flags & disallowed:
        raise einval("guard regions are not allowed in this mapping")


def madvise_guard_install(mm, vma: VMA, start: int, end: int) -> None:
    """madvise_guard_install: zap the range (its pages go) and put a guard marker in every
    PTE; an access there raises SIGSEGV. Markers survive DONTNEED, FREE, mprotect and
    truncation, move with mremap, are copied at fork (the VMA gets VM_MAYBE_GUARD, without
    a split), and go with munmap/exit or GUARD_REMOVE."""
    _check_guard_vma(vma, True)
    break_cow_pte_range(mm, start, end)
    mm.update_hiwater_rss()
    _zap.zap(mm.core, start, end, False)
    if _zap.guard_install(mm.core, start, end) < 0:
        raise enomem("no frame for the page tables of a guard region")
    vma.set_flags(vma.flags | VmFlags.MAYBE_GUARD)
    if vma.is_anonymous and vma.anon_vma is None:
        vma.anon_vma = AnonVma()      # anon_vma_prepare: the range has page-table state


def madvise_guard_remove(mm, vma: VMA, start: int, end: int) -> None:
    """madvise_guard_remove: clear the guard markers of [start, end) (other PTEs stay)."""
    _check_guard_vma(vma, False)
    break_cow_pte_range(mm, start, end)
    _zap.guard_remove(mm.core, start, end)


def madvise_populate(mm, start: int, end: int, write: bool) -> int:
    """madvise_populate / faultin_page_range: fault in [start, end) page by page like
    MAP_POPULATE, but report errors: no VMA at an address -> ENOMEM (earlier pages stay
    populated), check_vma_flags refusing the access -> EINVAL (VM_READ needed to read,
    VM_WRITE to write; no x86 write-implies-read here), SIGBUS -> EFAULT. A write gives
    the mm private copies of the shared page tables of each VMA's part only when that part
    is about to be faulted (as the series breaks them in the fault): a hole or a refused
    VMA before it leaves its tables shared."""
    pos = start
    while pos < end:
        vma = mm.vma_at(pos)
        if vma is None:
            raise enomem("MADV_POPULATE: address not mapped")
        need = VmFlags.WRITE if write else VmFlags.READ
        if vma.flags & (VmFlags.IO | VmFlags.PFNMAP) or not (vma.flags & need):
            raise einval("MADV_POPULATE: mapping does not allow the access")
        stop = min(end, vma.end)
        if write:
            break_cow_pte_range(mm, pos, stop)
        try:
            handle_mm_fault_range(mm, vma, pos, stop, write)
        except (BusError, SegmentationFault) as e:
            raise MMError(errno.EFAULT, f"MADV_POPULATE: fault at {e.address:#x}") from None
        pos = stop
    return 0


def madvise_vma_behavior(mm, vma: VMA, start: int, end: int, advice: Madv) -> None:
    """madvise_vma_behavior (and madvise_dontneed_free, madvise_remove) for the part
    [start, end) of one VMA: a flag change splits the VMA (ENOMEM there becomes EAGAIN)."""
    if advice == Madv.GUARD_INSTALL:
        madvise_guard_install(mm, vma, start, end)
        return
    if advice == Madv.GUARD_REMOVE:
        madvise_guard_remove(mm, vma, start, end)
        return
    if advice == Madv.COLLAPSE:
        madvise_collapse(mm, vma, start, end)
        return
    if advice == Madv.FREE:
        # madvise_free_single_vma. Lazy free is modelled as the reclaim that discards
        # the clean lazyfree pages at once: exclusive anon pages are zapped now (reads
        # give zeros, RssAnon drops); COW-shared pages are skipped as Linux skips them.
        if vma.flags & (VmFlags.PFNMAP | VmFlags.LOCKED) or not vma.is_anonymous:
            raise einval("MADV_FREE needs a private anonymous, unlocked mapping")
        break_cow_pte_range(mm, start, end)
        mm.update_hiwater_rss()
        for s, e in exclusive_anon_runs(mm, start, end):
            _zap.zap(mm.core, s, e, False)
        return
    if advice == Madv.REMOVE:
        # madvise_remove: punch a hole in the backing file / shmem object
        if vma.flags & VmFlags.LOCKED or vma.backing is None:
            raise einval("MADV_REMOVE on a locked or anonymous private mapping")
        if (vma.flags & (VmFlags.SHARED | VmFlags.MAYWRITE)) != (VmFlags.SHARED | VmFlags.MAYWRITE):
            raise MMError(errno.EACCES, "MADV_REMOVE needs a shared writable mapping")
        first = vma.pgoff + ((start - vma.start) >> PAGE_SHIFT)
        punch_hole(mm.machine, vma.backing, first, first + ((end - start) >> PAGE_SHIFT))
        return
    if advice in (Madv.DONTNEED, Madv.DONTNEED_LOCKED):
        forbidden = VmFlags.PFNMAP | (VmFlags.LOCKED if advice == Madv.DONTNEED else 0)
        if vma.flags & forbidden:
            raise einval("DONTNEED on a locked or PFN mapping")
        mm.update_hiwater_rss()
        break_cow_pte_range(mm, start, end)
        _zap.zap(mm.core, start, end, True)
        return
    if advice in MADV_HINTS:
        return
    new = vma.flags
    if advice == Madv.NORMAL:
        new &= ~(VmFlags.RAND_READ | VmFlags.SEQ_READ)
    elif advice == Madv.RANDOM:
        new = (new & ~VmFlags.SEQ_READ) | VmFlags.RAND_READ
    elif advice == Madv.SEQUENTIAL:
        new = (new & ~VmFlags.RAND_READ) | VmFlags.SEQ_READ
    elif advice == Madv.DONTFORK:
        if vma.flags & VmFlags.IO:
            raise einval("DONTFORK on VM_IO")
        new |= VmFlags.DONTCOPY
    elif advice == Madv.DOFORK:
        if vma.flags & VmFlags.IO:
            raise einval("DOFORK on VM_IO")
        new &= ~VmFlags.DONTCOPY
    elif advice == Madv.WIPEONFORK:
        if vma.backing is not None or vma.flags & VmFlags.SHARED:
            raise einval("WIPEONFORK on a file or shared mapping")
        new |= VmFlags.WIPEONFORK
    elif advice == Madv.KEEPONFORK:
        new &= ~VmFlags.WIPEONFORK
    elif advice == Madv.DONTDUMP:
        new |= VmFlags.DONTDUMP
    elif advice == Madv.DODUMP:
        if vma.flags & (VmFlags.IO | VmFlags.DONTEXPAND | VmFlags.PFNMAP | VmFlags.MIXEDMAP):
            raise einval("DODUMP on a special mapping")
        new &= ~VmFlags.DONTDUMP
    elif advice == Madv.HUGEPAGE:
        new = (new & ~VmFlags.NOHUGEPAGE) | VmFlags.HUGEPAGE
    elif advice == Madv.NOHUGEPAGE:
        new = (new & ~VmFlags.HUGEPAGE) | VmFlags.NOHUGEPAGE
    if new == vma.flags:
        return
    if advice in (Madv.DONTFORK, Madv.WIPEONFORK):
        break_cow_pte_range(mm, start, end)      # the series breaks COW tables here too
    try:
        vma = mm.vma_modify(vma, start, end)
    except MMError as e:
        if e.errno == errno.ENOMEM:     # madvise_vma_behavior: ENOMEM becomes EAGAIN
            raise MMError(errno.EAGAIN, "VMA split refused at max_map_count") from None
        raise
    vma.set_flags(new)
    mm.try_merge_around(vma)
