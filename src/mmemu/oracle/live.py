"""Driving live helper processes (mmemu/oracle/helper.py) from Python, and catching a real
fork at the instant it returns (ptrace PTRACE_O_TRACEFORK) so both sides of it can be read
before either runs an instruction.
"""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helper.py")

PTRACE_CONT, PTRACE_DETACH = 7, 17
PTRACE_GETEVENTMSG, PTRACE_SEIZE = 0x4201, 0x4206
PTRACE_O_TRACEFORK, PTRACE_EVENT_FORK = 0x2, 1
WALL = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.restype = ctypes.c_long
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]


def linux_proc_available() -> str:
    """'' if live tests can run here, else why not."""
    if not sys.platform.startswith("linux"):
        return "needs Linux (/proc and the live kernel)"
    if not os.path.exists("/proc/self/pagemap"):
        return "this kernel has no /proc/PID/pagemap"
    return ""


def pfns_available() -> str:
    """'' if this process can read PFNs from pagemap (CAP_SYS_ADMIN), else why not."""
    from ..procfs import zero_pfn
    return "" if zero_pfn() else "pagemap PFNs are hidden (needs root / CAP_SYS_ADMIN)"


class HelperError(RuntimeError):
    pass


class LiveHelper:
    """A helper process; ``call(op, **args)`` returns its reply dict."""

    def __init__(self, proc=None, rd=None, wr=None, pid=None):
        if proc is None and rd is None:
            # glibc malloc on the brk heap, never trimmed: the helper's own page tables
            # stay put while it serves commands
            env = dict(os.environ, PYTHONMALLOC="malloc", MALLOC_TRIM_THRESHOLD_="1073741824",
                       MALLOC_MMAP_THRESHOLD_="1073741824")
            proc = subprocess.Popen([sys.executable, HELPER], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
        self.proc = proc
        self.rd = rd if rd is not None else proc.stdout
        self.wr = wr if wr is not None else proc.stdin
        self.pid = pid if pid is not None else self.call("ping")["ret"]
        self.alive = True

    def send(self, op, **args):
        args["op"] = op
        self.wr.write(json.dumps(args) + "\n")
        self.wr.flush()

    def recv(self):
        line = self.rd.readline()
        if not line:
            raise HelperError(f"helper {self.pid} went away")
        return json.loads(line)

    def call(self, op, **args):
        self.send(op, **args)
        return self.recv()

    def fork_helper(self) -> "LiveHelper":
        """A real fork whose child serves commands too (over two FIFOs)."""
        d = tempfile.mkdtemp(prefix="mmemu-oracle-")
        fin, fout = os.path.join(d, "in"), os.path.join(d, "out")
        os.mkfifo(fin)
        os.mkfifo(fout)
        self.send("fork", fifos=[fin, fout])
        wr = open(fin, "w")
        rd = open(fout, "r")
        r = self.recv()
        os.unlink(fin)
        os.unlink(fout)
        os.rmdir(d)
        child = LiveHelper(rd=rd, wr=wr, pid=r["ret"])
        child.parent = self
        return child

    def fork_traced(self, at_stop):
        """Fork the helper with ptrace watching: at_stop(parent_pid, child_pid) runs while
        both are stopped right after the kernel's dup_mmap; then the child exits."""
        pid = self.pid
        if _libc.ptrace(PTRACE_SEIZE, pid, None, ctypes.c_void_p(PTRACE_O_TRACEFORK)) != 0:
            raise OSError(ctypes.get_errno(), "PTRACE_SEIZE failed")
        result = None
        try:
            self.send("fork")
            while True:
                _, st = os.waitpid(pid, WALL)
                if os.WIFSTOPPED(st) and (st >> 8) == (5 | (PTRACE_EVENT_FORK << 8)):
                    break
                if not os.WIFSTOPPED(st):
                    raise HelperError("helper died before forking")
                _libc.ptrace(PTRACE_CONT, pid, None, None)
            msg = ctypes.c_ulong()
            _libc.ptrace(PTRACE_GETEVENTMSG, pid, None, ctypes.byref(msg))
            child = msg.value
            os.waitpid(child, WALL)            # the child's first stop
            try:
                result = at_stop(pid, child)
            finally:
                _libc.ptrace(PTRACE_DETACH, child, None, None)
        finally:
            _libc.ptrace(PTRACE_DETACH, pid, None, None)
        self.recv()     # the helper's reply once its child exited
        return result

    def close(self):
        if not self.alive:
            return
        self.alive = False
        try:
            self.send("exit")
            self.recv()
        except (HelperError, OSError, ValueError):
            pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        else:
            for f in (self.rd, self.wr):
                try:
                    f.close()
                except OSError:
                    pass
