"""mmap(2), munmap(2) and exit_mmap over an mm, after mm/mmap.c and mm/vma.c, and the
populate loop of mm/gup.c.

Every check comes before any change and raises MMError with Linux's errno, in Linux's
order. The page-table work is the Cython kernels (_core.zap, _core.cow_pte); a munmap
reserves the frames for private copies of the COW-shared tables it cuts first, so it is
all or nothing. Left out: rlimits (RLIMIT_AS, RLIMIT_MEMLOCK), commit accounting
(VM_ACCOUNT is set but charges nothing), mseal, hugetlb, userfaultfd, ASLR.
"""
from __future__ import annotations

import errno
import operator

from ._core import cow_pte as _cow_pte
from ._core import zap as _zap
from .args import U64, page_align, ulong, uint
from .errors import BusError, MMError, SegmentationFault, einval, enomem
from .file import File, fdget, file_mmap_checks
from .flags import MapFlags, Prot, VmFlags
from .memory import handle_mm_fault_range, reserve_cow_pte_breaks
from .vma import (
    MMAP_MIN_ADDR, PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, TASK_SIZE, VM_ACCESS_FLAGS, VMA,
)


def calc_vm_prot_bits(prot: int) -> int:
    """calc_vm_prot_bits: PROT_READ/WRITE/EXEC as VM_READ/WRITE/EXEC (the same bits)."""
    return prot & (Prot.READ | Prot.WRITE | Prot.EXEC)


def sys_mmap(mm, addr, length, prot, flags, fd=-1, offset=0, file=None) -> int:
    """SYSCALL mmap + ksys_mmap_pgoff: the arguments as the kernel's C types, the offset
    alignment (EINVAL), the file from ``file=`` or a File passed as fd (fdget: EBADF
    without one and without MAP_ANONYMOUS, or for a File of another machine or one
    unlinked and freed; MAP_HUGETLB on it is EINVAL), then do_mmap."""
    addr, length = ulong(addr), ulong(length)    # unsigned long, as the ABI passes them
    prot, flags = uint(prot), uint(flags)
    if not isinstance(fd, File):
        fd = operator.index(fd)
    offset = ulong(offset)
    if offset & (PAGE_SIZE - 1):
        raise einval("offset not page aligned")
    if file is None and isinstance(fd, File):
        file = fd
    if flags & MapFlags.ANONYMOUS:
        file = None
    elif file is None:
        raise MMError(errno.EBADF, "no file and no MAP_ANONYMOUS")
    else:
        fdget(mm.machine, file)
        if flags & MapFlags.HUGETLB:
            raise einval("MAP_HUGETLB on a file that is not on hugetlbfs")
    return do_mmap(mm, file, addr, length, prot, flags, offset >> PAGE_SHIFT)


def do_mmap(mm, file, addr: int, length: int, prot: int, flags: int, pgoff_file: int) -> int:
    """do_mmap + __get_unmapped_area + mmap_region: checks, the address, the VMA (merged
    with its neighbours where it may be), MAP_FIXED's unmap, and MAP_POPULATE/MAP_LOCKED's
    populate. Returns the address."""
    machine = mm.machine
    if length == 0:
        raise einval("length is 0")
    if flags & MapFlags.FIXED_NOREPLACE:
        flags |= MapFlags.FIXED     # do_mmap: NOREPLACE is FIXED that refuses to unmap
    if not (flags & MapFlags.FIXED) and addr:
        addr &= ~(PAGE_SIZE - 1)
        addr = max(addr, MMAP_MIN_ADDR)
    length = page_align(length)
    if length == 0 or length > TASK_SIZE:
        raise enomem("length too large")
    if mm.map_count > machine.max_map_count:
        raise enomem("too many mappings")
    maptype = flags & MapFlags.TYPE
    if file is not None:
        if pgoff_file + (length >> PAGE_SHIFT) > U64:
            raise MMError(errno.EOVERFLOW, "offset + length overflows")
    elif maptype not in (MapFlags.SHARED, MapFlags.PRIVATE):
        raise einval("map type must be MAP_SHARED or MAP_PRIVATE")
    if maptype == MapFlags.SHARED and flags & MapFlags.GROWSDOWN:
        raise einval("MAP_SHARED with MAP_GROWSDOWN")

    vm_flags = calc_vm_prot_bits(prot) | VmFlags.MAYREAD | VmFlags.MAYWRITE | VmFlags.MAYEXEC
    if flags & MapFlags.GROWSDOWN:
        vm_flags |= VmFlags.GROWSDOWN
    if flags & MapFlags.LOCKED:
        vm_flags |= VmFlags.LOCKED
    if flags & MapFlags.NORESERVE:
        vm_flags |= VmFlags.NORESERVE
    if maptype == MapFlags.SHARED:
        vm_flags |= VmFlags.SHARED | VmFlags.MAYSHARE

    # __get_unmapped_area
    if flags & MapFlags.FIXED:
        if addr > TASK_SIZE - length:
            raise enomem("range beyond TASK_SIZE")
        if addr & (PAGE_SIZE - 1):
            raise einval("MAP_FIXED address not page aligned")
        if flags & MapFlags.FIXED_NOREPLACE and mm.overlapping(addr, addr + length):
            raise MMError(errno.EEXIST, "MAP_FIXED_NOREPLACE range is in use")
    else:
        align, phase = thp_get_unmapped_area(file, maptype, length, pgoff_file)
        hint_ok = (addr and addr <= TASK_SIZE - length
                   and not mm.overlapping(addr, addr + length))
        if not hint_ok:
            a = mm.get_unmapped_area(length, align, phase)
            if a is None:
                raise enomem("no free range of that size")
            addr = a
    end = addr + length
    if file is not None:
        vm_flags = file_mmap_checks(file, prot, flags, length, pgoff_file, vm_flags)

    # MAP_FIXED replaces what is there: that unmap can only fail on map_count
    if flags & MapFlags.FIXED:
        vms_gather_munmap_vmas(mm, addr, end)

    backing = None
    pgoff = addr >> PAGE_SHIFT
    if file is not None:
        backing, pgoff = file, pgoff_file
        # accountable_mapping: private writable file mappings are charged
        if (vm_flags & (VmFlags.NORESERVE | VmFlags.SHARED | VmFlags.WRITE)) == VmFlags.WRITE:
            vm_flags |= VmFlags.ACCOUNT
    elif maptype == MapFlags.SHARED:
        backing = machine.shmem_zero_setup(length)
        pgoff = 0
    elif not (vm_flags & VmFlags.NORESERVE) and vm_flags & VmFlags.WRITE:
        vm_flags |= VmFlags.ACCOUNT

    if flags & MapFlags.FIXED:
        do_vmi_align_munmap(mm, addr, end)
    vma = VMA(addr, end, vm_flags, pgoff, backing)
    mm.insert(vma)
    if backing is None or backing is file:
        mm.try_merge_around(vma)
    mm.vm_stat_account(vm_flags, length >> PAGE_SHIFT)
    mm.update_hiwater_vm()
    if vm_flags & VmFlags.LOCKED:
        mm.locked_vm += length >> PAGE_SHIFT
    if (vm_flags & VmFlags.LOCKED) or (flags & (MapFlags.POPULATE | MapFlags.NONBLOCK)) == MapFlags.POPULATE:
        mm_populate(mm, addr, end, ignore_errors=True)
    return addr


def mm_populate(mm, start: int, end: int, ignore_errors: bool) -> None:
    """__mm_populate / populate_vma_page_range: write-fault private writable VMAs,
    read-fault the rest; PROT_NONE VMAs are skipped. With ignore_errors (mmap, mlock)
    the first failure ends the loop quietly, as the kernel ignores it there."""
    for v in mm.overlapping(start, end):
        if not (v.flags & VM_ACCESS_FLAGS):
            continue
        write = (v.flags & (VmFlags.WRITE | VmFlags.SHARED)) == VmFlags.WRITE
        try:
            handle_mm_fault_range(mm, v, max(start, v.start), min(end, v.end), write)
        except (MMError, BusError, SegmentationFault):
            if not ignore_errors:
                raise
            return


def do_vmi_munmap(mm, start: int, length: int) -> None:
    """do_vmi_munmap: munmap's argument checks (EINVAL), then do_munmap."""
    if start & (PAGE_SIZE - 1) or start > TASK_SIZE or length > TASK_SIZE - start:
        raise einval("bad address or length")
    length = page_align(length)
    if length == 0:
        raise einval("length is 0")
    do_munmap(mm, start, start + length)


def do_munmap(mm, start: int, end: int) -> None:
    """Unmap [start, end): the checks, then the work (nothing changes if a check fails)."""
    vms_gather_munmap_vmas(mm, start, end)
    do_vmi_align_munmap(mm, start, end)


def vms_gather_munmap_vmas(mm, start: int, end: int) -> None:
    """What can make vms_gather_munmap_vmas fail, checked before anything changes: a split
    that leaves both sides must respect max_map_count; and the partly unmapped COW-shared
    tables must fit a private copy (reserved here). MMError(ENOMEM)."""
    first = mm.find_vma(start)
    if first is not None and first.start < start and end < first.end:
        if mm.map_count >= mm.machine.max_map_count:
            raise enomem("split would exceed max_map_count")
    reserve_cow_pte_breaks(mm, start, end, unmap=True)


def thp_get_unmapped_area(file, maptype: int, length: int, pgoff: int):
    """The alignment __get_unmapped_area asks for, as (align, phase): the address is to be
    phase modulo align. A private anonymous mapping of whole 2 MiB pieces is PMD-aligned
    (thp_get_unmapped_area_vmflags); a disk file's mapping (ext4's get_unmapped_area is
    thp_get_unmapped_area) that covers an aligned 2 MiB of the file gets an address
    congruent to its file offset modulo 2 MiB, so that its PMD-sized folios can map by
    PMDs. Shared anonymous and tmpfs mappings: none (shmem_get_unmapped_area with
    shmem_enabled never)."""
    if file is None:
        return (PMD_SIZE if length % PMD_SIZE == 0 and maptype == MapFlags.PRIVATE else 0), 0
    off = pgoff << PAGE_SHIFT
    if getattr(file, "swapbacked", True) or \
            (off + length) & ~(PMD_SIZE - 1) < ((off + PMD_SIZE - 1) & ~(PMD_SIZE - 1)) + PMD_SIZE:
        return 0, 0
    return PMD_SIZE, off & (PMD_SIZE - 1)


def do_vmi_align_munmap(mm, start: int, end: int) -> None:
    """do_vmi_align_munmap after its checks (vms_gather_munmap_vmas): split, zap, free page
    tables by floor/ceiling (free_pgtables), drop the VMAs."""
    if not mm.overlapping(start, end):
        return
    if not _cow_pte.unmap_range(mm.core, start, end):
        raise enomem("no free frame for a private copy of a shared page table")
    victims = mm.isolate(start, end)
    prev, nxt = mm.neighbours(start, end)
    mm.update_hiwater_rss()
    for v in victims:
        _zap.zap(mm.core, v.start, v.end, False, True)       # guard markers go too
    # free_pgtables: batch VMAs within PMD_SIZE of each other
    floor = prev.end if prev is not None else 0
    ceiling = nxt.start if nxt is not None else 0
    batches = []
    i = 0
    while i < len(victims):
        addr = victims[i].start
        j = i
        while j + 1 < len(victims) and victims[j + 1].start <= victims[j].end + PMD_SIZE:
            j += 1
        c = victims[j + 1].start if j + 1 < len(victims) else ceiling
        batches.append((addr, victims[j].end, floor, c))
        i = j + 1
    _zap.free_pgtables(mm.core, batches)
    for v in victims:
        n = v.npages
        mm.vm_stat_account(v.flags, -n)
        if v.flags & VmFlags.LOCKED:
            mm.locked_vm -= n
        mm.remove(v)


def exit_mmap(mm) -> None:
    """exit_mmap: zap every VMA, free all page tables and the PGD, drop the VMAs."""
    mm.update_hiwater_rss()
    _cow_pte.unmap_range(mm.core, 0, 1 << 47, True)  # drop every shared table: no frame needed
    _zap.exit_mmap(mm.core, [(v.start, v.end) for v in mm.vmas])
    mm.core.release()
    for v in list(mm.vmas):
        mm.remove(v)
    mm.total_vm = mm.data_vm = mm.exec_vm = mm.stack_vm = mm.locked_vm = 0
