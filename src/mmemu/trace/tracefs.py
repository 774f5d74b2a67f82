"""A private tracefs instance (instances/mmemu-<pid>): the recorder's events, pid filter and
buffer live there, so the global trace state is never touched and several recordings can
run at once. ``Instance.remove`` (also on errors and Ctrl-C) disables what it enabled and
removes the instance, which gives back its buffers."""
from __future__ import annotations

import errno
import os
import time

TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
TASK_SIZE = 0x800000000000

# (event, filter): the recorder's events
EVENTS = [("exceptions/page_fault_user", None),
          ("exceptions/page_fault_kernel", f"address < {TASK_SIZE:#x}"),
          ("task/task_newtask", None),
          ("sched/sched_process_exec", None),
          ("sched/sched_process_exit", None)]
SYSCALL_NAMES = ["mmap", "munmap", "mprotect", "pkey_mprotect", "mremap", "brk", "madvise",
                 "mlock", "mlock2", "munlock", "mlockall", "munlockall", "shmat", "shmdt",
                 "memfd_create", "openat", "close", "clone", "clone3", "fork", "vfork",
                 "execve", "exit", "exit_group"]


class TracefsUnavailable(OSError):
    """tracefs cannot be used: not mounted, or no permission (what is missing is said)."""


def tracefs_root() -> str:
    for d in TRACEFS:
        if os.path.isdir(d) and not os.access(d, os.R_OK | os.X_OK):
            raise TracefsUnavailable(errno.EACCES, f"no permission to use tracefs at {d} (run "
                                     f"as root, or with CAP_PERFMON and access to {d})")
        if os.path.isdir(os.path.join(d, "instances")):
            return d
    raise TracefsUnavailable(errno.ENOENT, "tracefs is not mounted (mount -t tracefs nodev "
                             "/sys/kernel/tracing)")


class Instance:
    """A tracefs instance named mmemu-<our pid>[-n], created on construction."""

    def __init__(self, buffer_kb: int = 32768):
        root = tracefs_root()
        base = os.path.join(root, "instances", f"mmemu-{os.getpid()}")
        self.path, n = base, 0
        while True:
            try:
                os.mkdir(self.path)
                break
            except FileExistsError:
                n += 1
                self.path = f"{base}-{n}"
            except PermissionError:
                raise TracefsUnavailable(errno.EACCES, f"no permission to create a tracefs "
                                         f"instance in {root}/instances (run as root or with "
                                         f"CAP_PERFMON and write access to tracefs)") from None
        self.enabled = []
        try:
            self.write("tracing_on", "0")
            self.write("trace_clock", "mono")
            self.write("options/irq-info", "0")
            self.write("buffer_size_kb", str(int(buffer_kb)))
            self.syscalls = [s for s in SYSCALL_NAMES
                             if os.path.isdir(self._p(f"events/syscalls/sys_enter_{s}"))]
        except BaseException:
            self.remove()
            raise

    def file(self, name: str) -> str:
        """The path of one of the instance's files."""
        return self._p(name)

    def _p(self, name: str) -> str:
        return os.path.join(self.path, name)

    def write(self, name: str, value: str) -> None:
        with open(self._p(name), "w") as f:
            f.write(value)

    def read(self, name: str) -> str:
        with open(self._p(name)) as f:
            return f.read()

    def arm(self, pids) -> None:
        """Follow pids and their descendants; enable every event; start tracing."""
        self.write("set_event_pid", " ".join(str(p) for p in pids))
        self.write("options/event-fork", "1")
        events = list(EVENTS)
        for s in self.syscalls:
            events += [(f"syscalls/sys_enter_{s}", None), (f"syscalls/sys_exit_{s}", None)]
        for ev, flt in events:
            if not os.path.isdir(self._p("events/" + ev)):
                continue
            if flt:
                self.write(f"events/{ev}/filter", flt)
            self.write(f"events/{ev}/enable", "1")
            self.enabled.append(ev)
        self.write("tracing_on", "1")

    def subbuf_size(self) -> int:
        """Bytes of one ring-buffer page (buffer_subbuf_size_kb, 4096 before Linux 6.8)."""
        try:
            return int(self.read("buffer_subbuf_size_kb").split()[0]) * 1024
        except (OSError, ValueError, IndexError):
            return 4096

    def formats(self) -> dict:
        """The enabled events' formats (mmemu.trace.parse.event_formats)."""
        from .parse import event_formats
        return event_formats(self._p("events"), self.enabled)

    def stop(self) -> None:
        try:
            self.write("tracing_on", "0")
        except OSError:
            pass

    def lost(self) -> dict:
        """Events lost per cpu (the stats files' overrun + dropped events)."""
        out = {}
        d = self._p("per_cpu")
        for cpu in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            try:
                text = open(os.path.join(d, cpu, "stats")).read()
            except OSError:
                continue
            n = 0
            for line in text.splitlines():
                k, _, v = line.partition(":")
                if k.strip() in ("overrun", "dropped events", "commit overrun"):
                    n += int(v.split()[0])
            out[cpu] = n
        return out

    def remove(self) -> None:
        """Disable our events and remove the instance (idempotent)."""
        if not self.path or not os.path.isdir(self.path):
            return
        self.stop()
        for ev in reversed(self.enabled):
            try:
                self.write(f"events/{ev}/enable", "0")
            except OSError:
                pass
        self.enabled = []
        for attempt in range(50):          # EBUSY while a reader still holds trace_pipe
            try:
                os.rmdir(self.path)
                return
            except OSError as e:
                if e.errno != errno.EBUSY or attempt == 49:
                    raise
                time.sleep(0.02)
