"""Process: the syscall surface (mmap, munmap, mprotect, mremap, brk, madvise, fork,
clone3, prctl, execve, exit) and memory access (read, write, touch).

A thin facade: each method converts nothing it does not have to and calls the module named
after the kernel file that does the work, over the process's mm (mmap.py, mprotect.py,
madvise.py, mremap.py, brk.py, fork.py, memory.py). Every syscall validates its arguments
before it changes anything and raises MMError with the errno Linux returns; accesses Linux
answers with a signal raise SegmentationFault or BusError.
"""
from __future__ import annotations

import errno
import operator
import os
from typing import List, Optional

import numpy as np

from ._core.physmem import PhysMem
from ._core.task_mmu import pagemap
from .args import cow_pgtable_level, page_align, uint, ulong
from .brk import do_brk
from .errors import MMError, einval, enomem
from .file import MAX_RW_COUNT
from .flags import PR_GET_COW_PGTABLE, PR_GET_COW_PTE, PR_SET_COW_PGTABLE, PR_SET_COW_PTE, CloneFlags
from .fork import clone3_args_valid
from .layout import apply_layout
from .locking import serialised
from .madvise import do_madvise
from .memory import break_cow_pte_range, do_user_addr_fault, reserve_cow_pte_breaks
from .mm import MM, mm_alloc
from .mmap import do_vmi_munmap, exit_mmap, sys_mmap
from .mprotect import do_mprotect_pkey
from .mremap import do_mremap
from .reserve import syscall_scope
from .state import LoadRefs, SaveRefs, expect, field, integer, refuse_undeclared
from .stats import pagemap_chunks, proc_maps, proc_smaps, proc_smaps_rollup, proc_statm, proc_status
from .swap import swap_out
from .vma import PAGE_SHIFT, PAGE_SIZE, TASK_SIZE, VM_ACCESS_FLAGS

_U64 = (1 << 64) - 1
PAGEMAP_MAX_PAGES = MAX_RW_COUNT // 8    # one read(2) of /proc/PID/pagemap: 8 bytes a page


@serialised
class Process:
    """A task with its own address space. Create with ``Machine.spawn()`` or ``fork()``."""

    def __init__(self, machine, pid: int, parent: Optional["Process"] = None,
                 mm: Optional[MM] = None):
        self.machine = machine
        self.pid = pid
        self.parent = parent
        self.children: List[Process] = []
        self.alive = True
        self.exit_code: Optional[int] = None      # set by exit
        self.imported_from: Optional[int] = None  # mmemu.procfs.import_process: the source pid
        self.import_report = None                 # ... and its ImportReport
        self.mm = mm if mm is not None else mm_alloc(machine)

    def __repr__(self) -> str:
        state = "alive" if self.alive else "exited"
        return f"<Process pid={self.pid} {state} vmas={self.mm.map_count}>"

    # ---- snapshots (mmemu.snapshot) ----
    def dump_state(self, refs) -> dict:
        """pid, parent and children (pids), the mm, and where an imported process came from
        (mmemu.procfs). Only live processes are saved."""
        expect(refs, SaveRefs, "refs")
        where = f"process {self.pid}"
        refuse_undeclared(self, where)
        rec = {"pid": self.pid, "parent": None if self.parent is None else self.parent.pid,
               "children": [c.pid for c in self.children], "mm": self.mm.dump_state(refs, where)}
        if self.imported_from is not None:
            rec["imported"] = {"from": int(self.imported_from),
                               "report": self.import_report.dump_state()}
        return rec

    @classmethod
    def from_state(cls, machine, rec, refs, where) -> "Process":
        """A live process from dump_state's record, without its parent and children (the
        machine links them once every process is back): a pid in [1, 2^31), its mm
        (MM.from_state), the import it came from."""
        expect(getattr(machine, "phys", None), PhysMem, "the machine's phys")
        expect(refs, LoadRefs, "refs")
        pid = integer(rec, "pid", where, 1, (1 << 31) - 1)
        p = cls(machine, pid, None, MM.from_state(machine, field(rec, "mm", dict, where),
                                                  refs, f"process {pid}"))
        if "imported" in rec:
            from .procfs import ImportReport
            imp = field(rec, "imported", dict, where)
            p.imported_from = integer(imp, "from", where + " import", 0, (1 << 31) - 1)
            p.import_report = ImportReport.from_state(field(imp, "report", dict, where + " import"),
                                                      where + " import report")
        return p

    def _check_alive(self) -> None:
        if not self.alive:
            raise MMError(errno.ESRCH, f"process {self.pid} has exited")

    # ------------------------------------------------------------------ mmap / munmap
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
        return sys_mmap(self.mm, addr, length, prot, flags, fd, offset, file)

    @syscall_scope
    def munmap(self, addr: int, length: int) -> int:
        """munmap(2). Returns 0."""
        self._check_alive()
        do_vmi_munmap(self.mm, ulong(addr), ulong(length))
        return 0

    # ------------------------------------------------------------------ mremap / brk
    @syscall_scope
    def mremap(self, old_addr: int, old_len: int, new_len: int, flags: int = 0, new_addr: int = 0) -> int:
        """mremap(2) with MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_DONTUNMAP (see mmemu.mremap).

        Returns the address of the resized or moved mapping."""
        self._check_alive()
        return do_mremap(self.mm, old_addr, old_len, new_len, flags, new_addr)

    @syscall_scope
    def brk(self, addr: int) -> int:
        """brk(2): returns the new break, or the unchanged old one on failure (no errno)."""
        self._check_alive()
        return do_brk(self.mm, addr)

    # ------------------------------------------------------------------ mprotect / madvise
    @syscall_scope
    def mprotect(self, addr: int, length: int, prot: int) -> int:
        """mprotect(2). Not atomic over holes, like Linux: earlier VMAs keep the change."""
        self._check_alive()
        return do_mprotect_pkey(self.mm, addr, length, prot)

    @syscall_scope
    def madvise(self, addr: int, length: int, advice: int) -> int:
        """madvise(2): DONTNEED, FREE, REMOVE, POPULATE_READ/WRITE, DONTFORK/DOFORK,
        WIPEONFORK/KEEPONFORK, GUARD_INSTALL/GUARD_REMOVE, and the hints."""
        self._check_alive()
        return do_madvise(self.mm, addr, length, advice)

    # ------------------------------------------------------------------ fork / exit / execve
    def fork(self, cow_pgtable: bool | str = False) -> "Process":
        """fork(2): duplicate the VMAs and their page tables (dup_mmap).

        With ``cow_pgtable=True`` (or ``"pte"``), or after ``prctl(PR_SET_COW_PTE, 1)``,
        eligible last-level page tables are shared copy-on-write instead of copied
        (CLONE_COW_PGTABLE). ``"pmd"`` and ``"pud"`` (mmemu's whole-table COW) share whole
        PMD or PUD tables where every span under them is eligible, falling back a level
        elsewhere. False (or None) leaves the choice to the process's prctl setting.
        """
        self._check_alive()
        level = cow_pgtable_level(cow_pgtable)
        return self.machine.copy_process(self, level or self.mm.cow_pgtable)

    def clone3(self, flags: int = 0, exit_signal: int = 17) -> "Process":
        """clone3(2) creating a new process; CLONE_COW_PGTABLE shares PTE tables COW,
        mmemu's CLONE_COW_PGTABLE_PMD / _PUD whole PMD / PUD tables (fork's "pmd" / "pud").

        The flag checks of clone3_args_valid/copy_process come first, so a bad combination
        raises MMError(EINVAL) with nothing changed. Threads (CLONE_VM) are not modelled.
        """
        self._check_alive()
        flags, exit_signal = ulong(flags), operator.index(exit_signal)
        clone3_args_valid(flags, exit_signal)
        level = (3 if flags & CloneFlags.COW_PGTABLE_PUD else 2 if flags & CloneFlags.COW_PGTABLE_PMD
                 else int(bool(flags & CloneFlags.COW_PGTABLE)))
        return self.machine.copy_process(self, level or self.mm.cow_pgtable)

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        """prctl(2) for PR_SET_COW_PTE / PR_GET_COW_PTE: every later fork of this process (and
        of its children, which inherit the flag) shares page tables copy-on-write; mmemu's
        PR_SET_COW_PGTABLE / PR_GET_COW_PGTABLE set and read the level (arg2 0 classic, 1 PTE
        tables, 2 PMD tables, 3 PUD tables)."""
        self._check_alive()
        option = uint(option)
        arg2, arg3, arg4, arg5 = (ulong(a) for a in (arg2, arg3, arg4, arg5))
        if option == PR_SET_COW_PTE:
            if arg2 not in (0, 1) or arg3 or arg4 or arg5:
                raise einval("PR_SET_COW_PTE takes 0 or 1")
            self.mm.cow_pgtable = int(arg2)
            return 0
        if option == PR_SET_COW_PGTABLE:
            if arg2 > 3 or arg3 or arg4 or arg5:
                raise einval("PR_SET_COW_PGTABLE takes a level: 0, 1 (PTE), 2 (PMD) or 3 (PUD)")
            self.mm.cow_pgtable = int(arg2)
            return 0
        if option == PR_GET_COW_PGTABLE:
            if arg2 or arg3 or arg4 or arg5:
                raise einval("PR_GET_COW_PGTABLE takes no arguments")
            return int(self.mm.cow_pgtable)
        if option == PR_GET_COW_PTE:
            if arg2 or arg3 or arg4 or arg5:
                raise einval("PR_GET_COW_PTE takes no arguments")
            return int(bool(self.mm.cow_pgtable))
        raise einval(f"prctl option {option} is not modelled")

    def exit(self, status: int = 0) -> None:
        """exit(2): exit_mmap tears the address space down; pages others map survive."""
        self._check_alive()
        self.machine.do_exit(self, status)

    def execve(self) -> None:
        """execve(2): the address space is replaced by an empty one, as ``spawn()`` makes
        it (the program break set up, nothing mapped). PR_SET_COW_PTE survives, as
        mm->flags & MMF_INIT_MASK does (the flag is inherited the same way at fork)."""
        self._check_alive()
        old = self.mm
        new = mm_alloc(self.machine)
        new.cow_pgtable = old.cow_pgtable
        self.mm = new
        exit_mmap(old)
        apply_layout(self, None)

    # ------------------------------------------------------------------ memory access
    def _access(self, addr: int, length: int, write: bool, buf, mode: int) -> None:
        """The MMU and the fault handler's access_error over [addr, addr+length)."""
        self._check_alive()
        length = operator.index(length)
        if length < 0:
            raise ValueError("negative length")
        addr = ulong(addr)        # past the last VMA the walk raises SIGSEGV
        do_user_addr_fault(self.mm, addr, length, write, buf, mode)

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
        reserve_cow_pte_breaks(self.mm, addr, end)
        break_cow_pte_range(self.mm, addr, end)
        self.mm.update_hiwater_rss()
        return swap_out(self, addr, end)

    # ------------------------------------------------------------------ statistics
    def status(self):
        """/proc/PID/status memory lines (kB), as a read-only mapping; str() gives the text."""
        return proc_status(self)

    def maps(self):
        """/proc/PID/maps lines; str() gives the text."""
        return proc_maps(self)

    def smaps(self):
        """/proc/PID/smaps: per-VMA dicts (kB); str() gives the text."""
        return proc_smaps(self)

    def smaps_rollup(self):
        """/proc/PID/smaps_rollup: smaps summed over the whole address space (kB)."""
        return proc_smaps_rollup(self)

    def statm(self):
        """/proc/PID/statm in pages (size resident shared text lib data dt)."""
        return proc_statm(self)

    def pagemap(self, addr: int, npages: int) -> np.ndarray:
        """/proc/PID/pagemap entries (uint64, kernel bit layout) for npages pages from addr.

        At most PAGEMAP_MAX_PAGES entries (what one read(2) of /proc/PID/pagemap returns:
        MAX_RW_COUNT bytes); a larger npages raises MMError(EINVAL) without allocating
        anything: walk such a range with ``pagemap_chunks``."""
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
        addr, npages = self._pagemap_range(addr, npages)
        end = min(addr + (npages << PAGE_SHIFT), TASK_SIZE)
        if addr < end:
            yield from pagemap_chunks(self.mm, addr, end)

    @staticmethod
    def _pagemap_range(addr, npages):
        addr, npages = operator.index(addr), operator.index(npages)
        if addr & (PAGE_SIZE - 1):
            raise einval("pagemap address must be page aligned")
        if not 0 <= addr < (1 << 64) or npages < 0 or addr + npages * PAGE_SIZE > (1 << 64):
            raise ValueError("pagemap range outside the 64-bit address space")
        return addr, npages
