"""The recorder's binary trace (the instance's per-cpu trace_pipe_raw pages) to events.

A page (a ring-buffer sub-buffer) is a u64 timestamp, a commit word (its data length in
the low bits) and the events, each behind a 32-bit header: type_len (5 bits), time_delta
(27 bits). type_len 1..28 is a data record of type_len*4 bytes; 0, one whose length is
the next word; 29 padding; 30 a time extend (the next word << 27, plus time_delta); 31 an
absolute time stamp (kernel/trace/ring_buffer.c, libtraceevent's kbuffer). A record starts
with common_type (u16) and common_pid (i32); the rest are the fields its tracefs ``format``
file lists. Timestamps are the instance's clock (mono) in ns.

The records of all cpus are first put in time order (stable), since a task that migrates
has its enter on one cpu and its exit on another. A system call's enter and exit (same
task) then become one SYSCALL event at the exit's place, with the enter's arguments and
the exit's result; exit, exit_group and a successful execve have no exit of their own and
stand at their enter."""
from __future__ import annotations

import os
import re
import struct

import numpy as np

from .events import EVENT_DTYPE, EXEC, EXIT, FAULT, FORK, KFAULT, SYSCALL, SYSCALL_NR

_FIELD = re.compile(r"field:(.*?)\s+(\w+)(?:\[\d+\])?;\s*offset:(\d+);\s*size:(\d+);\s*signed:(\d);")
_NO_EXIT = {SYSCALL_NR["exit"], SYSCALL_NR["exit_group"], SYSCALL_NR["execve"]}
_COMMIT_MASK = (1 << 30) - 1        # the commit word's flags (missed events) are above
_U32 = struct.Struct("<I")
_HDR = struct.Struct("<QQ")


def event_formats(events_dir: str, names) -> dict:
    """{type id: (event name, {field: (offset, size, signed)})} of the events (as
    "system/event") from their tracefs format files."""
    out = {}
    for name in names:
        with open(os.path.join(events_dir, name, "format")) as f:
            text = f.read()
        tid = int(re.search(r"^ID:\s*(\d+)", text, re.M).group(1))
        out[tid] = (name.split("/")[1], {m.group(2): (int(m.group(3)), int(m.group(4)), m.group(5) == "1")
                                         for m in _FIELD.finditer(text)})
    return out


def _records(page: bytes):
    """(timestamp, record bytes) of the data records of one page."""
    ts, commit = _HDR.unpack_from(page, 0)
    end = 16 + min(commit & _COMMIT_MASK, len(page) - 16)
    pos = 16
    while pos + 4 <= end:
        word = _U32.unpack_from(page, pos)[0]
        type_len, delta = word & 31, word >> 5
        pos += 4
        if type_len == 29:                              # padding
            if delta == 0:
                return                                  # the rest of the page
            pos += _U32.unpack_from(page, pos)[0]
            continue
        if type_len == 30:                              # time extend
            ts += (_U32.unpack_from(page, pos)[0] << 27) + delta
            pos += 4
            continue
        if type_len == 31:                              # absolute time stamp
            ts = (_U32.unpack_from(page, pos)[0] << 27) + delta
            pos += 4
            continue
        ts += delta
        if type_len == 0:
            length = _U32.unpack_from(page, pos)[0] - 4
            pos += 4
        else:
            length = type_len * 4
        yield ts, page[pos:pos + length]
        pos += (length + 3) & ~3


def _field(rec: bytes, f) -> int:
    off, size, signed = f
    return int.from_bytes(rec[off:off + size], "little", signed=signed)


def parse(pages, formats: dict) -> tuple:
    """(events array, statistics dict) from an iterable of pages and the event formats."""
    rows = []
    pending = {}                # tid -> (nr, args)
    stats = {"records": 0, "unknown": 0, "unmatched_exit": 0}
    names = {tid: name for tid, (name, _) in formats.items()}
    fields = {tid: f for tid, (_, f) in formats.items()}
    # A task that migrates has its enter on one cpu's pages and its exit on another's, and
    # the spool holds the cpus' pages in the order they were copied: the records are put in
    # time order (stable: one cpu's own order is kept) before an exit meets its enter.
    recs = [(ts, rec) for page in pages for ts, rec in _records(page) if len(rec) >= 8]
    recs.sort(key=lambda r: r[0])
    for ts, rec in recs:
        stats["records"] += 1
        typ = rec[0] | rec[1] << 8
        name = names.get(typ)
        if name is None:
            stats["unknown"] += 1
            continue
        f = fields[typ]
        tid = int.from_bytes(rec[4:8], "little", signed=True)
        if name.startswith("sys_enter_"):
            nr = SYSCALL_NR.get(name[10:])
            args = [_field(rec, (f[a][0], f[a][1], False)) for a in list(f)[5:11]]
            args += [0] * (6 - len(args))
            if nr in _NO_EXIT:
                rows.append((ts, tid, SYSCALL, nr, *args, 0))
            if nr != SYSCALL_NR["exit"] and nr != SYSCALL_NR["exit_group"]:
                pending[tid] = (nr, args)
        elif name.startswith("sys_exit_"):
            nr = SYSCALL_NR.get(name[9:])
            p = pending.pop(tid, None)
            if nr == SYSCALL_NR["execve"]:
                continue
            if p is None or p[0] != nr:
                stats["unmatched_exit"] += 1
                continue
            rows.append((ts, tid, SYSCALL, nr, *p[1], _field(rec, (f["ret"][0], 8, True))))
        elif name in ("page_fault_user", "page_fault_kernel"):
            rows.append((ts, tid, FAULT if name == "page_fault_user" else KFAULT, 0,
                         _field(rec, f["address"]), _field(rec, f["error_code"]),
                         _field(rec, f["ip"]), 0, 0, 0, 0))
        elif name == "task_newtask":
            rows.append((ts, tid, FORK, 0, _field(rec, f["pid"]), _field(rec, f["clone_flags"]),
                         0, 0, 0, 0, 0))
        elif name == "sched_process_exec":
            rows.append((ts, _field(rec, f["pid"]), EXEC, 0, _field(rec, f["old_pid"]),
                         0, 0, 0, 0, 0, 0))
        elif name == "sched_process_exit":
            dead = _field(rec, f["group_dead"]) if "group_dead" in f else 1
            rows.append((ts, _field(rec, f["pid"]), EXIT, 0, dead, 0, 0, 0, 0, 0, 0))
    ev = np.array(rows, dtype=[(n, "<i8" if n in ("ret",) else EVENT_DTYPE.fields[n][0].str)
                               for n in EVENT_DTYPE.names]) if rows else np.zeros(0, EVENT_DTYPE)
    ev = ev.astype(EVENT_DTYPE)
    return ev, stats            # in time order: each row is made at its record's place
