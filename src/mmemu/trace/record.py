"""``mmemu record``: follow a process tree with a private tracefs instance and write a trace.

``record(output, command=[...])`` starts the command under PTRACE_TRACEME, so it stops at
its execve; the recorder imports the new image (mmemu.procfs.import_process: the starting
snapshot), arms the instance for its pid (set_event_pid + event-fork follow descendants)
and lets it run. ``record(output, pid=P)`` attaches: the tree of P (P and its descendants
now) is imported with each process stopped while it is read, then followed.

A reader thread copies the instance's per-cpu trace_pipe_raw pages to a spool file (no
decoding while the program runs: mmemu.trace.parse decodes them at the end); the main
thread follows the tree in /proc and takes checkpoints -- every traced
process SIGSTOPped, then /proc/PID/status, stat (minflt), smaps_rollup and maps read, then
SIGCONT -- at the start, after forks and exits, every ``interval`` seconds and at the end.
A checkpoint's time (CLOCK_MONOTONIC, the instance's trace clock) is taken once all are
stopped, so it sits exactly between the events before and after it. Lost events (the
per-cpu stats' overrun) are counted in the trace and reported.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import re
import signal
import struct
import sys
import tempfile
import threading
import time

import numpy as np

from ..flags import CLONE_THREAD, CLONE_VM
from ..oracle.live import PTRACE_DETACH
from .events import FORK, CHECKPOINT_DTYPE, MAP_DTYPE, ROLLUP_FIELDS, STATUS_FIELDS
from .parse import parse
from .trace import Trace
from .tracefs import Instance

PTRACE_TRACEME = 0


class RecordError(RuntimeError):
    """The recording could not be made (the command did not start, ...)."""


def _libc():
    return ctypes.CDLL(None, use_errno=True)


class _Reader(threading.Thread):
    """Copies the instance's per-cpu trace_pipe_raw pages to the spool file, each behind
    its length (no decoding while the program runs)."""

    def __init__(self, inst: Instance, spool):
        super().__init__(daemon=True)
        self.page = inst.subbuf_size()
        self.fds = [os.open(inst.file(f"per_cpu/{c}/trace_pipe_raw"), os.O_RDONLY | os.O_NONBLOCK)
                    for c in sorted(os.listdir(inst.file("per_cpu")))]
        self.spool = spool
        self.stopping = threading.Event()
        self.bytes = 0
        self.error = None

    def run(self):
        try:
            while True:
                got = 0
                for fd in self.fds:
                    while True:
                        try:
                            b = os.read(fd, self.page)
                        except BlockingIOError:
                            break
                        if not b:
                            break
                        self.spool.write(struct.pack("<I", len(b)) + b)
                        got += len(b)
                self.bytes += got
                if not got:
                    if self.stopping.is_set():
                        return
                    time.sleep(0.005)
        except BaseException as e:      # reported by the main thread
            self.error = e
        finally:
            for fd in self.fds:
                os.close(fd)


def _pages(spool):
    """The pages the reader spooled, in order."""
    spool.seek(0)
    while True:
        n = spool.read(4)
        if len(n) < 4:
            return
        yield spool.read(struct.unpack("<I", n)[0])


class _Tree:
    """The traced processes alive now, from /proc: the roots and, once seen, their child
    processes (threads are not processes), until they are gone or zombies."""

    def __init__(self, roots):
        self.alive = set(roots)

    def refresh(self) -> bool:
        """Look again; whether a process came or went."""
        before = set(self.alive)
        for p in list(self.alive):
            for t in _listdir(f"/proc/{p}/task"):
                kids = _read(f"/proc/{p}/task/{t}/children") or ""
                self.alive.update(int(k) for k in kids.split())
        self.alive = {p for p in self.alive if _state(p) not in (None, "Z", "X")}
        return self.alive != before

    def pids(self):
        return sorted(self.alive)


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _state(pid):
    s = _read(f"/proc/{pid}/stat")
    return None if s is None else s[s.rindex(")") + 2]


class _Checkpoints:
    def __init__(self, stop: bool):
        self.stop = stop
        self.rows, self.maps = [], []
        self.files, self.file_ids = [], {}

    def take(self, pids):
        """Stop pids, read their state, continue them. Returns how many were sampled."""
        stopped = []
        try:
            if self.stop:
                for p in pids:
                    try:
                        os.kill(p, signal.SIGSTOP)
                        stopped.append(p)
                    except ProcessLookupError:
                        pass
                deadline = time.monotonic() + 1.0
                for p in stopped:
                    while _state(p) not in (None, "T", "t", "Z", "X") and time.monotonic() < deadline:
                        time.sleep(0.0002)
            ts = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            n = 0
            for p in pids:
                n += self._sample(p, ts)
            return n
        finally:
            for p in stopped:
                try:
                    os.kill(p, signal.SIGCONT)
                except ProcessLookupError:
                    pass

    def _sample(self, pid, ts) -> int:
        status, stat = _read(f"/proc/{pid}/status"), _read(f"/proc/{pid}/stat")
        rollup, maps = _read(f"/proc/{pid}/smaps_rollup"), _read(f"/proc/{pid}/maps")
        if not status or not stat or maps is None or "VmPTE" not in status:
            return 0            # exited (or a zombie: no mm)
        st = {}
        for line in status.splitlines() + (rollup or "").splitlines():
            k, _, v = line.partition(":")
            parts = v.split()
            if len(parts) == 2 and parts[1] == "kB":
                st.setdefault(k.strip(), int(parts[0]))
        minflt = int(stat[stat.rindex(")") + 2:].split()[7])
        idx = len(self.rows)
        self.rows.append((ts, pid, -1, minflt) + tuple(st.get(f, -1) for f in STATUS_FIELDS)
                         + tuple(st.get(f, -1) for f in ROLLUP_FIELDS))
        for line in maps.splitlines():
            parts = line.split(None, 5)
            if len(parts) < 6 or parts[4] == "0" or not parts[5].startswith("/"):
                continue
            s, e = (int(x, 16) for x in parts[0].split("-"))
            key = (parts[3], int(parts[4]), parts[5])
            fid = self.file_ids.get(key)
            if fid is None:
                try:
                    size = os.stat(f"/proc/{pid}/map_files/{parts[0]}").st_size
                except OSError:
                    size = -1
                fid = self.file_ids[key] = len(self.files)
                self.files.append({"path": parts[5], "dev": parts[3], "ino": int(parts[4]),
                                   "size": size})
            self.maps.append((idx, pid, s, e, int(parts[2], 16), fid))
        return 1

    def arrays(self, events):
        cp = np.array(self.rows, dtype=CHECKPOINT_DTYPE) if self.rows else np.zeros(0, CHECKPOINT_DTYPE)
        order = np.argsort(cp["ts"], kind="stable")
        cp = cp[order]
        cp["event"] = np.searchsorted(events["ts"], cp["ts"], side="right")
        mp = np.array(self.maps, dtype=MAP_DTYPE) if self.maps else np.zeros(0, MAP_DTYPE)
        if len(mp):
            rank = np.empty(len(order), np.int64)
            rank[order] = np.arange(len(order))
            mp["checkpoint"] = rank[mp["checkpoint"]]
            mp = mp[np.argsort(mp["checkpoint"], kind="stable")]
        return cp, mp


def _descendants(pid):
    """pid and its descendants now (from /proc/*/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for t in os.listdir(f"/proc/{p}/task") if os.path.isdir(f"/proc/{p}/task") else []:
            kids = _read(f"/proc/{p}/task/{t}/children") or ""
            todo += [int(k) for k in kids.split()]
    return out


def _snapshot(pids, memory):
    """Import pids into one machine; (snapshot bytes, {traced pid: emulated pid})."""
    from ..machine import Machine
    from ..procfs import ImportFailed, import_process, read_stat_fields
    m = Machine(memory)
    mapping = {}
    for p in pids:
        try:
            q = import_process(m, p)
        except ImportFailed as e:
            if e.errno == errno.ESRCH and p != pids[0]:
                continue            # a descendant that exited meanwhile
            raise RecordError(f"cannot import process {p}: {e.strerror or e}") from None
        mapping[p] = q.pid
        if not any(v.start <= q.mm.brk < v.end or v.end == q.mm.brk for v in q.mm.vmas):
            # no [heap] yet (stopped at its execve): the break is where the kernel put it
            q.mm.start_brk = q.mm.brk = read_stat_fields(p)["start_brk"] or q.mm.brk
    fd, tmp = tempfile.mkstemp(prefix=".mmemu-snap-")
    os.close(fd)
    try:
        m.save(tmp)
        with open(tmp, "rb") as f:
            return f.read(), mapping
    finally:
        os.unlink(tmp)


def _start_stopped(command):
    """fork + PTRACE_TRACEME + execvp: the child stops (SIGTRAP) right after its execve."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            _libc().ptrace(PTRACE_TRACEME, 0, None, None)
            os.set_inheritable(w, False)
            os.execvp(command[0], command)
        except BaseException as e:
            os.write(w, f"{type(e).__name__}: {e}".encode())
        finally:
            os._exit(127)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    err = os.read(r, 4096).decode(errors="replace")
    os.close(r)
    if err or not os.WIFSTOPPED(status):
        if os.WIFSTOPPED(status):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise RecordError(f"cannot start {command[0]!r}: {err or 'it did not stop at exec'}")
    return pid


def record(output, command=None, pid=None, duration=None, interval=0.5, buffer_kb=32768,
           memory="64G", stop_checkpoints=True, snapshot=True, log=None, min_gap=0.05) -> dict:
    """Record a command (started stopped) or a running process tree into the trace file
    ``output``. Returns a summary dict (events, lost, checkpoints, status, interrupted).
    TracefsUnavailable without tracefs; RecordError if the command cannot start. On any
    error or interrupt the tracefs instance is removed and stopped processes continued;
    an interrupted recording still writes the (partial, marked) trace. Checkpoints after
    forks and exits come at most every ``min_gap`` seconds (a fork server forks thousands
    of times a second)."""
    if (command is None) == (pid is None):
        raise ValueError("record needs a command or a pid, not both")
    log = log or (lambda msg: None)
    inst = Instance(buffer_kb)
    spool = tempfile.TemporaryFile(prefix="mmemu-record-")
    cps = _Checkpoints(stop_checkpoints)
    child, reader, interrupted, status = None, None, False, None
    roots, formats = [], {}
    meta = {"command": list(command or []), "kernel": platform.release(),
            "thp": _thp_mode(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "buffer_kb": buffer_kb, "interval": interval}
    t0 = time.monotonic()
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt) \
        if threading.current_thread() is threading.main_thread() else None
    try:
        if command is not None:
            child = _start_stopped(list(command))
            roots = [child]
        else:
            if not os.path.isdir(f"/proc/{pid}"):
                raise RecordError(f"no process {pid}")
            roots = []
            for p in _descendants(int(pid)):
                try:
                    os.kill(p, signal.SIGSTOP)
                    roots.append(p)
                except ProcessLookupError:
                    pass            # gone already
            if not roots:
                raise RecordError(f"no process {pid}")
        meta["root"] = roots[0]
        meta["threads"] = {str(t): p for p in roots for t in os.listdir(f"/proc/{p}/task")
                           if int(t) != p}
        tree = _Tree(roots)
        inst.arm(roots)
        formats = inst.formats()
        reader = _Reader(inst, spool)
        reader.start()
        try:
            if snapshot:
                meta["snapshot_memory"] = memory
                snap, meta["snapshot_pids"] = _snapshot(roots, memory)
                meta["snapshot_pids"] = {str(k): v for k, v in meta["snapshot_pids"].items()}
            else:
                snap = None
            cps.stop = False            # they are stopped already
            cps.take(roots)
            cps.stop = stop_checkpoints
        finally:
            if child is not None:
                _libc().ptrace(PTRACE_DETACH, child, None, None)
            else:
                for p in roots:
                    try:
                        os.kill(p, signal.SIGCONT)
                    except ProcessLookupError:
                        pass
        log(f"recording {' '.join(command) if command else 'pid %d' % roots[0]} "
            f"(tracefs instance {inst.path})")
        next_cp = time.monotonic() + interval
        last_cp, changed = 0.0, False
        while True:
            if reader.error:
                raise reader.error
            if child is not None:
                done, st = os.waitpid(child, os.WNOHANG)
                if done:
                    status = st
                    break
            if duration is not None and time.monotonic() - t0 >= duration:
                break
            time.sleep(0.01)
            changed = tree.refresh() or changed
            if child is None and not tree.pids():
                break
            if changed and time.monotonic() - last_cp >= min_gap:
                changed = False
                cps.take(tree.pids())
                last_cp = time.monotonic()
            if time.monotonic() >= next_cp:
                cps.take(tree.pids())
                last_cp = time.monotonic()
                next_cp = last_cp + interval
        last_cp = 0.0
        if child is not None and status is None:
            cps.take(tree.pids())
            os.kill(child, signal.SIGTERM)
            status = _reap(child)
        elif tree.pids():
            cps.take(tree.pids())
    except KeyboardInterrupt:
        interrupted = True
    finally:
        inst.stop()
        if reader is not None:
            reader.stopping.set()
            reader.join()
        lost = inst.lost()
        inst.remove()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        if child is not None and status is None and interrupted:
            status = _reap(child, wait=2.0)
    meta["elapsed"] = time.monotonic() - t0
    meta["lost_events"] = int(sum(lost.values()))
    meta["lost_per_cpu"] = lost
    meta["interrupted"] = interrupted
    if status is not None:
        meta["exit_status"] = os.waitstatus_to_exitcode(status)
    events, stats = parse(_pages(spool), formats)
    spool.close()
    meta["parse"] = stats
    cp, mp = cps.arrays(events)
    forks = events[events["kind"] == FORK]
    meta["pids"] = sorted(set(roots) | {int(e["a0"]) for e in forks
                                        if not int(e["a1"]) & (CLONE_VM | CLONE_THREAD)})
    meta["files"] = cps.files
    t = Trace(meta, events, cp, mp, snap if snapshot else None)
    t.save(output)
    return {"events": len(events), "lost": meta["lost_events"], "checkpoints": len(cp),
            "interrupted": interrupted, "exit_status": meta.get("exit_status"),
            "bytes": reader.bytes if reader else 0, "elapsed": meta["elapsed"]}


def _reap(pid, wait=5.0):
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            return st
        time.sleep(0.01)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return os.waitpid(pid, 0)[1]


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _thp_mode() -> str:
    s = _read("/sys/kernel/mm/transparent_hugepage/enabled") or ""
    m = re.search(r"\[(\w+)\]", s)
    return m.group(1) if m else "unknown"
