"""Process: the syscall surface (mmap, munmap, mprotect, madvise, fork, execve, exit) and
memory access (read, write, touch).

Every syscall validates its arguments before it changes anything and raises MMError with
the errno Linux returns; accesses Linux answers with a signal raise SegmentationFault.
"""
from __future__ import annotations

import errno
import operator
import os
from typing import List, Optional

import numpy as np

from ._core import fault as _fault
from ._core import cow_pte as _cow_pte
from ._core import zap as _zap
from .errors import BusError, MMError, SegmentationFault, einval, enomem
from .file import MAX_RW_COUNT, File, _file_mmap_checks, exclusive_anon_runs, punch_hole
from .flags import PR_GET_COW_PTE, PR_SET_COW_PTE, CloneFlags, Madv, MapFlags, Prot, VmFlags
from .mm import MM
from .reserve import syscall_scope, top_up
from .vma import (
    MMAP_MIN_ADDR, PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, TASK_SIZE, VM_ACCESS_FLAGS, VMA,
    AnonVma,
)

FAULT_OK, FAULT_OOM, FAULT_SIGBUS, FAULT_SIGSEGV = 0, 1, 2, 3

_PROT_VALID = Prot.READ | Prot.WRITE | Prot.EXEC | Prot.SEM
_MAP_KNOWN = (
    MapFlags.TYPE | MapFlags.FIXED | MapFlags.ANONYMOUS | MapFlags.GROWSDOWN
    | MapFlags.DENYWRITE | MapFlags.EXECUTABLE | MapFlags.LOCKED | MapFlags.NORESERVE
    | MapFlags.POPULATE | MapFlags.NONBLOCK | MapFlags.STACK | MapFlags.HUGETLB
    | MapFlags.SYNC | MapFlags.FIXED_NOREPLACE | MapFlags.UNINITIALIZED
)


_U64 = (1 << 64) - 1
PAGEMAP_MAX_PAGES = MAX_RW_COUNT // 8    # one read(2) of /proc/PID/pagemap: 8 bytes a page


def ulong(x) -> int:
    """An integer syscall argument as the unsigned long the kernel sees. Only integers
    are arguments (int, bool, numpy integers, IntFlag: anything with __index__); a str,
    float, None or bytes raises TypeError before anything changes."""
    return operator.index(x) & _U64


def uint(x) -> int:
    """An int syscall argument (prot, flags) as the kernel's unsigned int."""
    return operator.index(x) & 0xFFFFFFFF


def page_align(n: int) -> int:
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def calc_vm_prot_bits(prot: int) -> int:
    return prot & (Prot.READ | Prot.WRITE | Prot.EXEC)


class Process:
    """A task with its own address space. Create with ``Machine.spawn()`` or ``fork()``."""

    def __init__(self, machine, pid: int, parent: Optional["Process"] = None):
        self.machine = machine
        self.pid = pid
        self.parent = parent
        self.children: List[Process] = []
        self.alive = True
        self.mm = MM(machine)
        if not self.mm.core.pgd_alloc():
            raise enomem("no frame for the PGD")

    def __repr__(self) -> str:
        state = "alive" if self.alive else "exited"
        return f"<Process pid={self.pid} {state} vmas={self.mm.map_count}>"

    def _check_alive(self) -> None:
        if not self.alive:
            raise MMError(errno.ESRCH, f"process {self.pid} has exited")

    # ------------------------------------------------------------------ mmap
    @syscall_scope
    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int = -1, offset: int = 0,
             *, file=None) -> int:
        """mmap(2): anonymous memory (MAP_ANONYMOUS, MAP_PRIVATE or MAP_SHARED) or a file
        (``file=`` a mmemu File from Machine.create_file, or that File passed as fd) with
        MAP_PRIVATE, MAP_SHARED or MAP_SHARED_VALIDATE at byte ``offset``.

        Returns the mapped address. Raises MMError with Linux's errno (EBADF without a file
        and without MAP_ANONYMOUS).
        """
        self._check_alive()
        mm = self.mm
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
        elif flags & MapFlags.HUGETLB:
            raise einval("MAP_HUGETLB on a file that is not on hugetlbfs")
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
        if mm.map_count > self.machine.max_map_count:
            raise enomem("too many mappings")
        maptype = flags & MapFlags.TYPE
        if file is not None:
            pgoff_file = offset >> PAGE_SHIFT
            if pgoff_file + (length >> PAGE_SHIFT) > _U64:
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
            align = PMD_SIZE if (length % PMD_SIZE == 0 and maptype == MapFlags.PRIVATE
                                 and file is None) else 0
            hint_ok = (addr and addr <= TASK_SIZE - length
                       and not mm.overlapping(addr, addr + length))
            if not hint_ok:
                a = mm.get_unmapped_area(length, align)
                if a is None:
                    raise enomem("no free range of that size")
                addr = a
        end = addr + length
        if file is not None:
            vm_flags = _file_mmap_checks(file, prot, flags, length, pgoff_file, vm_flags)

        # MAP_FIXED replaces what is there: that unmap can only fail on map_count
        if flags & MapFlags.FIXED:
            self._munmap_check_split(addr, end)

        backing = None
        pgoff = addr >> PAGE_SHIFT
        if file is not None:
            backing, pgoff = file, pgoff_file
            # accountable_mapping: private writable file mappings are charged
            if (vm_flags & (VmFlags.NORESERVE | VmFlags.SHARED | VmFlags.WRITE)) == VmFlags.WRITE:
                vm_flags |= VmFlags.ACCOUNT
        elif maptype == MapFlags.SHARED:
            backing = self.machine._new_shmem(length)
            pgoff = 0
        elif not (vm_flags & VmFlags.NORESERVE) and vm_flags & VmFlags.WRITE:
            vm_flags |= VmFlags.ACCOUNT

        if flags & MapFlags.FIXED:
            self._do_munmap(addr, end)
        vma = VMA(addr, end, vm_flags, pgoff, backing)
        mm.insert(vma)
        if backing is None or backing is file:
            mm.try_merge_around(vma)
        mm.vm_stat_account(vm_flags, length >> PAGE_SHIFT)
        mm.update_hiwater_vm()
        if vm_flags & VmFlags.LOCKED:
            mm.locked_vm += length >> PAGE_SHIFT
        if (vm_flags & VmFlags.LOCKED) or (flags & (MapFlags.POPULATE | MapFlags.NONBLOCK)) == MapFlags.POPULATE:
            self._populate(addr, end, ignore_errors=True)
        return addr

    def _populate(self, start: int, end: int, ignore_errors: bool) -> None:
        """__mm_populate: write-fault private writable VMAs, read-fault the rest."""
        for v in self.mm.overlapping(start, end):
            if not (v.flags & VM_ACCESS_FLAGS):
                continue
            write = (v.flags & (VmFlags.WRITE | VmFlags.SHARED)) == VmFlags.WRITE
            try:
                self._access_vma(v, max(start, v.start), min(end, v.end), write, None, 0)
            except (MMError, BusError, SegmentationFault):
                if not ignore_errors:
                    raise
                return

    def _unshare_pte_tables(self, start: int, end: int) -> None:
        """break_cow_pte over [start, end): give this mm private copies of any COW-shared PTE
        tables covering the range. Every path that changes PTEs calls this first.
        MMError(ENOMEM), with nothing changed, if the copies do not fit in free memory."""
        if not _cow_pte.unshare_range(self.mm.core, start, end):
            raise enomem("no free frame for a private copy of a shared page table")

    def _check_cow_frames(self, start: int, end: int, unmap: bool = False) -> None:
        """Before a syscall changes anything: reserve the frames that breaking the COW-shared
        page tables of [start, end) needs, or ENOMEM (so the call is all or nothing)."""
        need = _cow_pte.break_count(self.mm.core, start, end, unmap)
        top_up(self.machine.phys, need, "breaking the shared page tables of the range")

    # ------------------------------------------------------------------ munmap
    @syscall_scope
    def munmap(self, addr: int, length: int) -> int:
        """munmap(2). Returns 0."""
        self._check_alive()
        addr, length = ulong(addr), ulong(length)
        if addr & (PAGE_SIZE - 1) or addr > TASK_SIZE or length > TASK_SIZE - addr:
            raise einval("bad address or length")
        length = page_align(length)
        if length == 0:
            raise einval("length is 0")
        end = addr + length
        self._munmap_check_split(addr, end)
        self._do_munmap(addr, end)
        return 0

    def _munmap_check_split(self, start: int, end: int) -> None:
        """vms_gather_munmap_vmas: a split that leaves both sides must respect max_map_count;
        and the partly unmapped COW-shared tables must fit a private copy."""
        first = self.mm.find_vma(start)
        if first is not None and first.start < start and end < first.end:
            if self.mm.map_count >= self.machine.max_map_count:
                raise enomem("split would exceed max_map_count")
        self._check_cow_frames(start, end, unmap=True)

    def _do_munmap(self, start: int, end: int) -> None:
        """do_vmi_align_munmap: split, zap, free page tables by floor/ceiling, drop VMAs."""
        mm = self.mm
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

    # ------------------------------------------------------------------ mremap / brk
    @syscall_scope
    def mremap(self, old_addr: int, old_len: int, new_len: int, flags: int = 0, new_addr: int = 0) -> int:
        """mremap(2) with MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_DONTUNMAP (see mmemu.mremap).

        Returns the address of the resized or moved mapping."""
        from .mremap import do_mremap
        return do_mremap(self, old_addr, old_len, new_len, flags, new_addr)

    @syscall_scope
    def brk(self, addr: int) -> int:
        """brk(2): returns the new break, or the unchanged old one on failure (no errno)."""
        from .brk import do_brk
        return do_brk(self, addr)

    # ------------------------------------------------------------------ mprotect
    @syscall_scope
    def mprotect(self, addr: int, length: int, prot: int) -> int:
        """mprotect(2). Not atomic over holes, like Linux: earlier VMAs keep the change."""
        self._check_alive()
        addr, length = ulong(addr), ulong(length)
        prot = uint(prot)
        grows = prot & (Prot.GROWSDOWN | Prot.GROWSUP)
        prot &= ~(Prot.GROWSDOWN | Prot.GROWSUP)
        if grows == (Prot.GROWSDOWN | Prot.GROWSUP):
            raise einval("PROT_GROWSDOWN and PROT_GROWSUP")
        if addr & (PAGE_SIZE - 1):
            raise einval("address not page aligned")
        if length == 0:
            return 0
        length = page_align(length)
        end = addr + length
        if end <= addr or end > (1 << 64):
            raise enomem("range wraps")
        if prot & ~_PROT_VALID:
            raise einval("unknown prot bits")
        mm = self.mm
        vma = mm.find_vma(addr)
        if vma is None or vma.start >= end:
            raise enomem("no mapping in range")
        if grows & Prot.GROWSDOWN:
            addr = vma.start
            if not (vma.flags & VmFlags.GROWSDOWN):
                raise einval("PROT_GROWSDOWN on a mapping that does not grow down")
        elif vma.start > addr:
            raise enomem("no mapping at address")
        if grows & Prot.GROWSUP:
            raise einval("PROT_GROWSUP: no VM_GROWSUP mappings on x86-64")
        self._check_cow_frames(addr, end)
        nstart = addr
        while nstart < end:
            vma = mm.find_vma(nstart)
            if vma is None or vma.start >= end:
                break
            if vma.start > nstart:
                raise enomem("hole in range (earlier mappings were changed)")
            newflags = calc_vm_prot_bits(prot) | (vma.flags & ~VM_ACCESS_FLAGS)
            if (newflags & ~(newflags >> 4)) & VM_ACCESS_FLAGS:
                raise MMError(errno.EACCES, "protection not allowed by the mapping")
            tmp = min(vma.end, end)
            self._mprotect_fixup(vma, nstart, tmp, newflags)
            nstart = tmp
        if nstart < end:
            raise enomem("range extends past the last mapping")
        return 0

    def _mprotect_fixup(self, vma: VMA, start: int, end: int, newflags: int) -> None:
        """mprotect_fixup: split/merge, recount, change_protection."""
        mm = self.mm
        oldflags = vma.flags
        if newflags == oldflags:
            return
        if newflags & VmFlags.WRITE:
            if not (oldflags & (VmFlags.ACCOUNT | VmFlags.WRITE | VmFlags.SHARED | VmFlags.NORESERVE)):
                newflags |= VmFlags.ACCOUNT
        elif (oldflags & VmFlags.ACCOUNT) and vma.is_anonymous and vma.anon_vma is None:
            newflags &= ~VmFlags.ACCOUNT
        vma = self._split_for(vma, start, end)
        npages = vma.npages
        vma.set_flags(newflags)
        mm.vm_stat_account(oldflags, -npages)
        mm.vm_stat_account(newflags, npages)
        if newflags & VmFlags.SHARED:
            try_writable = False      # shmem: no write-notify, RW comes with vm_page_prot
        else:
            try_writable = bool(newflags & VmFlags.WRITE)
        self._unshare_pte_tables(vma.start, vma.end)
        _zap.protect(mm.core, vma.start, vma.end, vma.page_prot, try_writable, bool(newflags & VmFlags.SHARED))
        start, end = vma.start, vma.end
        mm.try_merge_around(vma)
        if ((newflags & VmFlags.LOCKED) and (newflags & VmFlags.WRITE) and not (oldflags & VmFlags.WRITE)
                and not (newflags & VmFlags.SHARED)):
            # mprotect_fixup: a locked private mapping that becomes writable is COW-broken now
            self._populate(start, end, ignore_errors=True)

    # ------------------------------------------------------------------ madvise
    # advice with no effect on a machine without swap, KSM or readahead: accepted, no change
    _MADV_HINTS = {Madv.WILLNEED, Madv.COLD, Madv.PAGEOUT, Madv.MERGEABLE, Madv.UNMERGEABLE}

    @syscall_scope
    def madvise(self, addr: int, length: int, advice: int) -> int:
        """madvise(2): DONTNEED, FREE, REMOVE, POPULATE_READ/WRITE, DONTFORK/DOFORK,
        WIPEONFORK/KEEPONFORK, GUARD_INSTALL/GUARD_REMOVE, and the hints."""
        self._check_alive()
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
        if advice == Madv.COLLAPSE:
            raise einval("MADV_COLLAPSE: transparent huge pages are off")
        if addr & (PAGE_SIZE - 1):
            raise einval("address not page aligned")
        alen = page_align(length) & _U64
        if length and not alen:
            raise einval("length overflows")
        end = (addr + alen) & _U64
        if end < addr:
            raise einval("range wraps")
        if end == addr:
            return 0
        if advice not in self._MADV_HINTS:
            self._check_cow_frames(addr, end)     # breaking shared page tables: all or nothing
        if advice in (Madv.POPULATE_READ, Madv.POPULATE_WRITE):
            return self._madvise_populate(addr, end, advice == Madv.POPULATE_WRITE)
        mm = self.mm
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
            self._madvise_vma(vma, start, tmp, advice)
            start = tmp
            if start >= end:
                break
        if unmapped:
            raise enomem("range has unmapped parts (the mapped parts were advised)")
        return 0

    def _madvise_guard(self, vma: VMA, start: int, end: int, install: bool) -> None:
        """madvise_guard_install / madvise_guard_remove: guard-region PTE markers.

        Install zaps the range (its pages go) and puts a marker in every PTE; an access
        there raises SIGSEGV. Markers survive DONTNEED, FREE, mprotect and truncation,
        move with mremap, are copied at fork (the VMA gets VM_MAYBE_GUARD, without a
        split), and go with munmap/exit or GUARD_REMOVE. VM_SPECIAL, hugetlb and (for
        install) VM_LOCKED mappings give EINVAL."""
        disallowed = (VmFlags.IO | VmFlags.DONTEXPAND | VmFlags.PFNMAP | VmFlags.MIXEDMAP
                      | VmFlags.HUGETLB | (VmFlags.LOCKED if install else 0))
        if vma.flags & disallowed:
            raise einval("guard regions are not allowed in this mapping")
        mm = self.mm
        self._unshare_pte_tables(start, end)
        if not install:
            _zap.guard_remove(mm.core, start, end)
            return
        mm.update_hiwater_rss()
        _zap.zap(mm.core, start, end, False)
        if _zap.guard_install(mm.core, start, end) < 0:
            raise enomem("no frame for the page tables of a guard region")
        vma.set_flags(vma.flags | VmFlags.MAYBE_GUARD)
        if vma.is_anonymous and vma.anon_vma is None:
            vma.anon_vma = AnonVma()      # anon_vma_prepare: the range has page-table state

    def _madvise_populate(self, start: int, end: int, write: bool) -> int:
        """madvise_populate / faultin_page_range: fault in [start, end) page by page like
        MAP_POPULATE, but report errors: no VMA at an address -> ENOMEM (earlier pages stay
        populated), check_vma_flags refusing the access -> EINVAL (VM_READ needed to read,
        VM_WRITE to write; no x86 write-implies-read here), SIGBUS -> EFAULT."""
        mm = self.mm
        if write:
            self._unshare_pte_tables(start, end)
        pos = start
        while pos < end:
            vma = mm.vma_at(pos)
            if vma is None:
                raise enomem("MADV_POPULATE: address not mapped")
            need = VmFlags.WRITE if write else VmFlags.READ
            if vma.flags & (VmFlags.IO | VmFlags.PFNMAP) or not (vma.flags & need):
                raise einval("MADV_POPULATE: mapping does not allow the access")
            stop = min(end, vma.end)
            try:
                self._access_vma(vma, pos, stop, write, None, 0)
            except (BusError, SegmentationFault) as e:
                raise MMError(errno.EFAULT, f"MADV_POPULATE: fault at {e.address:#x}") from None
            pos = stop
        return 0

    def _madvise_vma(self, vma: VMA, start: int, end: int, advice: Madv) -> None:
        mm = self.mm
        if advice in (Madv.GUARD_INSTALL, Madv.GUARD_REMOVE):
            self._madvise_guard(vma, start, end, advice == Madv.GUARD_INSTALL)
            return
        if advice == Madv.FREE:
            # madvise_free_single_vma. Lazy free is modelled as the reclaim that discards
            # the clean lazyfree pages at once: exclusive anon pages are zapped now (reads
            # give zeros, RssAnon drops); COW-shared pages are skipped as Linux skips them.
            if vma.flags & (VmFlags.PFNMAP | VmFlags.LOCKED) or not vma.is_anonymous:
                raise einval("MADV_FREE needs a private anonymous, unlocked mapping")
            self._unshare_pte_tables(start, end)
            mm.update_hiwater_rss()
            for s, e in exclusive_anon_runs(self, start, end):
                _zap.zap(mm.core, s, e, False)
            return
        if advice == Madv.REMOVE:
            # madvise_remove: punch a hole in the backing file / shmem object
            if vma.flags & VmFlags.LOCKED or vma.backing is None:
                raise einval("MADV_REMOVE on a locked or anonymous private mapping")
            if (vma.flags & (VmFlags.SHARED | VmFlags.MAYWRITE)) != (VmFlags.SHARED | VmFlags.MAYWRITE):
                raise MMError(errno.EACCES, "MADV_REMOVE needs a shared writable mapping")
            first = vma.pgoff + ((start - vma.start) >> PAGE_SHIFT)
            punch_hole(self.machine, vma.backing, first, first + ((end - start) >> PAGE_SHIFT))
            return
        if advice in (Madv.DONTNEED, Madv.DONTNEED_LOCKED):
            forbidden = VmFlags.PFNMAP | (VmFlags.LOCKED if advice == Madv.DONTNEED else 0)
            if vma.flags & forbidden:
                raise einval("DONTNEED on a locked or PFN mapping")
            mm.update_hiwater_rss()
            self._unshare_pte_tables(start, end)
            _zap.zap(mm.core, start, end, True)
            return
        if advice in self._MADV_HINTS:
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
            self._unshare_pte_tables(start, end)      # the series breaks COW tables here too
        try:
            vma = self._split_for(vma, start, end)
        except MMError as e:
            if e.errno == errno.ENOMEM:     # madvise_vma_behavior: ENOMEM becomes EAGAIN
                raise MMError(errno.EAGAIN, "VMA split refused at max_map_count") from None
            raise
        vma.set_flags(new)
        mm.try_merge_around(vma)

    def _split_for(self, vma: VMA, start: int, end: int) -> VMA:
        """vma_modify's splits: isolate [start, end) of vma. Each __split_vma checks
        max_map_count on its own, so a second split can fail after the first (like Linux)."""
        mm = self.mm
        if vma.start < start:
            mm.check_map_count(1)
            self._unshare_pte_tables(start - 1, start + 1)      # split_vma breaks COW tables
            vma = mm.split(vma, start)
        if end < vma.end:
            mm.check_map_count(1)
            self._unshare_pte_tables(end - 1, end + 1)
            mm.split(vma, end)
        return vma

    # ------------------------------------------------------------------ fork / exit / execve
    def fork(self, cow_pgtable: bool = False) -> "Process":
        """fork(2): duplicate the VMAs and their page tables (dup_mmap).

        With ``cow_pgtable=True``, or after ``prctl(PR_SET_COW_PTE, 1)``, eligible last-level
        page tables are shared copy-on-write instead of copied (CLONE_COW_PGTABLE).
        """
        self._check_alive()
        return self.machine._fork(self, cow_pgtable or self.mm.cow_pgtable)

    _CLONE_LEGACY = 0xFFFFFFFF & ~0xFF       # flags below bit 32, the exit signal excluded

    def clone3(self, flags: int = 0, exit_signal: int = 17) -> "Process":
        """clone3(2) creating a new process; CLONE_COW_PGTABLE shares page tables COW.

        The flag checks of clone3_args_valid/copy_process come first, so a bad combination
        raises MMError(EINVAL) with nothing changed. Threads (CLONE_VM) are not modelled.
        """
        self._check_alive()
        flags, exit_signal = ulong(flags), operator.index(exit_signal)
        known = self._CLONE_LEGACY | int(CloneFlags.CLEAR_SIGHAND | CloneFlags.INTO_CGROUP
                                         | CloneFlags.COW_PGTABLE)
        if flags & ~known or flags & 0xFF:
            raise einval("unknown clone3 flags (or an exit signal in flags)")
        if (flags & (CloneFlags.NEWNS | CloneFlags.FS)) == (CloneFlags.NEWNS | CloneFlags.FS):
            raise einval("CLONE_NEWNS with CLONE_FS")
        if flags & CloneFlags.THREAD and not flags & CloneFlags.SIGHAND:
            raise einval("CLONE_THREAD without CLONE_SIGHAND")
        if flags & CloneFlags.SIGHAND and not flags & CloneFlags.VM:
            raise einval("CLONE_SIGHAND without CLONE_VM")
        if flags & CloneFlags.CLEAR_SIGHAND and flags & CloneFlags.SIGHAND:
            raise einval("CLONE_CLEAR_SIGHAND with CLONE_SIGHAND")
        if flags & CloneFlags.COW_PGTABLE and flags & CloneFlags.VM:
            raise einval("CLONE_COW_PGTABLE with CLONE_VM: there is no second address space")
        if not 0 <= exit_signal < 65:
            raise einval("bad exit signal")
        if flags & CloneFlags.VM:
            raise NotImplementedError("CLONE_VM (threads sharing one mm) is not modelled")
        return self.machine._fork(self, bool(flags & CloneFlags.COW_PGTABLE) or self.mm.cow_pgtable)

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        """prctl(2) for PR_SET_COW_PTE / PR_GET_COW_PTE: every later fork of this process (and
        of its children, which inherit the flag) shares page tables copy-on-write."""
        self._check_alive()
        option = uint(option)
        arg2, arg3, arg4, arg5 = (ulong(a) for a in (arg2, arg3, arg4, arg5))
        if option == PR_SET_COW_PTE:
            if arg2 not in (0, 1) or arg3 or arg4 or arg5:
                raise einval("PR_SET_COW_PTE takes 0 or 1")
            self.mm.cow_pgtable = bool(arg2)
            return 0
        if option == PR_GET_COW_PTE:
            if arg2 or arg3 or arg4 or arg5:
                raise einval("PR_GET_COW_PTE takes no arguments")
            return int(self.mm.cow_pgtable)
        raise einval(f"prctl option {option} is not modelled")

    def exit(self, status: int = 0) -> None:
        """exit(2): exit_mmap tears the address space down; pages others map survive."""
        self._check_alive()
        self.machine._exit(self, status)

    def execve(self) -> None:
        """execve(2): the address space is replaced by an empty one, as ``spawn()`` makes
        it (the program break set up, nothing mapped). PR_SET_COW_PTE survives, as
        mm->flags & MMF_INIT_MASK does (the flag is inherited the same way at fork)."""
        self._check_alive()
        from .layout import apply_layout
        old = self.mm
        new = MM(self.machine)
        if not new.core.pgd_alloc():
            raise enomem("no frame for the new PGD")
        new.cow_pgtable = old.cow_pgtable
        self.mm = new
        self.machine._exit_mmap(old)
        apply_layout(self, None)

    # ------------------------------------------------------------------ memory access
    def _access_vma(self, vma: VMA, start: int, end: int, write: bool, buf, mode: int) -> None:
        rc, fail, anon = _fault.access(self.mm.core, vma, start, end, write, buf, mode)
        fail = max(fail, start)     # the kernel gives the faulting byte (cr2), not its page
        if anon and vma.anon_vma is None:
            vma.anon_vma = AnonVma()
        if rc == FAULT_OOM:
            raise enomem(f"out of emulated memory at {fail:#x}")
        if rc == FAULT_SIGBUS:
            raise BusError(fail)
        if rc == FAULT_SIGSEGV:
            raise SegmentationFault(fail, "SEGV_MAPERR", "guard region")

    def _access(self, addr: int, length: int, write: bool, buf, mode: int) -> None:
        """The MMU and the fault handler's access_error over [addr, addr+length)."""
        self._check_alive()
        length = operator.index(length)
        if length < 0:
            raise ValueError("negative length")
        addr = ulong(addr)        # past the last VMA the walk below raises SIGSEGV
        end = addr + length
        pos = addr
        mm = self.mm
        off = 0
        while pos < end:
            vma = mm.find_vma(pos)
            if vma is None or vma.start > pos:
                raise SegmentationFault(pos, "SEGV_MAPERR")
            if write:
                if not (vma.flags & VmFlags.WRITE):
                    raise SegmentationFault(pos, "SEGV_ACCERR")
            elif not (vma.flags & VM_ACCESS_FLAGS):
                raise SegmentationFault(pos, "SEGV_ACCERR")
            stop = min(end, vma.end)
            part = None if buf is None else buf[off:off + (stop - pos)]
            self._access_vma(vma, pos, stop, write, part, mode)
            off += stop - pos
            pos = stop

    def read(self, addr: int, n: int) -> bytes:
        """Read n bytes at addr as the process would (read faults as needed).

        A range that runs past the readable mappings faults page by page up to the first
        byte it may not read and raises SegmentationFault there, without a buffer of n
        bytes; a readable range larger than the host's memory raises MMError(ENOMEM)."""
        n = operator.index(n)
        if n < 0:
            raise ValueError("negative length")
        self._check_alive()
        if self._readable_end(ulong(addr), n) < ulong(addr) + n:
            self._access(addr, n, False, None, 0)     # SIGSEGV where the mappings end
        try:
            if n > os.sysconf("SC_PHYS_PAGES") * PAGE_SIZE:
                raise MemoryError
            out = np.empty(n, dtype=np.uint8)
        except MemoryError:
            raise enomem(f"no host memory for a read of {n} bytes") from None
        self._access(addr, n, False, out, 1)
        return out.tobytes()

    def _readable_end(self, addr: int, n: int) -> int:
        """Where a read of [addr, addr+n) would hit a byte access_error refuses (or
        addr+n): the VMAs alone decide, no fault is taken."""
        pos, end = addr, addr + n
        while pos < end:
            vma = self.mm.find_vma(pos)
            if vma is None or vma.start > pos or not (vma.flags & VM_ACCESS_FLAGS):
                return pos
            pos = vma.end
        return end

    def write(self, addr: int, data) -> None:
        """Write bytes (or a numpy uint8 array) at addr as the process would."""
        if isinstance(data, np.ndarray):
            buf = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        else:
            buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
        self._access(addr, len(buf), True, buf, 2)

    def touch(self, addr: int, length: int, write: bool = True) -> None:
        """Access every page of [addr, addr+length) once (a write or read fault per page)."""
        self._access(addr, length, write, None, 0)

    @syscall_scope
    def swap_out(self, addr: int, length: int) -> int:
        """Reclaim to the emulated swap device (what MADV_PAGEOUT does on a machine with
        swap): every exclusive anonymous page of [addr, addr+length) is written to a swap
        slot and its PTE becomes a swap entry (VmSwap, pagemap bit 62); the next access
        reads it back. Returns the number of pages swapped out: once the device is full
        the other pages stay resident, as reclaim keeps them (mmemu.swap). EINVAL for an
        unaligned address or a range that wraps around (is_valid_madvise)."""
        self._check_alive()
        addr, length = ulong(addr), ulong(length)
        if addr & (PAGE_SIZE - 1):
            raise einval("address not page aligned")
        end = addr + page_align(length)
        if end > _U64:
            raise einval("address range wraps around")       # is_valid_madvise
        end = min(end, TASK_SIZE)
        if addr >= end:
            return 0
        self._check_cow_frames(addr, end)
        self._unshare_pte_tables(addr, end)
        self.mm.update_hiwater_rss()
        from .swap import swap_out
        return swap_out(self, addr, end)

    # ------------------------------------------------------------------ statistics
    def status(self):
        """/proc/PID/status memory lines (kB), as a read-only mapping; str() gives the text."""
        from .stats import proc_status
        return proc_status(self)

    def maps(self):
        """/proc/PID/maps lines; str() gives the text."""
        from .stats import proc_maps
        return proc_maps(self)

    def smaps(self):
        """/proc/PID/smaps: per-VMA dicts (kB); str() gives the text."""
        from .stats import proc_smaps
        return proc_smaps(self)

    def smaps_rollup(self):
        """/proc/PID/smaps_rollup: smaps summed over the whole address space (kB)."""
        from .stats import proc_smaps_rollup
        return proc_smaps_rollup(self)

    def statm(self):
        """/proc/PID/statm in pages (size resident shared text lib data dt)."""
        from .stats import proc_statm
        return proc_statm(self)

    def pagemap(self, addr: int, npages: int) -> np.ndarray:
        """/proc/PID/pagemap entries (uint64, kernel bit layout) for npages pages from addr.

        At most PAGEMAP_MAX_PAGES entries (what one read(2) of /proc/PID/pagemap returns:
        MAX_RW_COUNT bytes); a larger npages raises MMError(EINVAL) without allocating
        anything: walk such a range with ``pagemap_chunks``."""
        from ._core.task_mmu import pagemap
        addr, npages = self._pagemap_range(addr, npages)
        if npages > PAGEMAP_MAX_PAGES:
            raise einval(f"pagemap of {npages} pages: more than one read(2) returns "
                         f"({PAGEMAP_MAX_PAGES}); use pagemap_chunks")
        n = max(0, min(npages, (TASK_SIZE - addr) >> PAGE_SHIFT))    # none above TASK_SIZE
        try:
            out = pagemap(self.mm.core, addr, n)
            return out if n == npages else np.concatenate([out, np.zeros(npages - n, np.uint64)])
        except MemoryError:
            raise enomem(f"no host memory for {npages} pagemap entries") from None

    def pagemap_chunks(self, addr: int, npages: int):
        """pagemap() of any range, in pieces: yields (address, entries) for each part of
        [addr, addr + npages pages) that has a PTE table, in address order, each at most
        512 entries; every page not yielded reads 0, as in the kernel's pagemap (holes
        and unmapped ranges). Host memory is bounded by one PTE table's entries."""
        from ._core.task_mmu import pagemap, pte_tables
        addr, npages = self._pagemap_range(addr, npages)
        end = min(addr + (npages << PAGE_SHIFT), TASK_SIZE)
        if addr >= end:
            return
        for span in pte_tables(self.mm.core, addr, end).tolist():
            lo, hi = max(addr, span), min(end, span + PMD_SIZE)
            yield lo, pagemap(self.mm.core, lo, (hi - lo) >> PAGE_SHIFT)

    @staticmethod
    def _pagemap_range(addr, npages):
        addr, npages = operator.index(addr), operator.index(npages)
        if addr & (PAGE_SIZE - 1):
            raise einval("pagemap address must be page aligned")
        if not 0 <= addr < (1 << 64) or npages < 0 or addr + npages * PAGE_SIZE > (1 << 64):
            raise ValueError("pagemap range outside the 64-bit address space")
        return addr, npages
