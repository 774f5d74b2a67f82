"""The record/replay scenarios of ``mmemu bench``: a replay of a synthetic fork-then-write
trace (events/s), the same work issued directly through the API (the replay's baseline),
the recording overhead on the synthetic C program, and Redis' throughput under recording
(same-run ratios)."""
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
    if op == "record_redis":
        return record_redis_overhead(rounds, size)
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


def _redis_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_throughput(port: int, requests: int) -> float:
    """redis-benchmark's SET and GET requests per second (pipelined 16 deep, 256-byte
    values over 100000 keys), summed over the two tests."""
    import re
    r = subprocess.run(["redis-benchmark", "-p", str(port), "-q", "-t", "set,get",
                        "-n", str(requests), "-P", "16", "-r", "100000", "-d", "256", "--csv"],
                       capture_output=True, text=True, timeout=300, check=True)
    rates = [float(x) for x in re.findall(r'"(?:SET|GET)","([\d.]+)"', r.stdout)]
    if len(rates) != 2:
        raise RuntimeError(f"redis-benchmark printed no rates: {r.stdout[-200:]!r}")
    return sum(rates)


def _redis_session(requests: int, recorded: bool, directory: str) -> tuple:
    """One redis-server (no persistence), plain or under ``mmemu record`` from its start,
    loaded by redis-benchmark: (its throughput in requests/s, the recording's summary)."""
    import threading
    from .record import record
    port = _redis_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no", "--dir", directory, "--daemonize", "no", "--io-threads", "1",
           "--loglevel", "warning"]
    summary, server = {}, None
    if recorded:
        th = threading.Thread(target=lambda: summary.update(
            record(os.path.join(directory, "r.mmt"), command=cmd, interval=0.5)))
        th.start()
    else:
        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                             text=True).stdout.strip() != "PONG":
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer within 30 s")
            time.sleep(0.05)
        rate = _redis_throughput(port, requests)
    finally:
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
        if recorded:
            th.join(60)
        else:
            server.wait(30)
    return rate, summary


def record_redis_overhead(rounds: int = 5, requests: int = 1000000) -> dict:
    """Redis' throughput under a steady redis-benchmark load (SET and GET), plain and with
    the server recorded by ``mmemu record``, alternating: {"times": seconds per request
    recorded, "plain": plain}. runner.kernel_skip without redis-server and
    redis-benchmark (``apt-get install redis-server``) or tracefs."""
    import shutil
    from ..bench.runner import kernel_skip
    from .tracefs import Instance
    missing = [c for c in ("redis-server", "redis-benchmark", "redis-cli") if not shutil.which(c)]
    if missing:
        raise kernel_skip(f"{', '.join(missing)} not installed (apt-get install redis-server)")
    try:
        Instance(64).remove()
    except OSError as e:
        raise kernel_skip(f"tracefs not usable: {getattr(e, 'strerror', None) or e}")
    plain, recorded, events, lost = [], [], 0, 0
    with tempfile.TemporaryDirectory(prefix="mmemu-bench-redis-") as d:
        for i in range(rounds):
            for rec in ((False, True) if i % 2 == 0 else (True, False)):
                rate, summary = _redis_session(requests, rec, d)
                (recorded if rec else plain).append(1.0 / rate)
                if rec:
                    events, lost = summary["events"], max(lost, summary["lost"])
    return {"times": recorded, "plain": plain, "plain_s": statistics.median(plain),
            "pages": 1, "unit": "request", "events": events, "lost": lost}
