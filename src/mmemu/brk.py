"""brk(2), after mm/mmap.c (SYSCALL_DEFINE1(brk) and do_brk_flags).

brk never fails with an errno: it returns the new break, or the unchanged old one.
Left out: RLIMIT_DATA, mlock_future_ok, mm->def_flags (VM_LOCKED via mlockall).
"""
from __future__ import annotations

from .args import page_align, ulong
from .errors import MMError
from .flags import VmFlags
from .mmap import do_vmi_align_munmap, vms_gather_munmap_vmas
from .vma import MMAP_MIN_ADDR, PAGE_SHIFT, PAGE_SIZE, TASK_SIZE, VMA

# VM_DATA_DEFAULT_FLAGS on x86-64 without READ_IMPLIES_EXEC, plus do_brk_flags' VM_ACCOUNT
VM_BRK_FLAGS = (VmFlags.READ | VmFlags.WRITE | VmFlags.MAYREAD | VmFlags.MAYWRITE
                | VmFlags.MAYEXEC | VmFlags.ACCOUNT)
STACK_GUARD_GAP = 256 << PAGE_SHIFT     # stack_guard_gap default: 256 pages


def do_brk(mm, brk) -> int:
    """SYSCALL brk: returns the new break on success, the old one on any failure."""
    brk = ulong(brk)
    origbrk = mm.brk
    if brk < mm.start_brk:
        return origbrk
    newbrk = page_align(brk)
    oldbrk = page_align(mm.brk)
    if oldbrk == newbrk:
        mm.brk = brk
        return brk
    if brk <= mm.brk:
        # always allow shrinking, if the range holds a VMA
        v = mm.find_vma(newbrk)
        if v is None or v.start >= oldbrk:
            return origbrk
        try:
            vms_gather_munmap_vmas(mm, newbrk, oldbrk)
        except MMError:
            return origbrk
        mm.brk = brk
        do_vmi_align_munmap(mm, newbrk, oldbrk)
        return brk
    # check_brk_limits: get_unmapped_area(MAP_FIXED) and the mmap_min_addr check
    length = newbrk - oldbrk
    if length > TASK_SIZE or oldbrk > TASK_SIZE - length or oldbrk < MMAP_MIN_ADDR:
        return origbrk
    # the next VMA must stay clear of the expansion (by the guard gap if it grows down)
    nxt = mm.find_vma(oldbrk)
    if nxt is not None:
        gap_start = nxt.start
        if nxt.flags & VmFlags.GROWSDOWN:
            gap_start = max(nxt.start - STACK_GUARD_GAP, 0)
        if newbrk + PAGE_SIZE > gap_start:
            return origbrk
    if not do_brk_flags(mm, oldbrk, length):
        return origbrk
    mm.brk = brk
    return brk


def do_brk_flags(mm, addr: int, length: int) -> bool:
    """do_brk_flags: extend the brk VMA ending at addr, or create an anonymous one."""
    if mm.map_count > mm.machine.max_map_count:
        return False
    npages = length >> PAGE_SHIFT
    prev = mm.find_vma(addr - 1) if addr else None
    flags = VM_BRK_FLAGS
    new = VMA(addr, addr + length, flags, addr >> PAGE_SHIFT)
    if (prev is not None and prev.end == addr and prev.end > mm.start_brk
            and mm.can_merge(prev, new)):
        prev.end += length          # vma_merge_new_range, just_expand
    else:
        mm.insert(new)
    mm.total_vm += npages
    mm.data_vm += npages
    mm.update_hiwater_vm()
    return True
