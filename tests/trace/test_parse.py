"""The ring-buffer decoder (mmemu.trace.parse) on hand-built per-cpu pages: a task that
migrates between its system call's enter and exit gets that call's own arguments, whatever
order the cpus' pages were copied in (the bug behind the fork-round recordings whose
replays refused a child's faults: an exit met a stale enter on another cpu's page)."""
import struct

import numpy as np

from mmemu.trace.events import SYSCALL, SYSCALL_NR
from mmemu.trace.parse import parse

COMMON = {"common_type": (0, 2, False), "common_flags": (2, 1, False),
          "common_preempt_count": (3, 1, False), "common_pid": (4, 4, True)}
ENTER, EXIT = 101, 102
FORMATS = {
    ENTER: ("sys_enter_munmap", {**COMMON, "__syscall_nr": (8, 4, True),
                                 "addr": (16, 8, False), "len": (24, 8, False)}),
    EXIT: ("sys_exit_munmap", {**COMMON, "__syscall_nr": (8, 4, True), "ret": (16, 8, True)}),
}


def _enter(pid, addr, length):
    return struct.pack("<HBBiiiQQ", ENTER, 0, 0, pid, 11, 0, addr, length)


def _exit(pid, ret):
    return struct.pack("<HBBiiiq", EXIT, 0, 0, pid, 11, 0, ret)


def _page(base, records):
    """A sub-buffer: its time stamp, commit length, then each record behind a header of
    type_len (length / 4) and the delta from the previous record's time."""
    body, t = b"", base
    for ts, rec in records:
        assert len(rec) % 4 == 0 and len(rec) <= 112
        body += struct.pack("<I", (len(rec) // 4) | (ts - t) << 5) + rec
        t = ts
    return struct.pack("<QQ", base, len(body)) + body


def test_an_exit_on_another_cpu_meets_its_own_enter():
    # munmap A: enter on cpu 0 at 100, exit on cpu 1 at 110; munmap B: enter on cpu 1 at
    # 200, exit on cpu 0 at 210. cpu 0's page is copied first.
    cpu0 = _page(0, [(100, _enter(7, 0xA000, 0x1000)), (210, _exit(7, -22))])
    cpu1 = _page(0, [(110, _exit(7, 0)), (200, _enter(7, 0xB000, 0x2000))])
    for pages in ([cpu0, cpu1], [cpu1, cpu0]):
        ev, stats = parse(pages, FORMATS)
        assert stats == {"records": 4, "unknown": 0, "unmatched_exit": 0}
        assert ev["kind"].tolist() == [SYSCALL, SYSCALL]
        assert ev["nr"].tolist() == [SYSCALL_NR["munmap"]] * 2
        assert ev["ts"].tolist() == [110, 210]
        assert ev["a0"].tolist() == [0xA000, 0xB000]
        assert ev["a1"].tolist() == [0x1000, 0x2000]
        assert ev["ret"].tolist() == [0, -22]
        assert np.all(ev["pid"] == 7)


def test_time_extend_and_an_exit_without_enter():
    # a time extend (type_len 30) moves the clock by (word << 27) + delta; an exit whose
    # enter was before the recording began is counted, not invented
    ext = struct.pack("<II", 30 | 5 << 5, 1)
    page = struct.pack("<QQ", 1000, 4 + len(_exit(3, 0)) + len(ext) + 4 + 32)
    page += struct.pack("<I", 6 | 1 << 5) + _exit(3, 0)
    page += ext
    page += struct.pack("<I", 8 | 2 << 5) + _enter(3, 0xC000, 0x1000)
    ev, stats = parse([page], FORMATS)
    assert stats == {"records": 2, "unknown": 0, "unmatched_exit": 1}
    assert len(ev) == 0
    page2 = page[:16 + 4 + 24] + ext + struct.pack("<I", 6 | 2 << 5) + _exit(3, 0)
    page2 = struct.pack("<QQ", 1000, len(page2) - 16) + page2[16:]
    ev, stats = parse([page, page2], FORMATS)
    # page: exit at 1001, enter at 1001 + (1 << 27) + 5 + 2; page2: exit at 1001, then the
    # matching exit at 1001 + (1 << 27) + 5 + 2
    assert stats["unmatched_exit"] == 2
    assert ev["ts"].tolist() == [1001 + (1 << 27) + 7]
    assert ev["a0"].tolist() == [0xC000]
