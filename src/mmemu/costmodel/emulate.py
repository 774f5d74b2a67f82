"""The emulated twins of the calibrated kernel scenarios: mmemu does the same work and
returns its vmstat work counters (with ``forks``) and its own wall time."""
from __future__ import annotations

import time

from ..bench.counters import DESIGNS
from ..bench.scenarios import PRIV, RW, machine_for
from ..profiles import PROFILES



def _work(before, after) -> dict:
    return {k: v for k, v in (after - before).items() if v and not k.startswith("nr_")}


def machine(size: int, design: str):
    """(machine, cow_pgtable argument of fork) for a design: classic, deferred or eager
    (bench.counters.DESIGNS), or a published version of the series (mmemu.profiles: odf,
    v1, v2, v5 ...), whose forks share tables."""
    if design in PROFILES:
        return machine_for(size, PROFILES[design].accounting, design), True
    if design not in DESIGNS:
        raise ValueError(f"unknown design {design!r}; choose from {', '.join([*DESIGNS, *PROFILES])}")
    accounting, cow = DESIGNS[design]
    return machine_for(size, accounting), cow


def fork_then_write(size: int, design: str = "classic", write: bool = True,
                    stride: int = 1, exit_child: bool = False, check: bool = False) -> dict:
    """A bare process writes one page in every `stride` of `size` bytes of private anonymous
    memory, forks once to warm up (that child exits), forks again (`design`: classic,
    deferred or eager COW page tables, or a version of the series; the measured fork), and, with
    write=True, the child writes the same pages again; with exit_child=True it then exits.
    Returns {"fork", "write", "exit": counters, "fork_s", "write_s", "exit_s", "meminfo"
    and "child" (status) after the fork} (counters include forks=1 and exits=1)."""
    if size <= 0 or size % 4096 or stride < 1:
        raise ValueError("size must be a positive multiple of 4096 and stride >= 1")
    m, cow = machine(size, design)
    p = m.spawn()
    a = p.mmap(0, size, RW, PRIV)
    pages = range(a, a + size, 4096 * stride)
    if stride == 1:
        p.touch(a, size, write=True)
    else:
        for addr in pages:
            p.touch(addr, 4096, write=True)
    p.fork(cow_pgtable=cow).exit()         # warm-up, as fork-table's: the timed fork reuses hot frames
    v0 = m.vmstat()
    t0 = time.perf_counter()
    child = p.fork(cow_pgtable=cow)
    fork_s = time.perf_counter() - t0
    v1 = m.vmstat()
    out = {"fork": {"forks": 1, **_work(v0, v1)}, "fork_s": fork_s, "write": {}, "write_s": 0.0,
           "exit": {}, "exit_s": 0.0, "meminfo": dict(m.meminfo()), "child": dict(child.status())}
    if write:
        t0 = time.perf_counter()
        if stride == 1:
            child.touch(a, size, write=True)
        else:
            for addr in pages:
                child.touch(addr, 4096, write=True)
        out["write_s"] = time.perf_counter() - t0
        out["write"] = _work(v1, m.vmstat())
    if exit_child:
        v2 = m.vmstat()
        t0 = time.perf_counter()
        child.exit()
        out["exit_s"] = time.perf_counter() - t0
        out["exit"] = {"exits": 1, **_work(v2, m.vmstat())}
    if check:
        m.check()
    return out


def add(*counters: dict) -> dict:
    """The sum of several work-counter dicts."""
    out: dict = {}
    for c in counters:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


def helper_layout() -> dict:
    """The calibration helper's own layout (bench/kernel_helper.py --layout: a Python
    interpreter, its libraries, heap and stack, no region yet), imported from the live
    process (mmemu.procfs) and forked and exited in mmemu: {"fork": its fork's work
    counters, "exit": the child's exit's, "vmas": its VMAs}. Every fork and exit the
    calibration times does this work besides the region's; counting it keeps the fixed
    units (fork_fixed, exit_fixed) the kernel's fixed part alone."""
    import subprocess
    import sys
    from ..bench.kernel import HELPER
    from ..machine import Machine
    from ..procfs import import_process
    h = subprocess.Popen([sys.executable, "-I", str(HELPER), "--layout"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        if h.stdout.readline().strip() != "ready":
            raise RuntimeError("kernel helper --layout did not start")
        m = Machine("4G")
        p = import_process(m, h.pid, stop=True)
    finally:
        h.stdin.close()
        h.wait()
    v0 = m.vmstat()
    child = p.fork()
    v1 = m.vmstat()
    child.exit()
    return {"fork": _work(v0, v1), "exit": _work(v1, m.vmstat()), "vmas": len(p.mm.vmas)}
