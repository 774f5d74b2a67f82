"""The `mmemu` command.

    mmemu fork-table [--size 1G] [--memory 32G] [--json] [--check]

reproduces the table of the "Introduce Copy-On-Write to Page Table" RFC: a process writes
every page of a private anonymous mapping, forks, and /proc/meminfo is read before and
after the fork, with the child's VmPTE and VmRSS.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from .flags import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from .machine import Machine, parse_size

FIELDS = ["MemTotal", "MemFree", "AnonPages", "Mapped", "PageTables"]
# RFC v1 (May 2022) cover letter, classic fork of a 1 GB mapping: after - before, kB
SEED_CLASSIC_DELTA = {"MemTotal": 0, "MemFree": -4908, "AnonPages": -208, "Mapped": 472, "PageTables": 2076}
CHUNK = 256 << 20


def _progress(label: str, done: int, total: int, enabled: bool) -> None:
    if not enabled:
        return
    pct = 100 * done // total if total else 100
    end = "\n" if done >= total else ""
    sys.stderr.write(f"\r{label}: {done >> 20} / {total >> 20} MiB ({pct}%)" + end)
    sys.stderr.flush()


def populate(proc, addr: int, size: int, show: bool) -> float:
    """Write every page of [addr, addr+size) in chunks, reporting progress; seconds taken."""
    t0 = time.perf_counter()
    done = 0
    while done < size:
        n = min(CHUNK, size - done)
        proc.touch(addr + done, n, write=True)
        done += n
        _progress("populating", done, size, show)
    return time.perf_counter() - t0


def run_classic(size: int, memory, show: bool, check: bool) -> dict:
    """The classic-fork column of the seed's table."""
    m = Machine(memory)
    p = m.spawn()
    addr = p.mmap(0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    populate_s = populate(p, addr, size, show)
    before = dict(m.meminfo())
    ev0 = m.vmstat()
    t0 = time.perf_counter()
    child = p.fork()
    fork_s = time.perf_counter() - t0
    after = dict(m.meminfo())
    work = m.vmstat() - ev0
    cs, ps = child.status(), p.status()
    if check:
        m.check()
    return {
        "mode": "classic",
        "size": size,
        "memory": m.memory,
        "before": {k: before[k] for k in FIELDS},
        "after": {k: after[k] for k in FIELDS},
        "delta": {k: after[k] - before[k] for k in FIELDS},
        "child": {"VmPTE": cs["VmPTE"], "VmRSS": cs["VmRSS"], "RssAnon": cs["RssAnon"]},
        "parent": {"VmPTE": ps["VmPTE"], "VmRSS": ps["VmRSS"]},
        "fork_ms": fork_s * 1e3,
        "populate_ms": populate_s * 1e3,
        "work": {k: v for k, v in work.items() if v and not k.startswith("nr_")},
    }


def format_table(res: dict) -> str:
    size_mib = res["size"] >> 20
    lines = [
        f"fork of a process with {size_mib} MiB private anonymous memory, every page written "
        f"(emulated machine: {res['memory'] >> 30} GiB)",
        "",
        f"{'/proc/meminfo (kB)':<20}{'classic before':>16}{'classic after':>16}{'delta':>10}"
        f"{'seed delta':>12}",
    ]
    for k in FIELDS:
        seed = SEED_CLASSIC_DELTA[k] if size_mib == 1024 else None
        lines.append(f"{k:<20}{res['before'][k]:>16}{res['after'][k]:>16}{res['delta'][k]:>+10}"
                     f"{'' if seed is None else format(seed, '+'):>12}")
    lines += [
        "",
        f"{'child VmPTE (kB)':<20}{res['child']['VmPTE']:>16}",
        f"{'child VmRSS (kB)':<20}{res['child']['VmRSS']:>16}",
        f"{'parent VmPTE (kB)':<20}{res['parent']['VmPTE']:>16}",
        f"{'fork time (ms)':<20}{res['fork_ms']:>16.3f}",
        "",
        "work done by the fork (vmstat deltas):",
    ]
    lines += [f"  {k:<28}{v:>12}" for k, v in res["work"].items()]
    lines.append("")
    lines.append("seed: RFC 'Introduce Copy-On-Write to Page Table' v1, 1 GB, classic fork: "
                 "PageTables +2076 kB")
    return "\n".join(lines)


def cmd_fork_table(args) -> int:
    size = parse_size(args.size)
    if size <= 0 or size % 4096:
        print("mmemu: --size must be a positive multiple of 4096", file=sys.stderr)
        return 2
    show = not args.quiet and (sys.stderr.isatty() or size >= (4 << 30))
    res = run_classic(size, args.memory, show, args.check)
    if args.json:
        print(json.dumps({"classic": res}, indent=2))
    else:
        print(format_table(res))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="mmemu", description="Linux memory-management emulator")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ft = sub.add_parser("fork-table", help="reproduce the COW page table RFC's fork table")
    ft.add_argument("--size", default="1G", help="mapping size (default 1G)")
    ft.add_argument("--memory", default="32G", help="emulated physical memory (default 32G)")
    ft.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ft.add_argument("--check", action="store_true", help="run the invariant checker afterwards")
    ft.add_argument("--quiet", action="store_true", help="no progress output")
    ft.set_defaults(func=cmd_fork_table)
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"mmemu: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
