"""Traces made without a kernel: what a fork-then-write program would record. The bench
(replay events/s, replay against the same work through the API) and the tests that need
no tracefs use them."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ..flags import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from .events import EVENT_DTYPE, EXIT, FAULT, FORK, PF_USER, PF_WRITE, PF_PROT, SYSCALL, SYSCALL_NR
from .trace import Trace

BASE = 0x7F0000000000
PARENT, CHILD = 100, 101


def fork_write_trace(size: int, child_share: float = 0.5) -> Trace:
    """Process 100 maps ``size`` bytes of private anonymous memory at BASE, writes every
    page, forks process 101, which writes the first ``child_share`` of them (COW faults)
    and exits; then the parent writes the rest again (its COW faults) and exits."""
    pages = size >> 12
    k = int(pages * child_share)
    n = 2 + pages + 1 + k + 1 + (pages - k) + 1
    ev = np.zeros(n, EVENT_DTYPE)
    ev["ts"] = np.arange(n, dtype=np.uint64) * 1000 + 1_000_000
    ev["pid"] = PARENT
    ev[0]["kind"], ev[0]["nr"] = SYSCALL, SYSCALL_NR["mmap"]
    ev[0]["a1"], ev[0]["a2"] = size, PROT_READ | PROT_WRITE
    ev[0]["a3"], ev[0]["a4"], ev[0]["ret"] = MAP_PRIVATE | MAP_ANONYMOUS, 0xFFFFFFFF, BASE
    ev[1]["kind"], ev[1]["nr"], ev[1]["a0"], ev[1]["ret"] = SYSCALL, SYSCALL_NR["munmap"], 1, -22
    i = 2

    def faults(pid, first, count, code):
        nonlocal i
        sl = slice(i, i + count)
        ev["kind"][sl], ev["pid"][sl] = FAULT, pid
        ev["a0"][sl] = BASE + (np.arange(first, first + count, dtype=np.uint64) << 12)
        ev["a1"][sl] = code
        i += count
    faults(PARENT, 0, pages, PF_USER | PF_WRITE)
    ev[i]["kind"], ev[i]["a0"], ev[i]["a1"] = FORK, CHILD, 0x11
    i += 1
    faults(CHILD, 0, k, PF_USER | PF_WRITE | PF_PROT)
    ev[i]["kind"], ev[i]["pid"], ev[i]["a0"] = EXIT, CHILD, 1
    i += 1
    faults(PARENT, k, pages - k, PF_USER | PF_WRITE | PF_PROT)
    ev[i]["kind"], ev[i]["a0"] = EXIT, 1
    meta = {"command": ["(synthetic fork-then-write)"], "root": PARENT, "pids": [PARENT, CHILD],
            "lost_events": 0, "files": [], "snapshot_memory": max(4 << 30, 4 * size)}
    return Trace(meta, ev)


PROGRAM = Path(__file__).parent / "data" / "synthetic.c"


def build_program(directory) -> str:
    """Compile data/synthetic.c (the deterministic C program the record/replay tests and the
    recording bench run) into directory/mmemu-synth; its path. OSError without gcc,
    subprocess.CalledProcessError if it does not compile."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise FileNotFoundError("no C compiler (gcc or cc) to build the synthetic program")
    exe = os.path.join(os.fspath(directory), "mmemu-synth")
    subprocess.run([cc, "-O1", "-o", exe, str(PROGRAM)], check=True, capture_output=True)
    return exe
