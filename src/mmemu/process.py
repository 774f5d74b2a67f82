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
from typing import TYPE_CHECKING, Iterator, List, Optional, Tuple, Union

import numpy as np

from ._core.physmem import PhysMem
from ._core.task_mmu import pagemap
from .args import cow_pgtable_mode, page_align, uint, ulong
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

if TYPE_CHECKING:
    from .args import Buffer
    from .file import File
    from .stats import Maps, Smaps, SmapsRollup, Statm, Status

_U64 = (1 << 64) - 1
PAGEMAP_MAX_PAGES = MAX_RW_COUNT // 8    # one read(2) of /proc/PID/pagemap: 8 bytes a page
_CREATE = object()      # Process._create's key: the constructor is not public


@serialised
class Process:
    """A task with its own address space, made by ``Machine.spawn()``, ``fork()``,
    ``clone3()`` or ``mmemu.procfs.import_process`` (the constructor is not public: a
    process exists only on its machine, with a pid and page tables the machine accounts).

    Attributes
    ----------
    machine : Machine
        The machine it runs on.
    pid : int
        Its pid on that machine.
    parent : Process or None
        The process that forked it (None once the parent exited, or for a spawned one).
    children : list of Process
        Its live children.
    alive : bool
        False once it exited.
    exit_code : int or None
        The status it passed to ``exit()``.
    imported_from : int or None
        For an imported process, the pid of the live Linux process it was imported from;
        None otherwise.
    imported_comm : str or None
        For an imported process, that process's command name (/proc/PID/comm).

    Raises
    ------
    TypeError
        ``Process(...)`` called directly.
    """

    def __init__(self, machine, pid: int, parent: Optional["Process"] = None,
                 mm: Optional[MM] = None, *, _key: object = None):
        if _key is not _CREATE:
            raise TypeError("mmemu.Process cannot be built directly: use Machine.spawn(), "
                            "Process.fork() or clone3()")
        self.machine = machine
        self.pid = pid
        self.parent = parent
        self.children: List[Process] = []
        self.alive = True
        self.exit_code: Optional[int] = None      # set by exit
        self.imported_from: Optional[int] = None  # mmemu.procfs.import_process: the source pid
        self.import_report = None                 # ... and its ImportReport
        self.mm = mm if mm is not None else mm_alloc(machine)

    @property
    def imported_comm(self) -> Optional[str]:
        """The command name of the live process this one was imported from (None if it
        was not imported)."""
        return None if self.import_report is None else self.import_report.comm

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
        p = cls(machine, pid, None, _key=_CREATE, mm=MM.from_state(machine, field(rec, "mm", dict, where),
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
             *, file: Optional["File"] = None) -> int:
        """mmap(2): anonymous memory (MAP_ANONYMOUS, MAP_PRIVATE or MAP_SHARED) or a file
        (``file=`` a mmemu File from Machine.create_file, or that File passed as fd) with
        MAP_PRIVATE, MAP_SHARED or MAP_SHARED_VALIDATE at byte ``offset``.

        Parameters
        ----------
        addr : int
            A hint (0: the kernel chooses), or the exact address with MAP_FIXED.
        length : int
            Bytes to map (rounded up to whole pages).
        prot : int
            ``PROT_*`` flags.
        flags : int
            ``MAP_*`` flags.
        fd, offset : int
            The file (a File may be passed as fd) and the byte offset in it.
        file : File, optional
            The file to map.

        Returns
        -------
        int
            The mapped address.

        Raises
        ------
        MMError
            Linux's errno: EINVAL, ENOMEM, EEXIST (MAP_FIXED_NOREPLACE), EACCES, EBADF
            (neither a file nor MAP_ANONYMOUS), ...; nothing changed.
        TypeError
            An argument that is not an integer.

        Examples
        --------
        >>> p = Machine("64M").spawn()
        >>> a = p.mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        >>> hex(a), p.status()["VmSize"]
        ('0x7ffff7ffd000', 8)
        """
        self._check_alive()
        return sys_mmap(self.mm, addr, length, prot, flags, fd, offset, file)

    @syscall_scope
    def munmap(self, addr: int, length: int) -> int:
        """munmap(2): unmap [addr, addr+length).

        Returns
        -------
        int
            0.

        Raises
        ------
        MMError
            EINVAL for an unaligned address or a zero length; ENOMEM if splitting a VMA
            would exceed ``max_map_count``. Nothing changes on error.
        """
        self._check_alive()
        do_vmi_munmap(self.mm, ulong(addr), ulong(length))
        return 0

    # ------------------------------------------------------------------ mremap / brk
    @syscall_scope
    def mremap(self, old_addr: int, old_len: int, new_len: int, flags: int = 0, new_addr: int = 0) -> int:
        """mremap(2) with MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_DONTUNMAP (see mmemu.mremap).

        Page identity is kept: the moved pages are the same frames (move_page_tables).

        Returns
        -------
        int
            The address of the resized or moved mapping.

        Raises
        ------
        MMError
            Linux's errno (EINVAL, ENOMEM, EFAULT); nothing changed.
        """
        self._check_alive()
        return do_mremap(self.mm, old_addr, old_len, new_len, flags, new_addr)

    @syscall_scope
    def brk(self, addr: int) -> int:
        """brk(2): move the program break (``brk(0)`` reads it).

        Returns
        -------
        int
            The new break, or the unchanged old one on failure (brk has no errno).
        """
        self._check_alive()
        return do_brk(self.mm, addr)

    # ------------------------------------------------------------------ mprotect / madvise
    @syscall_scope
    def mprotect(self, addr: int, length: int, prot: int) -> int:
        """mprotect(2): change the protection of [addr, addr+length) to prot.

        Not atomic over holes, like Linux: VMAs before the hole keep the change.

        Returns
        -------
        int
            0.

        Raises
        ------
        MMError
            EINVAL, ENOMEM (a hole, or too many VMAs), EACCES (PROT_WRITE on a read-only
            shared file mapping).
        """
        self._check_alive()
        return do_mprotect_pkey(self.mm, addr, length, prot)

    @syscall_scope
    def madvise(self, addr: int, length: int, advice: int) -> int:
        """madvise(2): DONTNEED, FREE, REMOVE, POPULATE_READ/WRITE, DONTFORK/DOFORK,
        WIPEONFORK/KEEPONFORK, GUARD_INSTALL/GUARD_REMOVE, and the hints.

        Returns
        -------
        int
            0.

        Raises
        ------
        MMError
            Linux's errno (EINVAL for an unknown advice or an unaligned address, ENOMEM
            over a hole after applying the advice to the VMAs before it, as Linux does).
        """
        self._check_alive()
        return do_madvise(self.mm, addr, length, advice)

    # ------------------------------------------------------------------ fork / exit / execve
    def fork(self, cow_pgtable: Union[None, bool, str] = None) -> "Process":
        """fork(2): duplicate the VMAs and their page tables (dup_mmap).

        Parameters
        ----------
        cow_pgtable : None, bool or {"pte", "pmd", "pud"}, optional
            None (the default): this process's setting decides, i.e. ``prctl(PR_SET_COW_PTE)``
            or the machine's ``cow_pgtable``. True (or "pte"): eligible last-level page
            tables are shared copy-on-write instead of copied (CLONE_COW_PGTABLE). "pmd" and
            "pud" (mmemu's whole-table COW): whole PMD or PUD tables are shared where every
            span under them is eligible, falling back a level elsewhere. False: a classic
            fork, whatever the setting. The accepted values are
            ``mmemu.args.COW_PGTABLE_MODES``.

        Returns
        -------
        Process
            The child, with the next pid.

        Raises
        ------
        MMError
            ENOMEM (nothing changed) if the copy does not fit; ESRCH if this process exited.
        TypeError, ValueError
            If cow_pgtable is not one of the accepted values (``"yes"``, ``1``).

        Examples
        --------
        >>> m = Machine("64M", cow_pgtable=True)
        >>> p = m.spawn(); a = p.mmap(0, 1 << 21, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        >>> p.touch(a, 1 << 21)
        >>> before = m.vmstat(); c = p.fork(cow_pgtable=False)
        >>> (m.vmstat() - before)["cow_pte_tables_shared"]
        0
        """
        mode = cow_pgtable_mode(cow_pgtable)
        self._check_alive()
        return self.machine.copy_process(self, self.mm.cow_pgtable if mode is None else mode)

    def clone3(self, flags: int = 0, exit_signal: int = 17) -> "Process":
        """clone3(2) creating a new process; CLONE_COW_PGTABLE shares PTE tables COW,
        mmemu's CLONE_COW_PGTABLE_PMD / _PUD whole PMD / PUD tables (fork's "pmd" / "pud").

        Without CLONE_COW_PGTABLE the process's own setting decides (as ``fork()`` with
        its default): clone3 has no flag that forces a classic copy; use
        ``fork(cow_pgtable=False)`` for that.

        Parameters
        ----------
        flags : int
            CLONE_* flags (``mmemu.CloneFlags``).
        exit_signal : int
            The signal sent to the parent at exit, 0..64 (default SIGCHLD).

        Returns
        -------
        Process
            The child.

        Raises
        ------
        MMError
            EINVAL (nothing changed) for a bad flag combination, as clone3_args_valid and
            copy_process check them; ENOMEM if the copy does not fit.
        NotImplementedError
            For CLONE_VM: threads are not modelled.
        """
        self._check_alive()
        flags, exit_signal = ulong(flags), operator.index(exit_signal)
        clone3_args_valid(flags, exit_signal)
        prof = self.machine.cow_pte_profile
        if flags & CloneFlags.COW_PGTABLE and prof is not None and not prof.clone_flag_allowed():
            raise einval(f"CLONE_COW_PGTABLE: this kernel ({prof.name}) has no such flag")
        level = (3 if flags & CloneFlags.COW_PGTABLE_PUD else 2 if flags & CloneFlags.COW_PGTABLE_PMD
                 else int(bool(flags & CloneFlags.COW_PGTABLE)))
        return self.machine.copy_process(self, level or self.mm.cow_pgtable)

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        """prctl(2) for PR_SET_COW_PTE / PR_GET_COW_PTE: every later fork of this process (and
        of its children, which inherit the flag) shares page tables copy-on-write, unless
        it passes ``cow_pgtable=False``; mmemu's PR_SET_COW_PGTABLE / PR_GET_COW_PGTABLE set
        and read the level (arg2 0 classic, 1 PTE tables, 2 PMD tables, 3 PUD tables).

        Returns
        -------
        int
            0 for PR_SET_COW_PTE and PR_SET_COW_PGTABLE; the flag (0 or 1) for
            PR_GET_COW_PTE, the level for PR_GET_COW_PGTABLE.

        Raises
        ------
        MMError
            EINVAL for other options or arguments.
        """
        self._check_alive()
        option = uint(option)
        arg2, arg3, arg4, arg5 = (ulong(a) for a in (arg2, arg3, arg4, arg5))
        prof = self.machine.cow_pte_profile
        if prof is not None:
            rc = prof.prctl(self, option, (arg2, arg3, arg4, arg5))
            if rc is not None:
                return rc
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
        """exit(2): exit_mmap tears the address space down; pages others map survive.

        The process leaves ``machine.processes``; its /proc views stay readable (empty).

        Raises
        ------
        MMError
            ESRCH if it already exited.
        """
        self._check_alive()
        self.machine.do_exit(self, status)

    def execve(self) -> None:
        """execve(2): the address space is replaced by an empty one, as ``spawn()`` makes
        it (the program break set up, nothing mapped). PR_SET_COW_PTE survives, as
        mm->flags & MMF_INIT_MASK does (the flag is inherited the same way at fork).

        Raises
        ------
        MMError
            ESRCH if the process exited.
        """
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

        Returns
        -------
        bytes
            The n bytes.

        Raises
        ------
        SegmentationFault
            At the first byte the process may not read (a range that runs past the
            readable mappings faults page by page up to it, without a buffer of n bytes).
        MMError
            ENOMEM for a readable range larger than the host's memory.

        Examples
        --------
        >>> p = Machine("64M").spawn()
        >>> a = p.mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        >>> p.write(a, b"abc"); p.read(a, 4)
        b'abc\\x00'
        """
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

    def write(self, addr: int, data: "Buffer") -> None:
        """Write bytes (or a numpy uint8 array) at addr as the process would (write faults,
        COW breaks, page-table COW breaks as needed).

        Raises
        ------
        SegmentationFault
            At the first byte the process may not write.
        BusError
            A file page past the end of the file.
        MMError
            ENOMEM when no frame is left for a fault.
        """
        if isinstance(data, np.ndarray):
            buf = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        else:
            buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
        self._access(addr, len(buf), True, buf, 2)

    def touch(self, addr: int, length: int, write: bool = True) -> None:
        """Access every page of [addr, addr+length) once (a write or read fault per page),
        in one Cython call.

        Raises
        ------
        SegmentationFault, BusError, MMError
            As ``write`` (or ``read`` with ``write=False``).
        """
        self._access(addr, length, write, None, 0)

    @syscall_scope
    def swap_out(self, addr: int, length: int) -> int:
        """Reclaim to the emulated swap device (what MADV_PAGEOUT does on a machine with
        swap): every exclusive anonymous page of [addr, addr+length) is written to a swap
        slot and its PTE becomes a swap entry (VmSwap, pagemap bit 62); the next access
        reads it back. Returns the number of pages swapped out: once the device is full
        the other pages stay resident, as reclaim keeps them (mmemu.swap). EINVAL for an
        unaligned address or a range that wraps around (is_valid_madvise).

        Returns
        -------
        int
            The number of pages swapped out.

        Raises
        ------
        MMError
            EINVAL (see above); ENOMEM if breaking shared page tables of the range does not fit.
        """
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
    def status(self) -> "Status":
        """/proc/PID/status memory lines (kB), as a read-only mapping; str() gives the text.

        Returns
        -------
        Status
            VmPeak, VmSize, VmLck, VmPin, VmHWM, VmRSS, RssAnon, RssFile, RssShmem, VmData,
            VmStk, VmExe, VmLib, VmPTE, VmSwap, in kB.

        Examples
        --------
        >>> p = Machine("64M").spawn()
        >>> a = p.mmap(0, 1 << 21, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        >>> p.touch(a, 1 << 21); p.status()["RssAnon"], p.status()["VmPTE"]
        (2048, 12)
        """
        return proc_status(self)

    def maps(self) -> "Maps":
        """/proc/PID/maps.

        Returns
        -------
        Maps
            A list of the file's lines; str() gives the text.
        """
        return proc_maps(self)

    def smaps(self) -> "Smaps":
        """/proc/PID/smaps.

        Returns
        -------
        Smaps
            A list of per-VMA dicts (sizes in kB); str() gives the text.
        """
        return proc_smaps(self)

    def smaps_rollup(self) -> "SmapsRollup":
        """/proc/PID/smaps_rollup.

        Returns
        -------
        SmapsRollup
            smaps summed over the whole address space (kB), as a read-only mapping.
        """
        return proc_smaps_rollup(self)

    def statm(self) -> "Statm":
        """/proc/PID/statm.

        Returns
        -------
        Statm
            size, resident, shared, text, lib, data, dt in pages; str() gives the line.
        """
        return proc_statm(self)

    def pagemap(self, addr: int, npages: int) -> np.ndarray:
        """/proc/PID/pagemap entries (uint64, kernel bit layout) for npages pages from addr.

        Returns
        -------
        numpy.ndarray
            uint64 entries: bit 63 present, 62 swapped, 61 file/shared, 56 exclusive,
            bits 0-54 the PFN (or the swap entry); 0 for an unmapped page.

        Raises
        ------
        MMError
            EINVAL for more than PAGEMAP_MAX_PAGES entries (what one read(2) of
            /proc/PID/pagemap returns: MAX_RW_COUNT bytes; walk such a range with
            ``pagemap_chunks``) or an unaligned address.
        """
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

    def pagemap_chunks(self, addr: int, npages: int) -> Iterator[Tuple[int, np.ndarray]]:
        """pagemap() of any range, in pieces: yields (address, entries) for each part of
        [addr, addr + npages pages) that has a PTE table, in address order, each at most
        512 entries; every page not yielded reads 0, as in the kernel's pagemap (holes
        and unmapped ranges). Host memory is bounded by one PTE table's entries.

        Yields
        ------
        (int, numpy.ndarray)
            The address of a piece and its uint64 pagemap entries.

        Raises
        ------
        MMError
            EINVAL for an unaligned address.
        """
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


def new_process(machine, pid: int, parent: Optional[Process] = None,
                mm: Optional[MM] = None) -> Process:
    """alloc_pid + the task: the Process the machine registers under pid (Machine.spawn,
    copy_process), with a new empty mm (mm_alloc) unless one is given. Not for users:
    only the machine keeps the pid, the process list and the page-table accounting."""
    return Process(machine, pid, parent, mm, _key=_CREATE)
