"""``mmemu fork-table``: the table of the "Introduce Copy-On-Write to Page Table" RFC.

A process writes every page of a private anonymous mapping, forks, and /proc/meminfo is
read before and after the fork, side by side for a classic fork and for COW page tables in
both accounting modes, with the child's VmPTE and VmRSS, the fork's time (median and
interquartile range of ``--repeat`` forks) and the work it did, with a legend.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any, Dict, List, Optional

from .args import format_size
from .cliutil import UsageError, choices_arg, positive_int, size_arg
from .compare import DESIGN_GROUPS, DESIGNS, expand_designs, design_machine, measure_fork
from .errors import MMError
from .flags import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from .machine import Machine
from .published import published_rows
from .stats import COUNTER_HELP

HELP = "reproduce the COW page table RFC's fork table (classic fork against COW page tables)"
FIELDS = ["MemTotal", "MemFree", "AnonPages", "Mapped", "PageTables"]
# RFC v1 (May 2022) cover letter, 1 GB mapping: after - before, kB
SEED_DELTA = {
    "classic": {"MemTotal": 0, "MemFree": -4908, "AnonPages": -208, "Mapped": 472, "PageTables": 2076},
    "cow": {"MemTotal": 0, "MemFree": -2436, "AnonPages": 32, "Mapped": 240, "PageTables": 92},
}
CHUNK = 256 << 20


def add_parser(sub: Any) -> None:
    """Register ``mmemu fork-table``."""
    ft = sub.add_parser("fork-table", help=HELP, description=HELP)
    ft.add_argument("--size", default="1G",
                    help="size of the mapping the process writes and forks (default 1G; "
                         "units K, M, G, T, all powers of 1024: 1G = 1GiB = 1GB)")
    ft.add_argument("--memory", default="32G", help="emulated physical memory (default 32G)")
    ft.add_argument("--layout", default="typical", choices=["typical", "bare"],
                    help="the forking process: a small C program's layout (default) or empty")
    ft.add_argument("--designs", default="classic,deferred,eager",
                    help="comma-separated columns, each once: classic, deferred, eager (the "
                         "default); the series' versions odf, v1, v2, v5; whole-table COW "
                         "cow-pmd, cow-pud (both accounting modes) or cow-pmd-deferred, "
                         "cow-pmd-eager, cow-pud-deferred, cow-pud-eager")
    ft.add_argument("--repeat", type=positive_int, default=5, metavar="N",
                    help="time N forks per design and report their median and interquartile "
                         "range (default 5)")
    ft.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ft.add_argument("--check", action="store_true",
                    help="run the invariant checker on every machine afterwards")
    ft.add_argument("--quiet", action="store_true", help="no progress output")
    ft.set_defaults(func=cmd_fork_table)


def _progress(label: str, done: int, total: int, enabled: bool) -> None:
    if not enabled:
        return
    pct = 100 * done // total if total else 100
    end = "\n" if done >= total else ""
    sys.stderr.write(f"\r{label}: {done >> 20} / {total >> 20} MiB ({pct}%)" + end)
    sys.stderr.flush()


def populate(proc: Any, addr: int, size: int, label: str, show: bool) -> float:
    """Write every page of [addr, addr+size) in chunks, reporting progress; seconds taken."""
    t0 = time.perf_counter()
    done = 0
    while done < size:
        n = min(CHUNK, size - done)
        proc.touch(addr + done, n, write=True)
        done += n
        _progress(label, done, size, show)
    return time.perf_counter() - t0


def spread(samples: List[float]) -> Dict[str, float]:
    """Median and interquartile range (Q3 - Q1, 0 for one sample) of samples."""
    med = statistics.median(samples)
    if len(samples) < 2:
        return {"median": med, "iqr": 0.0}
    q = statistics.quantiles(samples, n=4, method="inclusive")
    return {"median": med, "iqr": q[2] - q[0]}


def preflight(size: int, memory: int, layout: Optional[str]) -> None:
    """Before any work: the layout fits in the memory, and the mapping, its page tables
    and a forked copy of those tables fit beside it (UsageError saying what is needed)."""
    m = Machine(memory)
    try:
        m.spawn(layout=layout)
    except MMError:
        raise UsageError(f"--memory {format_size(memory)} is too small for the "
                         f"{layout or 'bare'} layout") from None
    used = m.memory - m.meminfo()["MemFree"] * 1024
    tables = 2 * (size // 512 + 4 * 4096)     # the parent's PTE tables, the child's copy
    need = used + size + tables
    if need > memory:
        unit = 1 << 30 if need >= 1 << 30 else 1 << 20
        raise UsageError(f"--size {format_size(size)} does not fit in --memory {format_size(memory)} "
                         f"(needs {format_size(-(-need // unit) * unit)} or more)")


def run(design: str, size: int, memory: int, layout: Optional[str], show: bool, check: bool,
        repeat: int = 1) -> Dict[str, Any]:
    """One column of the table: populate, warm up with one fork, then measure a fork
    (and ``repeat - 1`` more, each after the previous child exits, for the timing)."""
    title, accounting, cow = DESIGNS[design]
    m = design_machine(design, memory)
    p = m.spawn(layout=layout)
    addr = p.mmap(0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    populate_s = populate(p, addr, size, f"{title}: populating", show)
    child, before, after, work, fork_s = measure_fork(m, p, cow, check)
    times = [fork_s]
    for _ in range(repeat - 1):
        child.exit()
        t0 = time.perf_counter()
        child = p.fork(cow_pgtable=cow)
        times.append(time.perf_counter() - t0)
    if check:
        m.check()
    cs, ps = child.status(), p.status()
    ms = spread([t * 1e3 for t in times])
    return {
        "design": design,
        "title": title,
        "accounting": accounting if cow else None,
        "size": size,
        "memory": m.memory,
        "layout": layout or "bare",
        "before": {k: before[k] for k in FIELDS},
        "after": {k: after[k] for k in FIELDS},
        "delta": {k: after[k] - before[k] for k in FIELDS},
        "child": {"VmPTE": cs["VmPTE"], "VmRSS": cs["VmRSS"], "RssAnon": cs["RssAnon"]},
        "parent": {"VmPTE": ps["VmPTE"], "VmRSS": ps["VmRSS"]},
        "fork_ms": ms["median"],
        "fork_ms_iqr": ms["iqr"],
        "fork_ms_runs": [t * 1e3 for t in times],
        "populate_ms": populate_s * 1e3,
        "work": {k: v for k, v in work.items() if not k.startswith("nr_")},
    }


def legend(names: List[str]) -> List[str]:
    """One line per counter shown: its name and what it counts (mmemu.stats.COUNTER_HELP)."""
    return [f"  {k:<26}{COUNTER_HELP.get(k, '')}" for k in names]


def _mem(nbytes: int, top: int = 30) -> str:
    for shift, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if shift <= top and nbytes >= 1 << shift:
            return f"{nbytes >> shift} {unit}"
    return f"{nbytes} bytes"


def costmodel_rows(results: List[Dict[str, Any]]) -> List[str]:
    """The predicted kernel fork time of each column (mmemu.costmodel)."""
    from .costmodel.forktable import rows
    return rows(results)


def format_table(results: List[Dict[str, Any]]) -> str:
    """The text table of fork-table's results (one column per design)."""
    r0 = results[0]
    size_mib = r0["size"] >> 20
    seed = size_mib == 1024
    w = 18
    lines = [
        f"fork of a process with {_mem(r0['size'], 20)} private anonymous memory, every page written "
        f"(layout: {r0['layout']}, emulated machine: {_mem(r0['memory'])})",
        "",
        f"{'/proc/meminfo (kB)':<22}" + "".join(f"{r['title']:>{w}}" for r in results),
    ]
    for k in FIELDS:
        lines.append(f"{k + ' before':<22}" + "".join(f"{r['before'][k]:>{w}}" for r in results))
        lines.append(f"{k + ' after':<22}" + "".join(f"{r['after'][k]:>{w}}" for r in results))
        row = f"{k + ' delta':<22}" + "".join(f"{r['delta'][k]:>+{w}}" for r in results)
        if seed:
            row += f"    seed: classic {SEED_DELTA['classic'][k]:+}, COW PTE {SEED_DELTA['cow'][k]:+}"
        lines.append(row)
    n = len(r0["fork_ms_runs"])
    lines += [
        "",
        f"{'child VmPTE (kB)':<22}" + "".join(f"{r['child']['VmPTE']:>{w}}" for r in results),
        f"{'child VmRSS (kB)':<22}" + "".join(f"{r['child']['VmRSS']:>{w}}" for r in results),
        f"{'parent VmPTE (kB)':<22}" + "".join(f"{r['parent']['VmPTE']:>{w}}" for r in results),
        f"{'fork time (ms)':<22}" + "".join(f"{r['fork_ms']:>{w}.3f}" for r in results)
        + f"    median of {n} fork{'s' if n > 1 else ''}",
        f"{'  spread (IQR, ms)':<22}" + "".join(f"{r['fork_ms_iqr']:>{w}.3f}" for r in results),
        *costmodel_rows(results),
        "",
        "work done by the fork (vmstat deltas):",
    ]
    names: List[str] = []
    for r in results:
        names += [k for k, v in r["work"].items() if v and k not in names]
    for k in names:
        lines.append(f"  {k:<20}" + "".join(f"{r['work'].get(k, 0):>{w}}" for r in results))
    lines += ["", "what the counters count (mmemu counters lists them all):"] + legend(names)
    if seed:
        lines += ["", "seed: RFC 'Introduce Copy-On-Write to Page Table' v1, 1 GB: PageTables "
                      "+2076 kB with a classic fork, +92 kB with COW page tables; later versions "
                      "report the child's VmPTE as 2096 kB (classic) and 44 kB (COW, deferred)"]
    lines += published_rows(results)    # the versions' own tables (mmemu.published)
    return "\n".join(lines)


def cmd_fork_table(args: argparse.Namespace) -> int:
    size = size_arg(args.size, "--size")
    memory = size_arg(args.memory, "--memory", minimum=64 << 10)
    designs = expand_designs(choices_arg(args.designs, "--designs", [*DESIGNS, *DESIGN_GROUPS]))
    layout = None if args.layout == "bare" else args.layout
    preflight(size, memory, layout)
    show = not args.quiet and (sys.stderr.isatty() or size >= (4 << 30))
    results = [run(d, size, memory, layout, show, args.check, args.repeat) for d in designs]
    if args.json:
        print(json.dumps({r["design"]: r for r in results}, indent=2))
    else:
        print(format_table(results))
    if args.check:
        sys.stderr.write(f"checked: Machine.check() passed on {len(results)} machine(s) after the "
                         "measured forks (every counter recomputed from the page tables: rss, "
                         "mapcounts, refcounts, PageTables, free frames; no leaked or stale frame)\n")
    return 0
