"""``mmemu replay``: a trace replayed in a fresh emulated machine per page-table design.

The machine starts from the trace's snapshot (the traced tree as imported when recording
began) or, without one, from an empty process. Events are replayed in order: runs of page
faults of one process go to the Cython core in one call (fault_batch.access_batch, the same
fault path as every access) after the access check (access_error) here in numpy; system
calls go through the Process API with their recorded arguments; task_newtask forks (or, for
CLONE_VM, makes the new task share its parent's process), sched_process_exec empties the
address space (execve) and a group exit exits. At each checkpoint the emulated
/proc/PID/status is set beside the kernel's.

Fidelity rules (named by cause in the result's ``differences``):

* a successful mmap is replayed at the address Linux returned (MAP_FIXED), a moved mremap
  to where Linux moved it (MREMAP_FIXED): ASLR and the emulator's own placement would
  otherwise differ; a failed call is replayed with its own arguments and must fail with the
  same errno;
* a fault below a VM_GROWSDOWN VMA grows the stack (expand_downwards), which mmemu's
  fault path leaves out: a MAP_GROWSDOWN mapping below the stack, merged with it;
* a file mapping's file is the one /proc/PID/maps showed at the next checkpoint for that
  address (identity and size, never contents);
* faults outside every emulated VMA (an exec'd image: the kernel maps it without system
  calls) or that access_error refuses are reported, not replayed;
* lost events (a full trace buffer) make every later number suspect: reported first.
"""
from __future__ import annotations

import errno
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .._core.constants import FAULT_OK
from .._core.fault_batch import access_batch
from ..errors import BusError, MMError, SegmentationFault
from ..flags import (CLONE_VM, MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_GROWSDOWN, MAP_PRIVATE,
                     MAP_SHARED, MREMAP_FIXED, MREMAP_MAYMOVE, PROT_EXEC, PROT_READ, PROT_WRITE,
                     VmFlags)
from ..huge_memory import pmd_mappable
from ..vma import VM_ACCESS_FLAGS, AnonVma
from .events import (EXEC, EXIT, FAULT, FORK, KFAULT, PF_INSTR, PF_WRITE, ROLLUP_FIELDS,
                     STATUS_FIELDS, SYSCALL, SYSCALL_NR, SYSCALLS)
from .trace import Trace

STACK_GUARD_GAP = 256 << 12
FAULT_CODES = {1: "out of emulated memory", 2: "SIGBUS", 3: "SIGSEGV (guard region)"}
_NO_EFFECT = {"openat", "close", "memfd_create", "clone", "clone3", "fork", "vfork", "execve",
              "exit", "exit_group", "shmget"}
_MAX_LISTED = 200


@dataclass
class DesignResult:
    """One design's replay: what ``mmemu replay`` prints and --json writes, and what a cost
    model reads (``vmstat``: the machine's event counters over the replay; ``fork_vmstat``:
    over the forks alone)."""
    design: str
    title: str
    events: int = 0
    faults: int = 0
    syscalls: int = 0
    forks: int = 0
    execs: int = 0
    exits: int = 0
    peak_pagetables_kb: int = 0
    final_pagetables_kb: int = 0
    pagetables_added_by_forks_kb: int = 0
    cow_faults: int = 0
    tables_shared: int = 0
    tables_broken: int = 0
    tables_copied: int = 0
    bytes_copied: int = 0           # 4 KiB per COW page copy, 8 bytes per PTE copied
    emulated_seconds: float = 0.0
    fault_seconds: float = 0.0
    fork_seconds: float = 0.0
    vmstat: Dict[str, int] = field(default_factory=dict)
    fork_vmstat: Dict[str, int] = field(default_factory=dict)
    checkpoints: List[dict] = field(default_factory=list)
    timeline: List[tuple] = field(default_factory=list)   # (event index, ts, PageTables kB, RSS kB)
    syscall_mismatches: List[dict] = field(default_factory=list)
    refused_faults: List[dict] = field(default_factory=list)
    refused_fault_count: Dict[str, int] = field(default_factory=dict)
    not_replayed: Dict[str, int] = field(default_factory=dict)
    lost_events: int = 0
    differences: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _designs():
    from ..compare import DESIGNS
    return DESIGNS


def _machine(trace: Trace, design: str):
    """A fresh machine of `design` (compare.DESIGNS: its accounting mode and, for a version
    of the series, its profile) holding the trace's starting state; {traced tid: Process}.
    The snapshot's own mode and version are replaced (no table is COW-shared in it)."""
    from ..compare import design_loader, design_machine
    meta = trace.meta
    if trace.snapshot:
        fd, tmp = tempfile.mkstemp(prefix=".mmemu-replay-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(trace.snapshot)
            m = design_loader(design).load(tmp)
        finally:
            os.unlink(tmp)
        procs = {int(k): m.process(v) for k, v in meta.get("snapshot_pids", {}).items()}
    else:
        m = design_machine(design, meta.get("snapshot_memory", "64G"))
        procs = {int(meta.get("root", 1)): m.spawn()}
    for tid, tgid in meta.get("threads", {}).items():
        if int(tgid) in procs:
            procs[int(tid)] = procs[int(tgid)]
    return m, procs


class _Replayer:
    def __init__(self, trace: Trace, design: str, check: bool):
        title, _, cow = _designs()[design][:3]
        self.t, self.check, self.cow = trace, check, bool(cow)
        self.m, self.procs = _machine(trace, design)
        self.leaders = {tid: p for tid, p in self.procs.items()}   # tgid -> Process
        self.r = DesignResult(design, title, lost_events=int(trace.meta.get("lost_events", 0)))
        self.vma_cache = {}
        self.traced_faults = {}         # id(Process) -> faults of the trace replayed in it
        self.first_cp = {}              # pid -> (kernel minflt, traced faults) at its first checkpoint
        self.shm = {}           # (process id, address) -> size of a shmat mapping
        self.files = {f.name: f for f in self.m.files}
        self._file_maps = trace.maps
        ev = trace.events
        self.cp_event = trace.checkpoints["event"]

    # ---------------------------------------------------------------- faults
    def _vmas(self, p):
        c = self.vma_cache.get(id(p.mm))
        if c is None or c[0] is not p.mm:
            vmas = list(p.mm.vmas)
            c = (p.mm, vmas, np.array([v.start for v in vmas], np.uint64),
                 np.array([v.end for v in vmas], np.uint64),
                 np.array([int(v.flags) for v in vmas], np.uint64))
            self.vma_cache[id(p.mm)] = c
        return c

    def _forget(self, p):
        self.vma_cache.pop(id(p.mm), None)

    def faults(self, lo: int, hi: int) -> None:
        ev = self.t.events[lo:hi]
        tid = int(self.pid[lo])
        p = self.procs.get(tid)
        if p is None or not p.alive:
            self._refuse(lo, ev, np.ones(len(ev), bool), "no such process in the replay")
            return
        addrs, need = self.addr[lo:hi], self.need[lo:hi]
        idx, ok, vmas = self._lookup(p, addrs, need)
        if not ok.all():
            # a fault below a stack VMA grows it (expand_downwards); then look up again
            if self._grow_stacks(p, addrs[~ok]):
                idx, ok, vmas = self._lookup(p, addrs, need)
            if not ok.all():
                self._refuse(lo, ev, ~ok, None, p)
            idx = np.where(ok, idx, -1)
        if len(vmas) > 1:               # hand the core only the VMAs this batch touches
            used = np.unique(idx[idx >= 0])
            vmas = [vmas[i] for i in used.tolist()]
            idx = np.where(idx >= 0, np.searchsorted(used, idx), -1)
        rc = np.zeros(len(ev), np.int8)
        thp = [pmd_mappable(p.machine, v) for v in vmas]
        t0 = time.perf_counter()
        anon = access_batch(p.mm.core, vmas, idx, addrs, self.write[lo:hi], rc, thp)
        self.r.fault_seconds += time.perf_counter() - t0
        for v, a in zip(vmas, anon):
            if a and v.anon_vma is None:
                v.anon_vma = AnonVma()          # anon_vma_prepare
        bad = rc != FAULT_OK
        if bad.any():
            for i in np.flatnonzero(bad)[:_MAX_LISTED]:
                self._listed(lo + int(i), ev[i], FAULT_CODES.get(int(rc[i]), str(rc[i])))
            for code in np.unique(rc[bad]):
                k = FAULT_CODES.get(int(code), str(code))
                self.r.refused_fault_count[k] = self.r.refused_fault_count.get(k, 0) + int(np.sum(rc == code))
        self.r.faults += len(ev)
        self.traced_faults[id(p)] = self.traced_faults.get(id(p), 0) + len(ev)

    def _lookup(self, p, addrs, need):
        """(VMA index, access allowed, VMAs) of each address: find_vma and access_error."""
        _, vmas, starts, ends, flags = self._vmas(p)
        if len(vmas) == 1:
            idx = np.zeros(len(addrs), np.int64)
        else:
            idx = np.searchsorted(starts, addrs, side="right").astype(np.int64) - 1
        if not len(vmas):
            return idx, np.zeros(len(addrs), bool), vmas
        if len(vmas) == 1:
            ok = (addrs >= starts[0]) & (addrs < ends[0]) & ((flags[0] & need) != 0)
            return idx, ok, vmas
        safe = np.maximum(idx, 0)
        ok = (idx >= 0) & (addrs < ends[safe]) & ((flags[safe] & need) != 0)
        return idx, ok, vmas

    def _grow_stacks(self, p, addrs) -> bool:
        """expand_downwards for faults just below a VM_GROWSDOWN VMA: map the gap."""
        grew = False
        for a in np.unique(addrs & ~np.uint64(4095)):
            a = int(a)
            nxt = p.mm.find_vma(a)
            if nxt is None or nxt.start <= a or not (nxt.flags & VmFlags.GROWSDOWN):
                continue
            prev = p.mm.vmas[p.mm.vmas.index(nxt) - 1] if p.mm.vmas.index(nxt) else None
            if prev is not None and prev.end + STACK_GUARD_GAP > a:
                continue
            prot = (PROT_READ if nxt.flags & VmFlags.READ else 0) | \
                   (PROT_WRITE if nxt.flags & VmFlags.WRITE else 0) | \
                   (PROT_EXEC if nxt.flags & VmFlags.EXEC else 0)
            try:
                p.mmap(a, nxt.start - a, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_GROWSDOWN)
                grew = True
            except MMError:
                continue
            self._forget(p)
        return grew

    def _refuse(self, lo, ev, mask, reason, p=None):
        for i in np.flatnonzero(mask):
            why = reason
            if why is None:
                a = int(ev["a0"][i])
                v = p.mm.find_vma(a)
                why = "outside every emulated VMA" if v is None or v.start > a else \
                    "access_error: the VMA does not allow this access"
            self.r.refused_fault_count[why] = self.r.refused_fault_count.get(why, 0) + 1
            if len(self.r.refused_faults) < _MAX_LISTED:
                self._listed(lo + int(i), ev[i], why)

    def _listed(self, index, e, why):
        if len(self.r.refused_faults) < _MAX_LISTED:
            self.r.refused_faults.append({"event": index, "pid": int(e["pid"]),
                                          "address": hex(int(e["a0"])),
                                          "error_code": hex(int(e["a1"])), "reason": why})

    # ---------------------------------------------------------------- syscalls
    def syscall(self, i: int, e) -> None:
        name = SYSCALLS.get(int(e["nr"]), str(int(e["nr"])))
        self.r.syscalls += 1
        if name in _NO_EFFECT:
            return
        p = self.procs.get(int(e["pid"]))
        if p is None or not p.alive:
            self._count("no such process in the replay")
            return
        a = [int(e[f"a{k}"]) for k in range(6)]
        ret = int(e["ret"])
        want_err = -ret if -4096 < ret < 0 else 0
        self._forget(p)
        try:
            got = self._call(p, name, a, ret, want_err, i)
        except MMError as ex:
            if ex.errno != want_err:
                self._mismatch(i, e, name, ret, f"-{ex.errname}")
            return
        except (SegmentationFault, BusError) as ex:
            self._mismatch(i, e, name, ret, str(ex))
            return
        if got is None:
            return
        if want_err:
            self._mismatch(i, e, name, ret, got)
        elif got != ret:
            self._mismatch(i, e, name, ret, got)

    def _count(self, what):
        self.r.not_replayed[what] = self.r.not_replayed.get(what, 0) + 1

    def _mismatch(self, i, e, name, recorded, replayed):
        if len(self.r.syscall_mismatches) < _MAX_LISTED:
            self.r.syscall_mismatches.append({"event": i, "pid": int(e["pid"]), "syscall": name,
                                              "args": [hex(int(e[f"a{k}"])) for k in range(6)],
                                              "recorded": recorded, "replayed": replayed})
        self._count("syscall result differs")

    def _call(self, p, name, a, ret, want_err, i):
        if name == "mmap":
            addr, length, prot, flags, fd, off = a
            fd = fd - (1 << 32) if fd >= 1 << 31 else fd
            file = None
            if not flags & MAP_ANONYMOUS and fd >= 0:
                file = self._file(p, i, ret if not want_err else addr, length, off)
                if file is None and not want_err:
                    self._count("mmap of a file no checkpoint showed (a file of its own)")
                    file = self.m.create_file(f"(file of event {i})", off + length)
            if not want_err:
                addr, flags = ret, (flags & ~MAP_FIXED_NOREPLACE) | MAP_FIXED
            if file is not None:
                return p.mmap(addr, length, prot, flags, -1, off, file=file)
            return p.mmap(addr, length, prot, flags | (MAP_ANONYMOUS if fd < 0 or file is None else 0))
        if name == "munmap":
            return p.munmap(a[0], a[1])
        if name in ("mprotect", "pkey_mprotect"):
            return p.mprotect(a[0], a[1], a[2])
        if name == "mremap":
            old, olen, nlen, flags, new = a[:5]
            if not want_err and ret != old:
                flags |= MREMAP_FIXED | MREMAP_MAYMOVE
                new = ret
            return p.mremap(old, olen, nlen, flags, new)
        if name == "brk":
            return p.brk(a[0])
        if name == "madvise":
            return p.madvise(a[0], a[1], a[2])
        if name in ("mlock", "mlock2"):
            if want_err:
                return None
            self._populate(p, a[0], a[1])
            return 0
        if name == "shmat":
            if want_err:
                return None
            size = self._extent(p, i, ret) or (64 << 10)
            prot = PROT_READ | (0 if a[2] & 0o10000 else PROT_WRITE)       # SHM_RDONLY
            self.shm[(id(p.mm), ret)] = size
            p.mmap(ret, size, prot, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
            return ret
        if name == "shmdt":
            size = self.shm.pop((id(p.mm), a[0]), None)
            if size is None:
                return None if want_err else self._count("shmdt of an unknown segment")
            return p.munmap(a[0], size)
        self._count(f"{name} (not modelled)")
        return None

    def _populate(self, p, start, length):
        """mlock's populate_vma_page_range: fault in every page (a write where the VMA is
        private and writable, as FOLL_WRITE)."""
        end = start + length
        for v in list(p.mm.vmas):
            s, t = max(v.start, start & ~4095), min(v.end, end)
            if s < t and v.flags & VM_ACCESS_FLAGS:
                p.touch(s, t - s, write=bool(v.flags & VmFlags.WRITE) and not v.flags & VmFlags.SHARED)

    def _maps_after(self, p, i, addr):
        """The /proc/PID/maps rows of the first checkpoint after event i covering addr."""
        mp = self._file_maps
        if not len(mp):
            return None
        cps = np.flatnonzero(self.cp_event > i)
        for c in cps[:64]:
            rows = mp[(mp["checkpoint"] == c) & (mp["start"] <= addr) & (mp["end"] > addr)]
            if len(rows):
                return rows[0]
        return None

    def _extent(self, p, i, addr):
        row = self._maps_after(p, i, addr)
        return None if row is None else int(row["end"] - row["start"])

    def _file(self, p, i, addr, length, off):
        row = self._maps_after(p, i, addr)
        if row is None:
            return None
        info = self.t.meta["files"][int(row["file"])]
        path = info["path"]
        f = self.files.get(path)
        if f is None:
            size = info["size"] if info["size"] >= 0 else off + length
            tmpfs = path.startswith(("/memfd:", "/dev/shm/", "/SYSV")) or path.endswith("(deleted)")
            f = self.m.create_file(path, size, tmpfs=tmpfs)
            self.files[path] = f
        return f

    # ---------------------------------------------------------------- the tree
    def fork(self, e) -> None:
        parent = self.procs.get(int(e["pid"]))
        child, flags = int(e["a0"]), int(e["a1"])
        if parent is None or not parent.alive:
            self._count("fork of a process not in the replay")
            return
        if flags & CLONE_VM:
            self.procs[child] = parent          # a thread, or a vfork child until it execs
            return
        before_pt = self._pagetables_kb()
        ev0 = self.m.vmstat()
        t0 = time.perf_counter()
        c = parent.fork(cow_pgtable=self.cow)
        self.r.fork_seconds += time.perf_counter() - t0
        work = self.m.vmstat() - ev0
        for k, v in dict(work).items():
            if v and not k.startswith("nr_"):
                self.r.fork_vmstat[k] = self.r.fork_vmstat.get(k, 0) + int(v)
        self.r.pagetables_added_by_forks_kb += self._pagetables_kb() - before_pt
        self.procs[child] = c
        self.leaders[child] = c
        self.r.forks += 1

    def execve(self, e) -> None:
        old, new = int(e["a0"]), int(e["pid"])
        p = self.procs.get(old)
        self.r.execs += 1
        if p is None:
            self._count("exec of a process not in the replay")
            return
        if self.leaders.get(old) is p or self.leaders.get(new) is p:
            self._forget(p)
            p.execve()
            self.procs[new] = p
        else:                                   # a vfork child leaves its parent's mm
            c = self.m.spawn()
            self.procs[new] = self.leaders[new] = c
        self.differences_exec = True

    def exit(self, e) -> None:
        tid = int(e["pid"])
        p = self.procs.pop(tid, None)
        self.r.exits += 1
        if p is None or not e["a0"]:
            return
        if self.leaders.get(tid) is p and p.alive:
            self._forget(p)
            p.exit()
            del self.leaders[tid]
            for k in [k for k, v in self.procs.items() if v is p]:
                del self.procs[k]

    # ---------------------------------------------------------------- checkpoints
    def checkpoint(self, c) -> None:
        pid = int(c["pid"])
        p = self.leaders.get(pid)
        kernel = {f: int(c[f]) for f in STATUS_FIELDS}
        kernel.update({"rollup_" + f: int(c["rollup_" + f]) for f in ROLLUP_FIELDS})
        kernel["minflt"] = int(c["minflt"])
        emulated = None
        if p is not None and p.alive:
            st = p.status()
            emulated = {f: int(st[f]) for f in STATUS_FIELDS}
            # the faults the trace holds for this process against the kernel's minflt,
            # both counted from the process's first checkpoint
            traced = self.traced_faults.get(id(p), 0)
            k0, t0 = self.first_cp.setdefault(pid, (kernel["minflt"], traced))
            kernel["faults_since_first_checkpoint"] = kernel["minflt"] - k0
            emulated["faults_since_first_checkpoint"] = traced - t0
        self.r.checkpoints.append({"pid": pid, "event": int(c["event"]),
                                   "time": (int(c["ts"]) - self.t0) / 1e9,
                                   "kernel": kernel, "emulated": emulated})

    def _pagetables_kb(self) -> int:
        """/proc/meminfo PageTables, from the page counters alone."""
        return self.m.phys.counters()["nr_page_table_pages"] * 4

    def sample(self, i, ts):
        rss = sum(int(p.status()["VmRSS"]) for p in set(self.leaders.values()) if p.alive)
        pt = self._pagetables_kb()
        self.r.peak_pagetables_kb = max(self.r.peak_pagetables_kb, pt)
        self.r.timeline.append((i, (int(ts) - self.t0) / 1e9, pt, rss))

    # ---------------------------------------------------------------- the loop
    def run(self) -> DesignResult:
        t = self.t
        ev = t.events
        n = len(ev)
        self.t0 = int(ev["ts"][0]) if n else 0
        # contiguous columns, once (a structured array's fields are strided views)
        kind = np.ascontiguousarray(ev["kind"])
        self.pid = np.ascontiguousarray(ev["pid"])
        self.addr = np.ascontiguousarray(ev["a0"])
        err = np.ascontiguousarray(ev["a1"])
        self.write = ((err & PF_WRITE) != 0).view(np.uint8)
        self.need = np.where(self.write != 0, np.uint64(VmFlags.WRITE),
                             np.where((err & PF_INSTR) != 0, np.uint64(VmFlags.EXEC),
                                      np.uint64(VM_ACCESS_FLAGS))).astype(np.uint64)
        is_fault = (kind == FAULT) | (kind == KFAULT)
        edges = np.flatnonzero((is_fault[1:] != is_fault[:-1]) | (self.pid[1:] != self.pid[:-1])) + 1
        cut = np.union1d(np.union1d(edges, t.checkpoints["event"].astype(np.int64)), [0, n]).tolist()
        cps = t.checkpoints
        ci = 0
        ev0 = self.m.vmstat()
        pt0 = int(self.m.meminfo()["PageTables"])
        self.r.peak_pagetables_kb = pt0
        start = time.perf_counter()
        for s, e in zip(cut[:-1], cut[1:]):
            while ci < len(cps) and cps["event"][ci] <= s:
                self.checkpoint(cps[ci])
                ci += 1
            if is_fault[s]:
                self.faults(s, e)
                self.r.peak_pagetables_kb = max(self.r.peak_pagetables_kb, self._pagetables_kb())
                continue
            for i in range(s, e):
                x = ev[i]
                k = int(x["kind"])
                if k == SYSCALL:
                    self.syscall(i, x)
                elif k == FORK:
                    self.fork(x)
                elif k == EXEC:
                    self.execve(x)
                elif k == EXIT:
                    self.exit(x)
                if k != SYSCALL or x["nr"] in (SYSCALL_NR["mmap"], SYSCALL_NR["brk"]):
                    self.sample(i, x["ts"])
        while ci < len(cps):
            self.checkpoint(cps[ci])
            ci += 1
        self.r.emulated_seconds = time.perf_counter() - start
        self.r.events = n
        self.r.final_pagetables_kb = int(self.m.meminfo()["PageTables"])
        self.r.peak_pagetables_kb = max(self.r.peak_pagetables_kb, self.r.final_pagetables_kb)
        w = {k: int(v) for k, v in dict(self.m.vmstat() - ev0).items()}
        self.r.vmstat = w
        self.r.cow_faults = w.get("cow_fault", 0)
        self.r.tables_shared = w.get("cow_pte_tables_shared", 0)
        self.r.tables_broken = w.get("cow_pte_tables_duplicated", 0) + w.get("cow_pte_tables_reused", 0)
        self.r.tables_copied = w.get("fork_pte_tables_copied", 0)
        self.r.bytes_copied = 4096 * w.get("cow_fault", 0) + 8 * (
            w.get("fork_ptes_copied", 0) + w.get("cow_pte_entries_copied", 0))
        self._differences()
        if self.check:
            self.m.check()
        return self.r

    def _differences(self):
        r, meta = self.r, self.t.meta
        d = r.differences
        if r.lost_events:
            d.append(f"the recording lost {r.lost_events} events (trace buffer full): every "
                     f"count after the first loss is a lower bound")
        if meta.get("thp") == "always":
            d.append("THP enabled=always: the kernel may map 2 MiB pages mmemu maps as 4 KiB ones")
        if r.execs:
            d.append(f"{r.execs} exec(s): the kernel maps a new image without system calls; "
                     f"faults in it are outside every emulated VMA")
        for why, n in r.refused_fault_count.items():
            d.append(f"{n} fault(s) not replayed: {why}")
        for why, n in r.not_replayed.items():
            d.append(f"{n} event(s): {why}")


def replay(trace: Trace, designs=("classic", "deferred", "eager"), check: bool = False) -> Dict[str, DesignResult]:
    """Replay trace once per design (a fresh machine each); {design: DesignResult}."""
    known = _designs()
    bad = [d for d in designs if d not in known]
    if bad or not designs:
        raise ValueError(f"unknown design(s) {bad}; choose from {', '.join(known)}")
    return {d: replay_one(trace, d, check) for d in designs}


def replay_one(trace: Trace, design: str, check: bool = False) -> DesignResult:
    """Replay trace under one design in a fresh machine (check: Machine.check() after)."""
    return _Replayer(trace, design, check).run()


def fidelity(result: DesignResult, fields=("VmPTE", "RssAnon")) -> List[dict]:
    """Per checkpoint: the emulated minus the kernel's value of each field (None where the
    replay has no such process)."""
    out = []
    for c in result.checkpoints:
        em = c["emulated"]
        out.append({"pid": c["pid"], "event": c["event"],
                    **{f: None if em is None else em[f] - c["kernel"][f] for f in fields}})
    return out
