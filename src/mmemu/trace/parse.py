"""tracefs text (trace_pipe of the recorder's instance) to trace events.

Lines look like ``comm-TID [CPU] SECONDS.MICROS: EVENT: BODY`` (irq-info off, trace clock
mono). A system call's enter and exit (same task) become one SYSCALL event at the exit's
place, with the enter's arguments and the exit's result; exit, exit_group and a successful
execve have no exit of their own and stand at their enter. Events are sorted by time
(stable: per-cpu buffers are merged by the reader, not always in order)."""
from __future__ import annotations

import re

import numpy as np

from .events import EVENT_DTYPE, EXEC, EXIT, FAULT, FORK, KFAULT, SYSCALL, SYSCALL_NR

_LINE = re.compile(rb"^\s*.*?-(\d+)\s+\[\d+\]\s+(?:\S+\s+)?(\d+)\.(\d+): ([\w]+)(: |\(| -> )(.*)$",
                   re.M)
_KV = re.compile(rb"(\w+)[=:] ?(\S+?)(?:,|\s|\)|$)")
_NO_EXIT = {SYSCALL_NR["exit"], SYSCALL_NR["exit_group"], SYSCALL_NR["execve"]}


def _hex(v: bytes) -> int:
    return int(v, 16)


def _hex_or_0(v: bytes) -> int:
    """An address printed with %ps: hex, or a kernel symbol (0)."""
    try:
        return int(v.split(b"+")[0], 16)
    except ValueError:
        return 0


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def parse(chunks) -> tuple:
    """(events array, statistics dict) from an iterable of text chunks (bytes)."""
    rows = []
    pending = {}                # tid -> (ts, nr, args)
    stats = {"lines": 0, "unparsed": 0, "unmatched_exit": 0}
    tail = b""
    for chunk in chunks:
        buf = tail + chunk
        cut = buf.rfind(b"\n") + 1
        tail, buf = buf[cut:], buf[:cut]
        for m in _LINE.finditer(buf):
            stats["lines"] += 1
            tid = int(m.group(1))
            ts = int(m.group(2)) * 1_000_000_000 + int(m.group(3).ljust(9, b"0")[:9])
            name, sep, body = m.group(4), m.group(5), m.group(6)
            if sep == b"(":                 # sys_NAME(args)
                nr = SYSCALL_NR.get(name[4:].decode())
                if nr is None:
                    continue
                args = [_hex(v) for _, v in _KV.findall(body)][:6]
                args += [0] * (6 - len(args))
                if nr in _NO_EXIT:
                    rows.append((ts, tid, SYSCALL, nr, *args, 0))
                    if nr == SYSCALL_NR["execve"]:
                        pending[tid] = (ts, nr, args)
                else:
                    pending[tid] = (ts, nr, args)
                continue
            if sep == b" -> ":              # sys_NAME -> ret
                nr = SYSCALL_NR.get(name[4:].decode())
                p = pending.pop(tid, None)
                if nr is None or nr == SYSCALL_NR["execve"]:
                    continue
                if p is None or p[1] != nr:
                    stats["unmatched_exit"] += 1
                    continue
                rows.append((ts, tid, SYSCALL, nr, *p[2], _signed(_hex(body.strip()))))
                continue
            kv = dict(_KV.findall(body))
            if name == b"page_fault_user" or name == b"page_fault_kernel":
                rows.append((ts, tid, FAULT if name == b"page_fault_user" else KFAULT, 0,
                             _hex_or_0(kv[b"address"]), _hex(kv[b"error_code"]), _hex_or_0(kv[b"ip"]),
                             0, 0, 0, 0))
            elif name == b"task_newtask":
                rows.append((ts, tid, FORK, 0, int(kv[b"pid"]), _hex(kv[b"clone_flags"]),
                             0, 0, 0, 0, 0))
            elif name == b"sched_process_exec":
                rows.append((ts, int(kv[b"pid"]), EXEC, 0, int(kv[b"old_pid"]), 0, 0, 0, 0, 0, 0))
            elif name == b"sched_process_exit":
                rows.append((ts, int(kv[b"pid"]), EXIT, 0, int(kv.get(b"group_dead", b"true") == b"true"),
                             0, 0, 0, 0, 0, 0))
            else:
                stats["unparsed"] += 1
    ev = np.array(rows, dtype=[(n, EVENT_DTYPE.fields[n][0].str) for n in EVENT_DTYPE.names]) \
        if rows else np.zeros(0, EVENT_DTYPE)
    ev = ev.astype(EVENT_DTYPE)
    order = np.argsort(ev["ts"], kind="stable")
    return ev[order], stats
