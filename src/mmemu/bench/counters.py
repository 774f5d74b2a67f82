"""Deterministic work counters of fixed scenarios: what CI compares exactly.

Each scenario runs one operation on a fresh machine and records the vmstat event deltas
it caused (tables allocated and freed, PTEs copied, pages copied, shares taken, breaks,
...) and the PageTables delta. They depend only on the code, never on timing, so any
change must be deliberate: re-record with ``mmemu bench --record-counters FILE`` and
commit the file with the change.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..machine import Machine
from .runner import MIB
from .scenarios import PAGE, PRIV, RW, SPAN

SIZE = 64 * MIB
DESIGNS = {"classic": ("deferred", False), "deferred": ("deferred", True), "eager": ("eager", True)}
# whole-table COW: PMD / PUD tables shared at fork, in both accounting modes
UPPER = {f"cow-{lv}-{acc}": (acc, lv) for lv in ("pmd", "pud") for acc in ("deferred", "eager")}


def _setup(design, size=SIZE, data=False, layout=None):
    accounting, cow = {**DESIGNS, **UPPER}[design]
    m = Machine("1G", cow_pte_accounting=accounting, cow_pgtable=False)
    p = m.spawn(layout=layout)
    a = p.mmap(0, size, RW, PRIV)
    if data:
        p.write(a, b"\x5a" * size)
    else:
        p.touch(a, size)
    return m, p, a, cow


def _measure(m, op):
    ev, pt = m.vmstat(), m.meminfo()["PageTables"]
    op()
    # events, not the nr_* gauges (the TLB flush counters are events with Linux's nr_ names)
    out = {k: int(v) for k, v in (m.vmstat() - ev).items()
           if v and (not k.startswith("nr_") or k.startswith("nr_tlb_"))}
    out["PageTables_kB_delta"] = m.meminfo()["PageTables"] - pt
    return out


def fork(design, layout=None):
    m, p, a, cow = _setup(design, layout=layout)
    return _measure(m, lambda: p.fork(cow_pgtable=cow))


def fork_write(design):
    m, p, a, cow = _setup(design, 16 * MIB, data=True)
    return _measure(m, lambda: p.fork(cow_pgtable=cow).touch(a, 16 * MIB))


def break_cow_pte(design):
    m, p, a, cow = _setup(design)
    c = p.fork(cow_pgtable=cow)
    return _measure(m, lambda: [c.touch(s, PAGE) for s in range(a, a + SIZE, SPAN)])


def touch(write):
    m = Machine("1G", cow_pgtable=False)
    p = m.spawn()
    a = p.mmap(0, SIZE, RW, PRIV)
    return _measure(m, lambda: p.touch(a, SIZE, write=write))


def munmap():
    m, p, a, _ = _setup("classic")
    return _measure(m, lambda: p.munmap(a, SIZE))


def exit_after_fork(design):
    m, p, a, cow = _setup(design)
    c = p.fork(cow_pgtable=cow)
    return _measure(m, lambda: (c.exit(), p.exit()))


SCENARIOS = {
    **{f"fork 64M {d}": (lambda d=d: fork(d)) for d in DESIGNS},
    **{f"fork typical 64M {d}": (lambda d=d: fork(d, "typical")) for d in DESIGNS},
    **{f"fork then child writes 16M {d}": (lambda d=d: fork_write(d)) for d in DESIGNS},
    **{f"break_cow_pte 64M {d}": (lambda d=d: break_cow_pte(d)) for d in ("deferred", "eager")},
    "touch 64M (write faults)": lambda: touch(True),
    "zero-page reads 64M": lambda: touch(False),
    "munmap 64M": munmap,
    **{f"exit child then parent 64M {d}": (lambda d=d: exit_after_fork(d)) for d in DESIGNS},
    **{f"{what} 64M {d}": (lambda fn=fn, d=d: fn(d)) for d in UPPER for what, fn in (
        ("fork", fork), ("fork typical", lambda d: fork(d, "typical")),
        ("break_cow_pte", break_cow_pte), ("exit child then parent", exit_after_fork))},
}


def compute() -> dict:
    """{scenario: {counter: value}} for every fixed scenario."""
    return {name: fn() for name, fn in SCENARIOS.items()}


def record(path) -> dict:
    data = compute()
    doc = {"_doc": "Deterministic work counters of fixed scenarios (mmemu.bench.counters). "
                   "CI compares them exactly; re-record with `mmemu bench --record-counters "
                   "benchmarks/baseline.json` and commit the file with the change.",
           "scenarios": data}
    Path(path).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return data


def diff(recorded: dict, now: dict) -> list:
    """Human-readable differences between a recorded and a recomputed counter set."""
    out = []
    for name in sorted(set(recorded) | set(now)):
        if name not in now:
            out.append(f"{name}: recorded but no longer computed")
            continue
        if name not in recorded:
            out.append(f"{name}: new scenario, not recorded")
            continue
        a, b = recorded[name], now[name]
        for k in sorted(set(a) | set(b)):
            if a.get(k, 0) != b.get(k, 0):
                out.append(f"{name}: {k} recorded {a.get(k, 0)}, now {b.get(k, 0)}")
    return out


def compare(path) -> list:
    recorded = json.loads(Path(path).read_text())["scenarios"]
    return diff(recorded, compute())
