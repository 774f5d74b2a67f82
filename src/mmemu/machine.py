"""Machine: emulated physical memory, the processes on it, and system-wide views."""
from __future__ import annotations

import errno
import gc
import itertools
import operator
from typing import TYPE_CHECKING, Dict, List, Optional, Union

import numpy as np

from ._core.filemap import PageCache
from ._core.physmem import MAX_FRAMES, PhysMem
from . import file as _file
from .args import COW_PTE_ACCOUNTING, Size, check_bool, check_choice, format_size, parse_size
from . import swap as _swap
from .check import InvariantError, check_machine
from .errors import MMError, SnapshotError
from .file import File
from .args import cow_pgtable_level, cow_pgtable_mode, cow_pgtable_state, load_cow_pgtable
from .fork import dup_mm
from .huge_memory import Sysfs, thp_mode
from .layout import LAYOUTS, apply_layout
from .locking import new_lock, serialised
from .mmap import exit_mmap
from .process import Process, new_process
from .profiles import PROFILES, Sysctl, cow_pte_profile
from .check_mm import check_mm
from .state import LoadRefs, SaveRefs, bad, field, integer, is_int, refuse_undeclared, show
from .vma import PAGE_SIZE, TASK_SIZE, AnonVma

if TYPE_CHECKING:
    from .args import Buffer, StrPath
    from .stats import BuddyInfo, Counters, MemInfo

def _host_mapped(make, *args):
    """make(*args) for an object that reserves host address space (PhysMem, the swap
    device): if the host refuses, machines no longer reachable may still hold theirs (a
    machine is a reference cycle: its processes and files point back at it), so collect
    them and try once more."""
    try:
        return make(*args)
    except MemoryError:
        gc.collect()
        return make(*args)


def _saved_version(ms):
    """The cow_pte_version a snapshot names (absent: None); SnapshotError if unknown."""
    v = ms.get("cow_pte_version")
    if v is not None and (not isinstance(v, str) or v not in PROFILES):
        raise bad(f"machine: unknown cow_pte_version {v!r}")
    return v


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

    # ---- snapshots (mmemu.snapshot) ----
    def dump_state(self):
        """(record, (indexes, PFNs) of the page cache) for a snapshot."""
        refuse_undeclared(self, "a shmem object")
        return ({"kind": "shmem", "inode": self.inode, "npages": self.npages, "name": self.name,
                 "dev": list(self.dev), "users": self.users}, self.cache.entries())

    @classmethod
    def from_state(cls, machine, rec, index, pfns, where) -> "ShmemFile":
        """The object dump_state gave (without users: the VMAs mapping it count them)."""
        obj = cls(integer(rec, "npages", where, 0, 1 << 52), integer(rec, "inode", where, 0, 1 << 62))
        obj.name = field(rec, "name", str, where)
        obj.dev = _file.device(rec, where)
        _file.fill_page_cache(obj, index, pfns, machine.phys.nframes, where)
        return obj


@serialised
class Machine:
    """An emulated x86-64 machine: physical memory and processes.

    Parameters
    ----------
    memory : int or str
        Physical memory size, bytes or a size string ("32G", "1GiB", "512M"; every unit is
        a power of 1024, see `mmemu.parse_size`); default 32 GiB, at most 64 TiB, at least
        64 KiB, a multiple of 4096. Creation is O(1) in the size: memory is a host
        MAP_NORESERVE mapping.
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
    cow_pgtable : bool or {"pte", "pmd", "pud"}
        System-wide default of PR_SET_COW_PTE for spawned processes: when true every fork
        shares eligible page tables copy-on-write (like ODF's per-process switch, set for
        all) unless it asks otherwise (``fork(cow_pgtable=False)``); "pmd" / "pud" share
        whole PMD / PUD tables (mmemu's whole-table COW, docs/cow-upper-levels.md).
    cow_pte_version : {None, "odf", "v1", "v1-nobrk", "v2", "v3", "v4", "v5"}
        Model one published version of the COW page-table series (mmemu.profiles,
        docs/series-versions.md): its accounting (then cow_pte_accounting may be left out,
        or must agree), its spans, fault, fork, break and TLB rules and its opt-in.
        None (default): mmemu's own rules with the accounting given (default deferred).
    thp : {"always", "madvise", "never"}
        /sys/kernel/mm/transparent_hugepage/enabled (default "madvise", as on the machines
        mmemu is measured on): where an anonymous fault may map a 2 MiB transparent huge
        page. Changeable later through ``m.sysfs`` or ``m.thp`` (see mmemu.huge_memory).

    Raises
    ------
    TypeError
        If memory or swap is not an int or a str, cow_pgtable not a bool or a level, or thp
        not a str.
    ValueError
        If a size is not a size, is out of range or unaligned, cow_pte_accounting is
        not one of the modes, cow_pte_version is not a known version, the two disagree,
        or thp is not one of the THP modes.

    Notes
    -----
    One convention throughout the API: what the machine *is* or *holds* is an attribute
    or property, read without side effects (``memory``, ``swap``, ``processes``,
    ``files``, ``cow_pte_accounting``); what the kernel *computes when read* -- a /proc
    file -- is a method call returning a fresh snapshot (``meminfo()``, ``vmstat()``,
    ``buddyinfo()``, and per process ``status()``, ``maps()``, ``smaps()``, ...).

    Examples
    --------
    >>> m = Machine("1G")
    >>> p = m.spawn()
    >>> a = p.mmap(0, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    >>> p.write(a, b"hi"); c = p.fork(); c.read(a, 2)
    b'hi'
    >>> [q.pid for q in m.processes], m.meminfo()["MemTotal"]
    ([1, 2], 1048576)
    """

    def __init__(self, memory: Size = "32G", *, swap: Optional[Size] = None, max_map_count: int = 65530,
                 cow_pte_accounting: Optional[str] = None, cow_pgtable: Union[bool, str] = False,
                 cow_pte_version: Optional[str] = None, thp: str = "madvise"):
        if cow_pte_accounting is not None:
            check_choice("cow_pte_accounting", cow_pte_accounting, COW_PTE_ACCOUNTING)
        profile, cow_pte_accounting = cow_pte_profile(cow_pte_version, cow_pte_accounting)
        self._lock = new_lock()     # every public entry point holds it (mmemu.locking)
        self._thp = thp_mode(thp)
        nbytes = parse_size(memory)
        if nbytes % PAGE_SIZE:
            raise ValueError("memory must be a multiple of 4096 bytes")
        if nbytes < 16 * PAGE_SIZE:
            raise ValueError("memory must be at least 64 KiB")
        if nbytes > MAX_FRAMES * PAGE_SIZE:
            raise ValueError(f"memory {memory!r} is more than the emulator models "
                             f"({format_size(MAX_FRAMES * PAGE_SIZE)})")
        check_choice("cow_pte_accounting", cow_pte_accounting, COW_PTE_ACCOUNTING)
        swap = min(nbytes, _swap.MAX_SWAP) if swap is None else parse_size(swap)
        self.memory = nbytes
        self.phys = _host_mapped(PhysMem, nbytes // PAGE_SIZE)
        self.swap_device = _host_mapped(_swap.SwapDevice, self.phys, swap)
        self.phys.cow_pte_accounting = cow_pte_accounting
        self.cow_pte_profile = profile  # mmemu.profiles.CowPteProfile, or None
        self.phys.cow_rules = profile.rules if profile else 0
        self.sysctl = Sysctl(self)      # /proc/sys (RFC v2's vm.cow_pte)
        self._dmesg: List[str] = []     # the kernel log (dmesg())
        self.cow_pgtable = cow_pgtable_mode(cow_pgtable) or 0
        self.max_map_count = max_map_count
        self._procs: Dict[int, Process] = {}
        self._next_pid = 1
        self._inodes = itertools.count(1024)
        self._backings: set = set()
        self._files: Dict[str, "File"] = {}     # path -> File (the namespace)
        # mmemu.procfs.import_process: what earlier imports into this machine made of the
        # host's frames, shmem objects and swap entries (not saved: meaningless on another
        # host, so an import into a loaded machine shares nothing with earlier ones)
        self._import_registry = {
            "anon": {},     # real pfn -> (process, address, emulated pfn) of a shared anon page
            "shmem": {},    # key -> ShmemFile
            "swap": {},     # (swap type, offset) -> emulated swap slot
        }

    def __repr__(self) -> str:
        return f"<Machine memory={self.memory >> 20} MiB processes={len(self._procs)}>"

    @property
    def swap(self) -> int:
        """SwapTotal in bytes: the size of the swap device."""
        return self.swap_device.size

    @property
    def thp(self) -> str:
        """The THP mode ("always", "madvise" or "never"); assigning one changes the policy
        for every later fault (ValueError for anything else)."""
        return self._thp

    @thp.setter
    def thp(self, mode) -> None:
        self._thp = thp_mode(mode)

    @property
    def sysfs(self) -> Sysfs:
        """The machine's /sys files as a mapping (mmemu.huge_memory.Sysfs):
        ``m.sysfs["kernel/mm/transparent_hugepage/enabled"]``."""
        return Sysfs(self)

    # ---- processes ----
    @property
    def processes(self) -> List[Process]:
        """The live processes, in pid order (a new list on every read).

        Examples
        --------
        >>> m = Machine("64M"); p = m.spawn(); c = p.fork()
        >>> [q.pid for q in m.processes]
        [1, 2]
        """
        return list(self._procs.values())

    def process(self, pid: int) -> Process:
        """The live process with this pid.

        Raises
        ------
        MMError
            ESRCH if no live process has this pid.
        """
        try:
            return self._procs[pid]
        except KeyError:
            raise MMError(errno.ESRCH, f"no process {pid}") from None

    def spawn(self, layout: Optional[str] = None) -> Process:
        """A new process. By default its address space is empty (only the program break
        is set); ``layout="typical"`` maps a small C program (see mmemu.layout).

        Parameters
        ----------
        layout : {None, "typical"}
            The address space to start with.

        Returns
        -------
        Process
            The new process, with the next pid; it inherits the machine's ``cow_pgtable``.

        Raises
        ------
        ValueError
            An unknown layout (before anything is made).
        MMError
            ENOMEM if the machine is too small for the layout (the half-built process is
            torn down: its frames freed, its pid not used up).

        Examples
        --------
        >>> p = Machine("64M").spawn(layout="typical")
        >>> p.pid, p.status()["VmPTE"] > 0
        (1, True)
        """
        if layout is not None and (not isinstance(layout, str) or layout not in LAYOUTS):
            raise ValueError(f"unknown layout {layout!r} (use None or one of {sorted(LAYOUTS)})")
        p = new_process(self, self._next_pid)      # MMError(ENOMEM) if no frame for the PGD
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
    def cow_pte_version(self) -> Optional[str]:
        """The series version modelled (mmemu.profiles), or None for mmemu's own rules."""
        return self.cow_pte_profile.name if self.cow_pte_profile else None

    def dmesg(self) -> List[str]:
        """The kernel log: the lines the modelled kernel printed, oldest first.

        Returns
        -------
        list of str
            A new list of the lines, in the kernel's formats: check_mm's
            ``BUG: Bad rss-counter state mm:... type:MM_ANONPAGES val:N`` at exit, RFC v2's
            ``pid N does not exist`` from vm.cow_pte (docs/series-versions.md). Empty
            while the modelled kernel has printed nothing.

        Examples
        --------
        >>> Machine("64M").dmesg()
        []
        """
        return list(self._dmesg)

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
        mm = dup_mm(self, parent.mm, cow_pgtable_level(cow_pgtable))
        if cow_pgtable and self.cow_pte_profile is not None:
            self.cow_pte_profile.after_cow_fork(parent)
        child = new_process(self, self._next_pid, parent, mm)
        self._next_pid += 1
        self._procs[child.pid] = child
        parent.children.append(child)
        return child

    def do_exit(self, proc: Process, status: int = 0) -> None:
        """do_exit (kernel/exit.c): exit_mmap tears the address space down, the process
        leaves the machine and its children are orphaned. Use Process.exit."""
        self._own(proc)
        exit_mmap(proc.mm)
        self._dmesg += check_mm(proc.mm)
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
    def create_file(self, name: str, size: int = 0, data: Optional["Buffer"] = None, writable: bool = True,
                    tmpfs: bool = False) -> File:
        """Create a file of max(size, len(data)) bytes holding data (zeros elsewhere).

        writable=False models a descriptor opened O_RDONLY: MAP_SHARED|PROT_WRITE gives
        EACCES and write_file EBADF. The file's page cache counts in Cached (not Shmem)
        and stays until unlink() and the last munmap. EEXIST if the name is taken, ENOENT
        if it is empty (open(2) of ""), TypeError if it is not a str.
        tmpfs=True makes a tmpfs file: its pages are shmem (Shmem, RssShmem) and
        fault-around treats it as tmpfs does (see mmemu.file).

        Returns
        -------
        File
            The new file, named ``name`` in the machine's namespace.

        Raises
        ------
        MMError
            EEXIST if the name is taken, ENOENT if it is empty, ENOMEM if its data does
            not fit.
        TypeError
            If name is not a str.

        Examples
        --------
        >>> m = Machine("64M"); f = m.create_file("data.bin", data=b"x" * 5000)
        >>> f.size, m.read_file(f, 4998, 10)
        (5000, b'xx')
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
        """pread(2) through the page cache.

        Returns
        -------
        bytes
            Up to n bytes at offset (short at EOF).

        Raises
        ------
        MMError
            EBADF for a file of another machine or one unlinked and freed; EINVAL for a
            negative offset.
        """
        return _file.fdget(self, f).read(offset, n)

    def write_file(self, f: File, offset: int, data: "Buffer") -> int:
        """pwrite(2) through the page cache; mapped pages see the bytes at once.

        Returns
        -------
        int
            The number of bytes written (short when memory runs out part-way).

        Raises
        ------
        MMError
            EBADF (a read-only file, another machine's, or one freed), EINVAL, ENOMEM.
        """
        return _file.fdget(self, f).write(offset, data)

    def unlink(self, f: Union[File, str]) -> None:
        """unlink(2) a File (or its name): the cache is freed once no VMA maps it.

        Raises
        ------
        MMError
            ENOENT for an unknown name, a file already unlinked or one of another machine.
        TypeError
            For anything but a File or a str.
        """
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
    def save(self, path: "StrPath", *, compress: bool = True) -> None:
        """Write the whole machine to one file: processes, VMAs, page tables, frame
        metadata, allocator state, counters, files and every non-zero byte of memory.

        ``Machine.load(path)`` gives back an identical machine. The file is written to a
        temporary name and renamed, so path is never left half written. compress=False
        stores the sections raw (zlib level 1 otherwise). See mmemu.snapshot for the format.

        Raises
        ------
        SnapshotError
            If an object holds state the format does not know.
        OSError
            If the file cannot be written.
        """
        from .snapshot import save
        save(self, path, compress=compress)

    @classmethod
    def load(cls, path: "StrPath", *, check: bool = True) -> "Machine":
        """A machine read from a snapshot written by ``save``.

        Nothing is built before the file's magic, version, sizes and SHA-256 checksums are
        verified, and no machine is returned before its every structural invariant is:
        the state and the page tables it links (``from_state``), then ``check()``. A bad
        file raises ``mmemu.SnapshotError`` saying what is wrong (truncated at byte N,
        checksum mismatch in section X, not an mmemu snapshot, unsupported version V, the
        loaded machine fails check()), never another error, whatever the file holds; the
        host memory it may take is bounded by the file and the machine it describes.
        ``check`` is accepted for compatibility: the checker always runs.

        Returns
        -------
        Machine
            The machine the file describes, checked.

        Raises
        ------
        SnapshotError
            For anything wrong in the file.
        """
        from .snapshot import load
        return load(path, cls)

    def dump_state(self):
        """The machine for mmemu.snapshot: (state, arrays), a JSON-able dict and named int
        arrays (PhysMem.dump_state's, the page caches one object after the other, the swap
        slots in use). The frames of arrays["data_pfns"] (``phys.read_frames``) and the
        slots of arrays["swap_slots"] (``swap_device.read_slots``) hold the rest.
        SnapshotError if an object holds state the snapshot format does not know."""
        refuse_undeclared(self, "the Machine")
        if (self._thp != "madvise" or self.phys.huge_zero_pfn >= 0
                or any(p.mm.core.nr_deposited for p in self._procs.values())
                or self.phys.counters()["nr_file_hugepages"]
                or self.phys.counters()["nr_shmem_hugepages"]):
            raise SnapshotError("cannot save: the snapshot format does not know transparent "
                                "huge pages (a mode other than madvise, huge PMDs, or "
                                "PMD-sized page-cache folios)")
        scalars, arrays = self.phys.dump_state()
        refs = SaveRefs(sorted(self._backings, key=lambda b: b.inode))
        brecs, caches, pos = [], [], 0
        for b in refs.backings:
            if not isinstance(b, (File, ShmemFile)):
                raise SnapshotError(f"cannot save: unknown backing object {b!r}")
            rec, cache = b.dump_state()
            rec["cache"] = [pos, len(cache[0])]
            pos += len(cache[0])
            brecs.append(rec)
            caches.append(cache)
        for k, name in enumerate(("page_cache_index", "page_cache_pfn")):
            arrays[name] = np.concatenate([c[k] for c in caches]) if caches else np.empty(0, np.int64)
        arrays["swap_slots"], arrays["swap_counts"] = self.swap_device.dump_state()
        files = []
        for path, f in self._files.items():
            if f.path != path:
                raise SnapshotError(f"cannot save: file {path!r} is not a known backing object")
            files.append(refs.backing_index(f, f"file {path!r}"))
        procs = [p.dump_state(refs) for p in self._procs.values()]
        if self._dmesg:
            raise SnapshotError("cannot save: the kernel log (dmesg) is not in the snapshot format")
        state = {
            "machine": {"memory": self.memory, "swap": self.swap,
                        "max_map_count": self.max_map_count,
                        "cow_pgtable": cow_pgtable_state(self.cow_pgtable), "next_pid": int(self._next_pid),
                        "next_inode": self._peek_inode()},
            "physmem": scalars,
            "backings": brecs,
            "files": files,
            "anon_vmas": refs.anon_vmas,
            "processes": procs,
        }
        if self.cow_pte_profile is not None:
            state["machine"]["cow_pte_version"] = self.cow_pte_profile.name
        return state, arrays

    def _peek_inode(self) -> int:
        """The next inode number (the counter is replaced by an equal one)."""
        n = next(self._inodes)
        self._inodes = itertools.count(n)
        return n

    @classmethod
    def from_state(cls, state, arrays, frames=(), swap_data=()) -> "Machine":
        """The machine dump_state gave: ``cls(memory, swap=..., ...)`` whose physical memory
        (frames: the contents of arrays["data_pfns"], as PhysMem.restore_state takes them),
        swap device (swap_data: the bytes of the slots in use), files, shmem objects and
        processes restore themselves, each checking its own state; here: the references
        between them (a backing object's users are the VMAs mapping it, a linked file is
        named, pids increase below the pid counter, parents and children agree, a parent's
        pid is below its child's, inodes differ and lie below the inode counter). Last, the
        invariant checker (check()) proves every process's page tables safe to walk and
        then the rest. SnapshotError on anything bad, and the half-built machine is torn
        down at once (no reference cycle keeps its host memory)."""
        if not isinstance(state, dict):
            raise bad("state is not an object")
        ms = field(state, "machine", dict, "state")
        scalars = field(state, "physmem", dict, "state")
        nframes = integer(scalars, "nframes", "physmem", 16, MAX_FRAMES)
        memory = integer(ms, "memory", "machine", 0)
        if memory != nframes * PAGE_SIZE:
            raise bad(f"memory {memory} bytes but {nframes} frames")
        swap = integer(ms, "swap", "machine", 0, _swap.MAX_SWAP)
        if swap % PAGE_SIZE:
            raise bad(f"machine: swap {swap} is not a multiple of 4096 bytes")
        eager = integer(scalars, "cow_eager", "physmem", 0, 1)
        m = cls(memory, swap=swap, max_map_count=integer(ms, "max_map_count", "machine", 0, (1 << 31) - 1),
                cow_pte_accounting="eager" if eager else "deferred",
                cow_pgtable=(False, True, "pmd", "pud")[
                    load_cow_pgtable(field(ms, "cow_pgtable", (bool, int), "machine"), "machine")],
                cow_pte_version=_saved_version(ms))
        try:
            m._restore(state, arrays, frames, swap_data)
        except BaseException as e:
            m._break_cycles()
            if isinstance(e, InvariantError):
                raise SnapshotError(f"the loaded machine fails Machine.check(): {e}") from None
            raise
        return m

    def _restore(self, state, arrays, frames, swap_data) -> None:
        """from_state's work on the new machine."""
        m, ms, scalars = self, state["machine"], state["physmem"]
        try:
            m.phys.restore_state(scalars, arrays, frames)
        except ValueError as e:
            raise bad(f"physical memory: {e}") from None
        m.swap_device.restore_state(arrays["swap_slots"], arrays["swap_counts"], swap_data)
        m._next_pid = integer(ms, "next_pid", "machine", 1, 1 << 31)
        next_inode = integer(ms, "next_inode", "machine", 0, 1 << 62)
        m._inodes = itertools.count(next_inode)
        backings, users = m._restore_backings(state, arrays, next_inode)
        anon = field(state, "anon_vmas", list, "state")
        if not all(isinstance(x, bool) for x in anon):
            raise bad("anon_vmas must be booleans")
        refs = LoadRefs(backings, [AnonVma(forked=x) for x in anon])
        m._restore_processes(field(state, "processes", list, "state"), refs)
        for obj, n in zip(backings, users):
            if obj.users != n:
                raise bad(f"backing object (inode {obj.inode}) has {n} users recorded, "
                          f"{obj.users} VMAs map it")
            if obj.users == 0 and (isinstance(obj, ShmemFile) or obj.unlinked):
                raise bad(f"backing object (inode {obj.inode}) is neither mapped nor named")
        check_machine(m)        # which first proves every process's tables safe to walk

    def _break_cycles(self) -> None:
        """Tear down a machine that failed to load: its processes, mms and files point back
        at it, so drop those references now rather than wait for a garbage collection
        (the host memory it mapped goes with the last reference)."""
        for p in self._procs.values():
            p.mm.__dict__.clear()
            p.__dict__.clear()
        for b in self._backings:
            b.__dict__.clear()
        self.__dict__.clear()

    def _restore_backings(self, state, arrays, next_inode):
        """The files and shmem objects of from_state's state (with their page caches), the
        users each had, and the file namespace."""
        cindex, cpfn = arrays["page_cache_index"], arrays["page_cache_pfn"]
        if len(cindex) != len(cpfn):
            raise bad("page_cache_index and page_cache_pfn differ in length")
        backings, users, inodes = [], [], set()
        for i, b in enumerate(field(state, "backings", list, "state")):
            where = f"backing object {i}"
            rng = field(b, "cache", list, where)
            if len(rng) != 2 or not all(is_int(x) for x in rng) or not (
                    0 <= rng[0] and 0 <= rng[1] and rng[0] + rng[1] <= len(cindex)):
                raise bad(f"{where}: page cache outside the page cache sections")
            kind = field(b, "kind", str, where)
            if kind not in ("file", "shmem"):
                raise bad(f"{where}: unknown kind {show(kind)}")
            make = File.from_state if kind == "file" else ShmemFile.from_state
            part = slice(rng[0], rng[0] + rng[1])
            obj = make(self, b, cindex[part], cpfn[part], where)
            if obj.inode >= next_inode or obj.inode in inodes:
                raise bad(f"{where}: inode {obj.inode} used twice or beyond the inode counter")
            inodes.add(obj.inode)
            backings.append(obj)
            users.append(integer(b, "users", where, 0))
        self._backings = set(backings)
        for i in field(state, "files", list, "state"):
            if not is_int(i) or not 0 <= i < len(backings):
                raise bad(f"files: bad backing index {show(i)}")
            obj = backings[i]
            if not isinstance(obj, File) or obj.unlinked or obj.path in self._files:
                raise bad(f"files: backing {i} is not a named file")
            self._files[obj.path] = obj
        if any(isinstance(b, File) and not b.unlinked and b.path not in self._files for b in backings):
            raise bad("files: a file that is not unlinked has no name")
        return backings, users

    def _restore_processes(self, records, refs) -> None:
        """from_state's processes, in pid order, then their parents and children."""
        built = []
        for i, rec in enumerate(records):
            p = Process.from_state(self, rec, refs, f"process {i}")
            if p.pid in self._procs:
                raise bad(f"pid {p.pid} appears twice")
            if p.pid >= self._next_pid or (built and p.pid < built[-1][0].pid):
                raise bad(f"process {i}: pid {p.pid} out of order or beyond the pid counter "
                          f"{self._next_pid}")
            self._procs[p.pid] = p
            built.append((p, rec))
        for p, rec in built:
            where = f"process {p.pid}"
            parent = rec.get("parent")
            if parent is not None:
                if not is_int(parent) or parent not in self._procs:
                    raise bad(f"{where}: parent {show(parent)} is not a live process")
                if parent >= p.pid:
                    raise bad(f"{where}: parent {parent} is younger than its child")
                p.parent = self._procs[parent]
            for c in field(rec, "children", list, where):
                if not is_int(c) or c not in self._procs or self._procs[c] in p.children:
                    raise bad(f"{where}: child {show(c)} is not a live process or is listed twice")
                p.children.append(self._procs[c])
        for p in self._procs.values():
            for c in p.children:
                if c.parent is not p:
                    raise bad(f"process {c.pid} is a child of {p.pid} but names another parent")
            if p.parent is not None and p not in p.parent.children:
                raise bad(f"process {p.pid} names {p.parent.pid} as parent, which does not "
                          f"list it")

    # ---- fault injection ----
    def fail_page_alloc(self, nth: int, times: int = 1, min_order: int = 0) -> None:
        """Fault injection, like the kernel's fail_page_alloc: the nth page allocation
        attempt from now fails (nth >= 1), and the ``times - 1`` after it (``times=-1``:
        every one from then on); ``fail_page_alloc(0)`` turns it off. ``min_order`` is the
        kernel's min-order knob: only attempts of that order or more count and fail
        (``min_order=9``: the THP allocations alone).
        ``m.phys.alloc_calls`` counts the attempts. A syscall that allocates several
        page tables reserves them first, so a failure leaves it with nothing changed.

        Parameters
        ----------
        nth : int
            The allocation attempt (from now, 1 = the next) that fails; 0 turns it off.
        times : int
            How many attempts fail from the nth on (-1: all of them).
        min_order : int
            Attempts of a smaller order (0..10) neither count nor fail.
        """
        self.phys.fail_page_alloc(nth, times, min_order)

    # ---- views ----
    def meminfo(self) -> "MemInfo":
        """/proc/meminfo.

        Returns
        -------
        MemInfo
            A read-only mapping of the fields in kB (MemTotal, MemFree, AnonPages, Mapped,
            PageTables, ...); str() gives the file's text.

        Examples
        --------
        >>> m = Machine("1G"); m.meminfo()["MemTotal"], m.meminfo()["PageTables"]
        (1048576, 0)
        """
        from .stats import meminfo
        return meminfo(self)

    def buddyinfo(self) -> "BuddyInfo":
        """/proc/buddyinfo: the free blocks of each order 0..10 (a tuple; str() gives the
        kernel's line). Memory never handed out counts as the largest aligned blocks it
        holds; the frames on the per-cpu-pages lists are free but, as in Linux, not
        counted: MemFree = 4 kB * (sum of count * 2**order + ``phys.pcp_pages``).

        Returns
        -------
        BuddyInfo
            A tuple of 11 counts; str() gives the kernel's line.
        """
        from .stats import buddyinfo
        return buddyinfo(self)

    def vmstat(self) -> "Counters":
        """Event and page counters (/proc/vmstat style).

        Returns
        -------
        Counters
            A mapping name -> count; ``after - before`` gives the work done in between,
            ``.nonzero()`` drops zeros and ``.describe()`` says what each counts (also
            ``mmemu counters`` on the command line).
        """
        from .stats import vmstat
        return vmstat(self)

    def reset_vmstat(self) -> None:
        """Zero the event counters (not the page gauges such as nr_free_pages).

        Returns
        -------
        None
        """
        self.phys.reset_events()

    def check(self) -> None:
        """Recompute every counter from the page tables.

        Raises
        ------
        InvariantError
            On any mismatch (rss, mapcount, refcount, PageTables, free frames, a leaked or
            stale frame), with a precise message.
        """
        check_machine(self)
