"""Run the benchmark plan: every mmemu scenario in a fresh process (so its peak host RSS
is its own), the kernel helper beside it, numpy lower bounds and the reference model in
this process. Results are one dict per measurement, keyed by id ("fork.classic.1G")."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

from . import kernel, lower_bound, reference

MIB, GIB = 1 << 20, 1 << 30
# whole-table COW (fork(cow_pgtable="pmd" / "pud")) in both accounting modes
UPPER_DESIGNS = ("cow-pmd-deferred", "cow-pmd-eager", "cow-pud-deferred", "cow-pud-eager")


def size_name(size: int) -> str:
    return f"{size // GIB}G" if size >= GIB and size % GIB == 0 else f"{size // MIB}M"


def plan(quick: bool) -> list:
    """[(id, kind, op, size, options)]: what to measure, in order."""
    jobs = []

    def add(kind, op, size, rounds, design=None, **opt):
        parts = [op] + ([design] if design else []) + [size_name(size)]
        name = ".".join(parts) if kind == "mmemu" else f"{kind}.{'.'.join(parts)}"
        jobs.append((name, kind, op, size, dict(rounds=rounds, design=design, **opt)))

    if quick:
        s = 64 * MIB
        add("kernel", "fork", s, 9, cow=True)
        for d in ("classic", "deferred", "eager"):
            add("mmemu", "fork", s, 25, d)
        add("numpy", "fork", s, 15)
        add("reference", "fork", s, 5)
        add("mmemu", "cow_data", s, 6)
        add("numpy", "cow_data", s, 5)
        add("numpy", "first_touch", s, 1)
        add("mmemu", "touch", s, 5)
        add("numpy", "touch", s, 5)
        add("mmemu", "fork_write", s, 5, "classic")
        add("reference", "fork_write", s, 1)      # ~10 s a round: the model is slow
        add("mmemu", "break_cow_pte", s, 5, "deferred")
        add("mmemu", "munmap", s, 5)
        add("mmemu", "exit", s, 5)
        add("numpy", "munmap", s, 5)
        add("mmemu", "read", s, 5)
        add("numpy", "read", s, 5)
        add("mmemu", "two_machines", s, 7)
        add("numpy", "two_machines", s, 7)
        add("trace", "replay", s, 7, "classic")
        add("trace", "direct", s, 7, "classic")
        add("trace", "record", s, 3)
        # whole-table COW (issue 18): its fork against PTE-level at 16 GiB, the PUD-level
        # fork at 1 and 16 GiB, the writes after a PMD-level fork against PTE-level at 1 GiB
        # (forks of ~10 us: many rounds, so that the median is not one preemption)
        add("mmemu", "fork", 16 * GIB, 51, "deferred")
        add("mmemu", "fork", 16 * GIB, 201, "cow-pmd-deferred")
        for z in (GIB, 16 * GIB):
            add("mmemu", "fork", z, 201, "cow-pud-deferred")
        for d in ("deferred", "cow-pmd-deferred"):
            add("mmemu", "break_cow_pte", GIB, 5, d)
            add("mmemu", "cow_rewrite", GIB, 5, d)
        return jobs
    for s in (64 * MIB, GIB, 4 * GIB, 16 * GIB):
        big = s > GIB
        add("kernel", "fork", s, 3 if big else 7, cow=not big)
        for d in ("classic", "deferred", "eager") + UPPER_DESIGNS:
            add("mmemu", "fork", s, {64 * MIB: 30, GIB: 20, 4 * GIB: 8, 16 * GIB: 5}[s], d)
        add("numpy", "fork", s, 5 if big else 15)
    add("reference", "fork", 64 * MIB, 5)
    add("mmemu", "touch", GIB, 5)
    add("mmemu", "zero_read", GIB, 5)
    add("numpy", "touch", GIB, 5)
    for s in (64 * MIB, GIB):
        add("mmemu", "cow_data", s, 5)
        add("numpy", "cow_data", s, 5)
        add("numpy", "first_touch", s, 1)
    for d in ("classic", "deferred", "eager"):
        add("mmemu", "fork_write", 64 * MIB, 5, d)
    add("reference", "fork_write", 64 * MIB, 1)
    add("mmemu", "fork_write", GIB, 3, "classic")
    for d in ("deferred", "eager") + UPPER_DESIGNS:
        add("mmemu", "break_cow_pte", GIB, 5, d)
        add("mmemu", "cow_rewrite", GIB, 5, d)
    add("mmemu", "munmap", GIB, 5)
    add("mmemu", "exit", GIB, 5)
    add("numpy", "munmap", GIB, 5)
    add("mmemu", "read", 256 * MIB, 5)
    add("numpy", "read", 256 * MIB, 5)
    add("mmemu", "two_machines", 64 * MIB, 11)
    add("numpy", "two_machines", 64 * MIB, 11)
    add("kernel", "thp", GIB, 5)
    for op in ("thp_touch", "thp_fork", "thp_split"):
        add("mmemu", op, GIB, 5)
    for d in ("classic", "deferred", "eager"):
        add("trace", "replay", 256 * MIB, 5, d)
        add("trace", "direct", 256 * MIB, 5, d)
    add("trace", "record", 256 * MIB, 3)
    add("trace", "record_redis", MIB, 5)      # size: requests per test
    return jobs


def _vm_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def run_one(op: str, size: int, rounds: int, design=None) -> dict:
    """One mmemu scenario in this process, with its host memory: VmHWM at the end minus
    VmRSS before the scenario started (the interpreter, numpy and mmemu themselves)."""
    from .scenarios import run
    base = _vm_kb("VmRSS")
    r = run(op, size, design, rounds)
    r["host_base"] = base << 10
    r["host_peak"] = (_vm_kb("VmHWM") - base) << 10
    return r


def _subprocess(op, size, rounds, design, timeout=900):
    args = json.dumps([op, size, rounds, design])
    code = "import json,sys; from mmemu.bench.runner import run_one; " \
           "print(json.dumps(run_one(*json.loads(sys.argv[1]))))"
    out = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"scenario {op} {size_name(size)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _measure(kind, op, size, opt):
    rounds, design = opt["rounds"], opt["design"]
    if kind == "mmemu":
        return _subprocess(op, size, rounds, design)
    if kind == "numpy":
        fn = lower_bound.first_touch_host if op == "first_touch" else lower_bound.LOWER_BOUNDS[op]
        times = fn(size, rounds)
        if isinstance(times, dict):         # serial and parallel (two_threads)
            return {**times, "pages": 2 * size // 4096}
        return {"times": times, "pages": size // 4096}
    if kind == "reference":
        return (reference.fork if op == "fork" else reference.fork_write)(size, rounds)
    if kind == "kernel" and op == "thp":
        why = kernel.thp_available()
        if why or not kernel.can_measure(size, False):
            raise kernel_skip(why or f"{size_name(size)} needs more free host memory")
        k = kernel.measure_thp(size, rounds)
        k["times"] = k["fork_s"]
        return k
    if kind == "trace":         # mmemu record / replay (mmemu.trace.bench)
        from ..trace.bench import measure
        return measure(op, size, opt["design"], rounds)
    if kind == "kernel":
        cow = opt.get("cow", True)
        if not kernel.can_measure(size, cow):
            raise kernel_skip(f"{size_name(size)} needs more free host memory than half of "
                              f"MemAvailable ({kernel.mem_available() >> 20} MiB)")
        k = kernel.measure(size, rounds, cow)
        k["times"] = k["fork_s"]
        k["pages"] = k["pages"]
        return k
    raise ValueError(kind)


class kernel_skip(Exception):
    pass


def summarize(r: dict) -> dict:
    """Add medians: median_s over all rounds; for COW timings, cold (round 0) and warm
    (the median of later rounds) per page; for two machines on two threads, serial_s (the
    same work one after the other)."""
    t = r["times"]
    r["median_s"] = statistics.median(t)
    r["min_s"] = min(t)
    if r.get("serial"):
        r["serial_s"] = statistics.median(r["serial"])
    if r.get("op") == "cow_data":
        r["cold_s"], r["warm_s"] = t[0], statistics.median(t[1:])
    if r.get("kind") == "kernel" and r.get("cow_s"):
        c = r["cow_s"]
        r["cow_cold_s"], r["cow_warm_s"] = c[0], statistics.median(c[1:])
    return r


def run(jobs, progress=None) -> dict:
    """Run a plan; progress(i, n, label) is called before each job. Returns {id: result};
    a job that cannot run here gets {"skipped": reason}."""
    results = {}
    t0 = time.perf_counter()
    for i, (name, kind, op, size, opt) in enumerate(jobs):
        if progress:
            progress(i, len(jobs), name)
        meta = {"id": name, "kind": kind, "op": op, "size": size, "design": opt["design"]}
        try:
            r = _measure(kind, op, size, opt)
        except kernel_skip as e:
            results[name] = {**meta, "skipped": str(e)}
            continue
        results[name] = summarize({**meta, **r})
    if progress:
        progress(len(jobs), len(jobs), f"done in {time.perf_counter() - t0:.0f} s")
    return results
