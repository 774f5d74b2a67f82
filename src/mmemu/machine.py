"""Machine: emulated physical memory, the processes on it, and system-wide views."""
from __future__ import annotations

import errno
import itertools
import operator
import re
from typing import Dict, List, Optional

import numpy as np

from ._core.filemap import PageCache
from ._core.physmem import PhysMem
from . import file as _file
from . import swap as _swap
from .errors import MMError
from .file import File
from .fork import dup_mm
from .layout import LAYOUTS, apply_layout
from .locking import new_lock, serialised
from .mmap import exit_mmap
from .process import Process
from .vma import PAGE_SIZE, TASK_SIZE

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

    Its page cache (a sparse PageCache) maps page index -> PFN. It lives while a VMA uses it.
    """

    swapbacked = True
    freed = False       # set by Machine._evict

    def __init__(self, npages: int, inode: int):
        self.npages = npages
        self.cache = PageCache()
        self.users = 0
        self.inode = inode
        self.name = "/dev/zero (deleted)"
        self.dev = (0, 1)


@serialised
class Machine:
    """An emulated x86-64 machine: physical memory and processes.

    Parameters
    ----------
    memory : int or str
        Physical memory size, bytes or a size string ("32G", "1T"); default 32 GiB.
        Creation is O(1) in the size: memory is a host MAP_NORESERVE mapping.
    swap : int or str, optional
        Size of the swap device (SwapTotal), like memory, at most 64 TiB; default None:
        as large as memory (capped at 64 TiB). 0 gives a machine without swap (swap_out
        then writes nothing). The device is a host MAP_NORESERVE mapping too: it costs
        what its used slots hold.
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

    def __init__(self, memory="32G", *, swap=None, max_map_count: int = 65530,
                 cow_pte_accounting: str = "deferred", cow_pgtable: bool = False):
        self._lock = new_lock()     # every public entry point holds it (mmemu.locking)
        nbytes = parse_size(memory)
        if nbytes % PAGE_SIZE:
            raise ValueError("memory must be a multiple of 4096 bytes")
        if nbytes < 16 * PAGE_SIZE:
            raise ValueError("memory must be at least 64 KiB")
        swap = min(nbytes, _swap.MAX_SWAP) if swap is None else parse_size(swap)
        self.memory = nbytes
        self.phys = PhysMem(nbytes // PAGE_SIZE)
        _swap.attach(self, swap)
        self.swap = swap
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
        is set); ``layout="typical"`` maps a small C program (see mmemu.layout).

        All or nothing: an unknown layout raises ValueError before anything is made, and a
        machine too small for the layout raises MMError(ENOMEM) with the half-built process
        torn down (its frames freed, its pid not used up)."""
        if layout is not None and (not isinstance(layout, str) or layout not in LAYOUTS):
            raise ValueError(f"unknown layout {layout!r} (use None or one of {sorted(LAYOUTS)})")
        p = Process(self, self._next_pid)      # MMError(ENOMEM) if no frame for the PGD
        self._next_pid += 1
        p.mm.cow_pgtable = self.cow_pgtable
        self._procs[p.pid] = p
        try:
            apply_layout(p, layout)
        except BaseException:
            self.do_exit(p, 0)
            self._next_pid -= 1
            raise
        return p

    @property
    def cow_pte_accounting(self) -> str:
        """"deferred" or "eager": how COW-shared page tables are accounted."""
        return self.phys.cow_pte_accounting

    # ---- the kernel side of fork, clone3 and exit (Process.fork / clone3 / exit call these) ----
    def _own(self, proc) -> None:
        if not isinstance(proc, Process) or self._procs.get(proc.pid) is not proc:
            raise MMError(errno.ESRCH, f"{proc!r} is not a live process of this machine")

    def copy_process(self, parent: Process, cow_pgtable: bool = False) -> Process:
        """copy_process for a new process (kernel/fork.c): the address space copied by
        mmemu.fork.dup_mm (with cow_pgtable, eligible PTE tables shared copy-on-write),
        then a pid and a place in the parent's children. Nothing changes (no pid is used)
        if the copy does not fit: MMError(ENOMEM). Use Process.fork or clone3."""
        self._own(parent)
        mm = dup_mm(self, parent.mm, bool(cow_pgtable))
        child = Process(self, self._next_pid, parent, mm)
        self._next_pid += 1
        self._procs[child.pid] = child
        parent.children.append(child)
        return child

    def do_exit(self, proc: Process, status: int = 0) -> None:
        """do_exit (kernel/exit.c): exit_mmap tears the address space down, the process
        leaves the machine and its children are orphaned. Use Process.exit."""
        self._own(proc)
        exit_mmap(proc.mm)
        proc.alive = False
        proc.exit_code = status
        del self._procs[proc.pid]
        if proc.parent is not None and proc in proc.parent.children:
            proc.parent.children.remove(proc)
        for c in proc.children:
            c.parent = None
        proc.children = []

    # ---- backing objects (the kernel side of mmap and munmap: use Process.mmap) ----
    def shmem_zero_setup(self, length: int) -> ShmemFile:
        """shmem_zero_setup: the shmem object behind a MAP_SHARED|MAP_ANONYMOUS mapping of
        length bytes (a positive multiple of the page size up to TASK_SIZE; unmapped until
        a VMA takes it)."""
        length = operator.index(length)
        if length <= 0 or length % PAGE_SIZE or length > TASK_SIZE:
            raise ValueError(f"shmem object of {length} bytes")
        obj = ShmemFile(length // PAGE_SIZE, next(self._inodes))
        self._backings.add(obj)
        return obj

    def release_backing(self, obj) -> None:
        """__fput after the last VMA of obj went away (MM.remove): a shmem object, or a
        File already unlinked, is evicted with its page cache. Does nothing while a VMA
        still maps obj or a linked File keeps it."""
        if obj not in self._backings or obj.users:
            return
        if isinstance(obj, ShmemFile) or (isinstance(obj, File) and obj.unlinked):
            self._evict(obj)

    def _evict(self, obj) -> None:
        """evict(): free the page cache of an object nothing maps or names any more (a
        File's calls then raise EBADF)."""
        _file.truncate_inode_pages_range(self, obj, 0)
        self._backings.discard(obj)
        obj.freed = True

    # ---- files (mmemu.file) ----
    def create_file(self, name: str, size: int = 0, data=None, writable: bool = True,
                    tmpfs: bool = False) -> File:
        """Create a file of max(size, len(data)) bytes holding data (zeros elsewhere).

        writable=False models a descriptor opened O_RDONLY: MAP_SHARED|PROT_WRITE gives
        EACCES and write_file EBADF. The file's page cache counts in Cached (not Shmem)
        and stays until unlink() and the last munmap. EEXIST if the name is taken, ENOENT
        if it is empty (open(2) of ""), TypeError if it is not a str.
        tmpfs=True makes a tmpfs file: its pages are shmem (Shmem, RssShmem) and
        fault-around treats it as tmpfs does (see mmemu.file).
        """
        if not isinstance(name, str):
            raise TypeError(f"a file name is a str, not {type(name).__name__}")
        if not name:
            raise MMError(errno.ENOENT, "empty file name")
        if name in self._files:
            raise MMError(errno.EEXIST, f"file {name!r} exists")
        f = _file.create_file(self, name, size, data, writable, tmpfs)
        self._files[name] = f
        self._backings.add(f)
        return f

    @property
    def files(self) -> List[File]:
        """The files that have a name (not unlinked)."""
        return list(self._files.values())

    def read_file(self, f: File, offset: int, n: int) -> bytes:
        """pread(2) through the page cache (short at EOF)."""
        return _file.fdget(self, f).read(offset, n)

    def write_file(self, f: File, offset: int, data) -> int:
        """pwrite(2) through the page cache; mapped pages see the bytes at once."""
        return _file.fdget(self, f).write(offset, data)

    def unlink(self, f) -> None:
        """unlink(2) a File (or its name): the cache is freed once no VMA maps it."""
        if isinstance(f, str):
            if f not in self._files:
                raise MMError(errno.ENOENT, f"no file {f!r}")
            f = self._files[f]
        elif not isinstance(f, File):
            raise TypeError(f"expected a mmemu File or a path, got {type(f).__name__}")
        elif f.machine is not self:
            raise MMError(errno.ENOENT, f"{f.path!r} is a file of another Machine")
        if f.unlinked:
            raise MMError(errno.ENOENT, f"{f.path!r} is already unlinked")
        del self._files[f.path]
        f.unlinked = True
        if f.users == 0:
            self._evict(f)

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
