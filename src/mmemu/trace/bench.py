"""The record/replay scenarios of ``mmemu bench``: a replay of a synthetic fork-then-write
trace (events/s), the same work issued directly through the API (the replay's baseline),
and the recording overhead on the synthetic C program (same-run ratios)."""
from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time

from ..flags import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PROT_READ, PROT_WRITE
from ..machine import Machine
from .replay import replay_one
from .synthetic import BASE, build_program, fork_write_trace


def measure(op: str, size: int, design: str, rounds: int) -> dict:
    """One job of the bench plan's "trace" kind: op "replay", "direct" or "record"."""
    if op == "record":
        return record_overhead(size, rounds)
    return (Replay if op == "replay" else ReplayDirect)(size, design).measure(rounds)


class Replay:
    """replay_one of fork_write_trace(size) under a design: the replay loop's own time (the
    machine is built outside it); ``pages`` counts the trace's events."""
    unit = "event"

    def __init__(self, size: int, design: str = "classic"):
        self.size, self.design = size, design
        self.trace = fork_write_trace(size)

    def measure(self, rounds: int = 5) -> dict:
        times, work = [], None
        for _ in range(rounds):
            r = replay_one(self.trace, self.design)
            times.append(r.emulated_seconds)
            work = work or {k: v for k, v in r.vmstat.items() if v and not k.startswith("nr_")}
        return {"times": times, "pages": len(self.trace.events), "unit": self.unit,
                "work": work, "must_hold": 0}


class ReplayDirect(Replay):
    """What the trace does, through the API: mmap, touch every page, fork, the child
    touches the first half and exits, the parent touches the second half and exits."""

    def measure(self, rounds: int = 5) -> dict:
        size, cow = self.size, self.design in ("deferred", "eager")
        times = []
        for _ in range(rounds):
            m = Machine(self.trace.meta["snapshot_memory"],
                        cow_pte_accounting="eager" if self.design == "eager" else "deferred")
            p = m.spawn()
            t0 = time.perf_counter()
            p.mmap(BASE, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
            p.touch(BASE, size)
            c = p.fork(cow_pgtable=cow)
            c.touch(BASE, size // 2)
            c.exit()
            p.touch(BASE + size // 2, size // 2)
            p.exit()
            times.append(time.perf_counter() - t0)
        return {"times": times, "pages": len(self.trace.events), "unit": self.unit,
                "work": {}, "must_hold": 0}


def record_overhead(size: int, rounds: int = 3) -> dict:
    """The synthetic C program (``size`` bytes written, forked, COW-written; 4 rounds) timed
    by itself, plain and under ``mmemu record``: {"times": recorded, "plain": plain} in
    seconds. runner.kernel_skip where gcc or tracefs is missing."""
    from ..bench.runner import kernel_skip
    from .record import record
    from .tracefs import Instance, TracefsUnavailable
    try:
        Instance(64).remove()
    except OSError as e:
        raise kernel_skip(f"tracefs not usable: {getattr(e, 'strerror', None) or e}")
    with tempfile.TemporaryDirectory(prefix="mmemu-bench-record-") as d:
        try:
            exe = build_program(d)
        except (OSError, subprocess.CalledProcessError) as e:
            raise kernel_skip(f"cannot build the synthetic program: {e}")
        stamp = os.path.join(d, "ns")
        args = [exe, str(size >> 20), "loop", "4"]
        plain, recorded, events, lost = [], [], 0, 0
        old = os.environ.get("MMEMU_SYNTH_TIME")
        os.environ["MMEMU_SYNTH_TIME"] = stamp
        try:
            for _ in range(rounds):
                subprocess.run(args, check=True)
                plain.append(int(open(stamp).read()) / 1e9)
                s = record(os.path.join(d, "t.mmt"), command=args, snapshot=False)
                recorded.append(int(open(stamp).read()) / 1e9)
                events, lost = s["events"], max(lost, s["lost"])
        finally:
            if old is None:
                os.environ.pop("MMEMU_SYNTH_TIME", None)
            else:
                os.environ["MMEMU_SYNTH_TIME"] = old
    return {"times": recorded, "plain": plain, "plain_s": statistics.median(plain),
            "pages": size >> 12, "events": events, "lost": lost}
