"""Machine: emulated physical memory, the processes on it, and system-wide views."""
from __future__ import annotations

import errno
import itertools
import re
from typing import Dict, List, Optional

import numpy as np

from ._core import cow_pte as _cow_pte
from ._core import fork as _fork
from ._core import zap as _zap
from ._core.physmem import PhysMem
from . import file as _file
from .errors import MMError
from .file import File
from .flags import VmFlags
from .mm import MM
from .process import Process
from .reserve import reserving
from .vma import PAGE_SIZE, AnonVma

_NO_COPY = int(VmFlags.DONTCOPY | VmFlags.WIPEONFORK)
_DONTCOPY, _WIPEONFORK = int(VmFlags.DONTCOPY), int(VmFlags.WIPEONFORK)
_MAYBE_GUARD = int(VmFlags.MAYBE_GUARD)     # vma_needs_copy: guard markers must reach the child
_PFN_COPY = int(VmFlags.PFNMAP | VmFlags.MIXEDMAP)   # vma_needs_copy: (imported) PFN mappings
_NOT_LOCKED = ~int(VmFlags.LOCKED | VmFlags.LOCKONFAULT)
_NO_COW_PTE = int(VmFlags.SHARED | VmFlags.DONTCOPY | VmFlags.WIPEONFORK | VmFlags.IO
                  | VmFlags.PFNMAP | VmFlags.MIXEDMAP)
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtTpP]?)(i?[bB])?\s*$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(size) -> int:
    """Bytes from an int or a size string: "4096", "64K", "512M", "32G", "1T", "1GiB"."""
    if isinstance(size, (int, np.integer)):
        return int(size)
    m = _SIZE_RE.match(str(size))
    if not m:
        raise ValueError(f"not a size: {size!r} (use e.g. 512M, 32G, 1T)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


class ShmemFile:
    """The shmem object behind MAP_SHARED|MAP_ANONYMOUS (shmem_zero_setup).

    Its page cache maps page index -> PFN (-1 for a hole). It lives while a VMA uses it.
    """

    swapbacked = True

    def __init__(self, npages: int, inode: int):
        self.npages = npages
        self.cache = np.full(npages, -1, dtype=np.int64)
        self.users = 0
        self.inode = inode
        self.name = "/dev/zero (deleted)"
        self.dev = (0, 1)


class Machine:
    """An emulated x86-64 machine: physical memory and processes.

    Parameters
    ----------
    memory : int or str
        Physical memory size, bytes or a size string ("32G", "1T"); default 32 GiB.
        Creation is O(1) in the size: memory is a host MAP_NORESERVE mapping.
    max_map_count : int
        vm.max_map_count (default 65530).
    cow_pte_accounting : {"deferred", "eager"}
        How COW-shared page tables are accounted (see the README): "deferred" (RFC v1/v2:
        the table's owner counts its pages and the table; fork is O(tables)) or "eager"
        (v3 on: every process using the table counts its pages and the table at fork).
    cow_pgtable : bool
        System-wide default of PR_SET_COW_PTE for spawned processes: when true every fork
        shares eligible page tables copy-on-write (like ODF's per-process switch, set for all).

    Examples
    --------
    >>> m = Machine("1G")
    >>> p = m.spawn()
    >>> a = p.mmap(0, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    >>> p.write(a, b"hi"); c = p.fork(); c.read(a, 2)
    b'hi'
    """

    def __init__(self, memory="32G", *, max_map_count: int = 65530,
                 cow_pte_accounting: str = "deferred", cow_pgtable: bool = False):
        nbytes = parse_size(memory)
        if nbytes % PAGE_SIZE:
            raise ValueError("memory must be a multiple of 4096 bytes")
        if nbytes < 16 * PAGE_SIZE:
            raise ValueError("memory must be at least 64 KiB")
        self.memory = nbytes
        self.phys = PhysMem(nbytes // PAGE_SIZE)
        self.phys.cow_pte_accounting = cow_pte_accounting
        self.cow_pgtable = bool(cow_pgtable)
        self.max_map_count = max_map_count
        self._procs: Dict[int, Process] = {}
        self._next_pid = 1
        self._inodes = itertools.count(1024)
        self._backings: set = set()
        self._files: Dict[str, "File"] = {}     # path -> File (the namespace)

    def __repr__(self) -> str:
        return f"<Machine memory={self.memory >> 20} MiB processes={len(self._procs)}>"

    # ---- processes ----
    @property
    def processes(self) -> List[Process]:
        """The live processes, by pid."""
        return list(self._procs.values())

    def process(self, pid: int) -> Process:
        """The live process with this pid (MMError ESRCH if none)."""
        try:
            return self._procs[pid]
        except KeyError:
            raise MMError(errno.ESRCH, f"no process {pid}") from None

    def spawn(self, layout: Optional[str] = None) -> Process:
        """A new process. By default its address space is empty (only the program break
        is set); ``layout="typical"`` maps a small C program (see mmemu.layout)."""
        p = Process(self, self._next_pid)      # MMError(ENOMEM) if no frame for the PGD
        self._next_pid += 1
        p.mm.cow_pgtable = self.cow_pgtable
        self._procs[p.pid] = p
        from .layout import apply_layout
        apply_layout(p, layout)
        return p

    @property
    def cow_pte_accounting(self) -> str:
        """"deferred" or "eager": how COW-shared page tables are accounted."""
        return self.phys.cow_pte_accounting

    @staticmethod
    def _cow_blocked_spans(mm: MM) -> np.ndarray:
        """PMD spans (addr >> 21) whose PTE table may not be shared at fork: spans touching
        a shared, VM_DONTCOPY, VM_WIPEONFORK, I/O or brk-heap VMA fall back to a copy."""
        spans = []
        for v in mm.vmas:
            heap = v.name == "[heap]" or (mm.brk > mm.start_brk and v.start < mm.brk
                                          and v.end > mm.start_brk)
            if heap or v.flags & _NO_COW_PTE:
                spans.append(np.arange(v.start >> 21, ((v.end - 1) >> 21) + 1, dtype=np.int64))
        if mm.core.rss[2]:      # tables holding swap entries are copied, not shared
            from ._core.swap import swap_spans
            spans.append(swap_spans(mm.core))
        if not spans:
            return np.empty(0, dtype=np.int64)
        return np.unique(np.concatenate(spans))

    def _fork(self, parent: Process, cow: bool = False) -> Process:
        """dup_mm/dup_mmap + copy_page_range for every VMA that vma_needs_copy; with cow,
        copy_cow_pte_range shares each eligible PTE table instead."""
        mm = parent.mm
        copy_spans = [
            (v.start, v.end, v.flags) for v in mm.vmas
            if not (v.flags & _NO_COPY) and (v.anon_vma is not None or v.flags & (_MAYBE_GUARD | _PFN_COPY))
        ]
        blocked = self._cow_blocked_spans(mm) if cow else None
        need = 1 + _fork.count_fork_tables(mm.core, [(s, e) for s, e, _ in copy_spans], cow, blocked)
        with reserving(self.phys, need, "fork"):
            return self._dup_mmap(parent, copy_spans, cow, blocked)

    def _dup_mmap(self, parent: Process, copy_spans, cow: bool, blocked) -> Process:
        """dup_mmap inside fork's reservation: the child's tables cannot fail to allocate,
        so a failed fork (the reservation) has used no pid and changed nothing."""
        mm = parent.mm
        child = Process(self, self._next_pid, parent)
        cm = child.mm
        cm.total_vm, cm.data_vm = mm.total_vm, mm.data_vm
        cm.exec_vm, cm.stack_vm = mm.exec_vm, mm.stack_vm
        cm.start_brk, cm.brk, cm.start_stack = mm.start_brk, mm.brk, mm.start_stack
        cm.start_code, cm.end_code = mm.start_code, mm.end_code
        for v in mm.vmas:
            if v.flags & _DONTCOPY:
                cm.vm_stat_account(v.flags, -v.npages)
                continue
            nv = v.copy()
            nv.set_flags(v.flags & _NOT_LOCKED)
            if v.flags & _WIPEONFORK:
                nv.anon_vma = None
            elif v.anon_vma is not None:
                nv.anon_vma = AnonVma(forked=True)
            cm.vmas.append(nv)
            if nv.backing is not None:
                nv.backing.users += 1
        cm.cow_pgtable = mm.cow_pgtable
        rc = _fork.fork_copy_ranges(cm.core, mm.core, copy_spans, cow, blocked)
        if rc != 0:    # every table came from the reservation: count and copy disagree
            raise RuntimeError("copy_page_range needed more page tables than fork reserved")
        self._next_pid += 1
        cm.hiwater_rss = cm.rss
        cm.hiwater_vm = cm.total_vm
        self._procs[child.pid] = child
        parent.children.append(child)
        return child

    def _exit_mmap(self, mm: MM) -> None:
        """exit_mmap: zap every VMA, free all page tables and the PGD, drop the VMAs."""
        mm.update_hiwater_rss()
        _cow_pte.unmap_range(mm.core, 0, 1 << 47)    # drop every shared table: no frame needed
        _zap.exit_mmap(mm.core, [(v.start, v.end) for v in mm.vmas])
        mm.core.release()
        for v in list(mm.vmas):
            mm.remove(v)
        mm.total_vm = mm.data_vm = mm.exec_vm = mm.stack_vm = mm.locked_vm = 0

    def _exit(self, proc: Process, status: int) -> None:
        self._exit_mmap(proc.mm)
        proc.alive = False
        proc.exit_code = status
        del self._procs[proc.pid]
        if proc.parent is not None and proc in proc.parent.children:
            proc.parent.children.remove(proc)
        for c in proc.children:
            c.parent = None
        proc.children = []

    # ---- backing objects ----
    def _new_shmem(self, length: int) -> ShmemFile:
        obj = ShmemFile(length // PAGE_SIZE, next(self._inodes))
        self._backings.add(obj)
        return obj

    def _release_backing(self, obj) -> None:
        """The last VMA of an object went away: an unlinked shmem file is freed."""
        if isinstance(obj, ShmemFile):
            self.phys.release_cache(obj.cache, True)
            self._backings.discard(obj)
        elif isinstance(obj, File) and obj.unlinked:
            obj._free()

    # ---- files (mmemu.file) ----
    def create_file(self, name: str, size: int = 0, data=None, writable: bool = True) -> File:
        """Create a file of max(size, len(data)) bytes holding data (zeros elsewhere).

        writable=False models a descriptor opened O_RDONLY: MAP_SHARED|PROT_WRITE gives
        EACCES and write_file EBADF. The file's page cache counts in Cached (not Shmem)
        and stays until unlink() and the last munmap. EEXIST if the name is taken.
        """
        if name in self._files:
            raise MMError(errno.EEXIST, f"file {name!r} exists")
        f = _file.create_file(self, name, size, data, writable)
        self._files[name] = f
        self._backings.add(f)
        return f

    @property
    def files(self) -> List[File]:
        """The files that have a name (not unlinked)."""
        return list(self._files.values())

    def read_file(self, f: File, offset: int, n: int) -> bytes:
        """pread(2) through the page cache (short at EOF)."""
        return f.read(offset, n)

    def write_file(self, f: File, offset: int, data) -> int:
        """pwrite(2) through the page cache; mapped pages see the bytes at once."""
        return f.write(offset, data)

    def unlink(self, f) -> None:
        """unlink(2) a File (or its name): the cache is freed once no VMA maps it."""
        if isinstance(f, str):
            if f not in self._files:
                raise MMError(errno.ENOENT, f"no file {f!r}")
            f = self._files[f]
        if f.unlinked:
            raise MMError(errno.ENOENT, f"{f.path!r} is already unlinked")
        del self._files[f.path]
        f.unlinked = True
        if f.users == 0:
            f._free()

    # ---- snapshots (mmemu.snapshot) ----
    def save(self, path, *, compress: bool = True) -> None:
        """Write the whole machine to one file: processes, VMAs, page tables, frame
        metadata, allocator state, counters, files and every non-zero byte of memory.

        ``Machine.load(path)`` gives back an identical machine. The file is written to a
        temporary name and renamed, so path is never left half written. compress=False
        stores the sections raw (zlib level 1 otherwise). See mmemu.snapshot for the format.
        """
        from .snapshot import save
        save(self, path, compress=compress)

    @classmethod
    def load(cls, path, *, check: bool = False) -> "Machine":
        """A machine read from a snapshot written by ``save``.

        The file's magic, version, sizes and SHA-256 checksums are verified before anything
        is built; a bad file raises ``mmemu.SnapshotError`` saying what is wrong (truncated
        at byte N, checksum mismatch in section X, not an mmemu snapshot, unsupported
        version V) and no machine is returned. check=True also runs ``check()`` on the
        loaded machine (SnapshotError if it fails).
        """
        from .snapshot import load
        return load(path, cls, check)

    # ---- fault injection ----
    def fail_page_alloc(self, nth: int, times: int = 1) -> None:
        """Fault injection, like the kernel's fail_page_alloc: the nth page allocation
        attempt from now fails (nth >= 1), and the ``times - 1`` after it (``times=-1``:
        every one from then on); ``fail_page_alloc(0)`` turns it off.
        ``m.phys.alloc_calls`` counts the attempts. A syscall that allocates several
        page tables reserves them first, so a failure leaves it with nothing changed."""
        self.phys.fail_page_alloc(nth, times)

    # ---- views ----
    def meminfo(self):
        """/proc/meminfo (kB) as a read-only mapping; str() gives the text."""
        from .stats import meminfo
        return meminfo(self)

    def buddyinfo(self):
        """/proc/buddyinfo: the free blocks of each order 0..10 (a tuple; str() gives the
        kernel's line). Memory never handed out counts as the largest aligned blocks it
        holds; the frames on the per-cpu-pages lists are free but, as in Linux, not
        counted: MemFree = 4 kB * (sum of count * 2**order + ``phys.pcp_pages``)."""
        from .stats import buddyinfo
        return buddyinfo(self)

    def vmstat(self):
        """Event and page counters (/proc/vmstat style) as a Counters mapping."""
        from .stats import vmstat
        return vmstat(self)

    def reset_vmstat(self) -> None:
        """Zero the event counters (not the page gauges)."""
        self.phys.reset_events()

    def check(self) -> None:
        """Recompute every counter from the page tables; raise InvariantError on a mismatch."""
        from .check import check_machine
        check_machine(self)
