"""Machine: emulated physical memory, the processes on it, and system-wide views."""
from __future__ import annotations

import errno
import itertools
import re
from typing import Dict, List, Optional

import numpy as np

from ._core import fork as _fork
from ._core import zap as _zap
from ._core.physmem import PhysMem
from .errors import MMError, enomem
from .flags import VmFlags
from .mm import MM
from .process import Process
from .vma import PAGE_SIZE, AnonVma

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

    Examples
    --------
    >>> m = Machine("1G")
    >>> p = m.spawn()
    >>> a = p.mmap(0, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    >>> p.write(a, b"hi"); c = p.fork(); c.read(a, 2)
    b'hi'
    """

    def __init__(self, memory="32G", *, max_map_count: int = 65530):
        nbytes = parse_size(memory)
        if nbytes % PAGE_SIZE:
            raise ValueError("memory must be a multiple of 4096 bytes")
        if nbytes < 16 * PAGE_SIZE:
            raise ValueError("memory must be at least 64 KiB")
        self.memory = nbytes
        self.phys = PhysMem(nbytes // PAGE_SIZE)
        self.max_map_count = max_map_count
        self._procs: Dict[int, Process] = {}
        self._pids = itertools.count(1)
        self._inodes = itertools.count(1024)
        self._backings: set = set()

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

    def spawn(self) -> Process:
        """A new process with an empty address space."""
        if self.phys.nr_free < 1:
            raise enomem("no frame for the PGD")
        p = Process(self, next(self._pids))
        self._procs[p.pid] = p
        return p

    def _fork(self, parent: Process) -> Process:
        """dup_mm/dup_mmap + copy_page_range for every VMA that vma_needs_copy."""
        mm = parent.mm
        copy_spans = [
            (v.start, v.end, v.flags) for v in mm.vmas
            if not (v.flags & (VmFlags.DONTCOPY | VmFlags.WIPEONFORK)) and v.anon_vma is not None
        ]
        need = 1 + _fork.count_fork_tables(mm.core, [(s, e) for s, e, _ in copy_spans])
        if self.phys.nr_free < need:
            raise enomem(f"fork needs {need} page-table frames, {self.phys.nr_free} free")
        child = Process(self, next(self._pids), parent)
        cm = child.mm
        cm.total_vm, cm.data_vm = mm.total_vm, mm.data_vm
        cm.exec_vm, cm.stack_vm = mm.exec_vm, mm.stack_vm
        cm.start_brk, cm.brk, cm.start_stack = mm.start_brk, mm.brk, mm.start_stack
        cm.start_code, cm.end_code = mm.start_code, mm.end_code
        for v in mm.vmas:
            if v.flags & VmFlags.DONTCOPY:
                cm.vm_stat_account(v.flags, -v.npages)
                continue
            nv = v.copy()
            nv.set_flags(v.flags & ~(VmFlags.LOCKED | VmFlags.LOCKONFAULT))
            if v.flags & VmFlags.WIPEONFORK:
                nv.anon_vma = None
            elif v.anon_vma is not None:
                nv.anon_vma = AnonVma(forked=True)
            cm.vmas.append(nv)
            if nv.backing is not None:
                nv.backing.users += 1
        rc = _fork.fork_copy_ranges(cm.core, mm.core, copy_spans)
        if rc != 0:    # cannot happen: the frames were counted above
            raise RuntimeError("copy_page_range ran out of frames after the pre-count")
        cm.hiwater_rss = cm.rss
        cm.hiwater_vm = cm.total_vm
        self._procs[child.pid] = child
        parent.children.append(child)
        return child

    def _exit_mmap(self, mm: MM) -> None:
        """exit_mmap: zap every VMA, free all page tables and the PGD, drop the VMAs."""
        mm.update_hiwater_rss()
        _zap.exit_mmap(mm.core, [(v.start, v.end) for v in mm.vmas])
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

    # ---- views ----
    def meminfo(self):
        """/proc/meminfo (kB) as a read-only mapping; str() gives the text."""
        from .stats import meminfo
        return meminfo(self)

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
