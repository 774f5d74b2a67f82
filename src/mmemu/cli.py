"""The `mmemu` command.

    mmemu fork-table [--size 1G] [--memory 32G] [--layout typical|bare]
                     [--designs classic,deferred,eager] [--json] [--check] [--quiet]

reproduces the table of the "Introduce Copy-On-Write to Page Table" RFC: a process writes
every page of a private anonymous mapping, forks, and /proc/meminfo is read before and
after the fork, side by side for a classic fork and for COW page tables in both accounting
modes, with the child's VmPTE and VmRSS, the fork's wall time and the work it did.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .compare import DESIGN_GROUPS, DESIGNS, compare, expand_designs, format_compare, measure_fork
from .flags import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from .machine import Machine, parse_size
from .procfs import ImportFailed, import_process

FIELDS = ["MemTotal", "MemFree", "AnonPages", "Mapped", "PageTables"]
# RFC v1 (May 2022) cover letter, 1 GB mapping: after - before, kB
SEED_DELTA = {
    "classic": {"MemTotal": 0, "MemFree": -4908, "AnonPages": -208, "Mapped": 472, "PageTables": 2076},
    "cow": {"MemTotal": 0, "MemFree": -2436, "AnonPages": 32, "Mapped": 240, "PageTables": 92},
}
CHUNK = 256 << 20


def _progress(label: str, done: int, total: int, enabled: bool) -> None:
    if not enabled:
        return
    pct = 100 * done // total if total else 100
    end = "\n" if done >= total else ""
    sys.stderr.write(f"\r{label}: {done >> 20} / {total >> 20} MiB ({pct}%)" + end)
    sys.stderr.flush()


def populate(proc, addr: int, size: int, label: str, show: bool) -> float:
    """Write every page of [addr, addr+size) in chunks, reporting progress; seconds taken."""
    t0 = time.perf_counter()
    done = 0
    while done < size:
        n = min(CHUNK, size - done)
        proc.touch(addr + done, n, write=True)
        done += n
        _progress(label, done, size, show)
    return time.perf_counter() - t0


def run(design: str, size: int, memory, layout, show: bool, check: bool) -> dict:
    """One column of the table: populate, warm up with one fork, then measure a fork."""
    title, accounting, cow = DESIGNS[design]
    m = Machine(memory, cow_pte_accounting=accounting)
    p = m.spawn(layout=layout)
    addr = p.mmap(0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    populate_s = populate(p, addr, size, f"{title}: populating", show)
    child, before, after, work, fork_s = measure_fork(m, p, cow, check)
    cs, ps = child.status(), p.status()
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
        "fork_ms": fork_s * 1e3,
        "populate_ms": populate_s * 1e3,
        "work": {k: v for k, v in work.items() if v and not k.startswith("nr_")},
    }


def format_table(results: list) -> str:
    r0 = results[0]
    size_mib = r0["size"] >> 20
    seed = size_mib == 1024
    w = 18
    lines = [
        f"fork of a process with {size_mib} MiB private anonymous memory, every page written "
        f"(layout: {r0['layout']}, emulated machine: {r0['memory'] >> 30} GiB)",
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
    lines += [
        "",
        f"{'child VmPTE (kB)':<22}" + "".join(f"{r['child']['VmPTE']:>{w}}" for r in results),
        f"{'child VmRSS (kB)':<22}" + "".join(f"{r['child']['VmRSS']:>{w}}" for r in results),
        f"{'parent VmPTE (kB)':<22}" + "".join(f"{r['parent']['VmPTE']:>{w}}" for r in results),
        f"{'fork wall time (ms)':<22}" + "".join(f"{r['fork_ms']:>{w}.3f}" for r in results),
        "",
        "work done by the fork (vmstat deltas):",
    ]
    names = []
    for r in results:
        names += [k for k in r["work"] if k not in names]
    for k in names:
        lines.append(f"  {k:<20}" + "".join(f"{r['work'].get(k, 0):>{w}}" for r in results))
    if seed:
        lines += ["", "seed: RFC 'Introduce Copy-On-Write to Page Table' v1, 1 GB: PageTables "
                      "+2076 kB with a classic fork, +92 kB with COW page tables; later versions "
                      "report the child's VmPTE as 2096 kB (classic) and 44 kB (COW, deferred)"]
    return "\n".join(lines)


def cmd_fork_table(args) -> int:
    size = parse_size(args.size)
    if size <= 0 or size % 4096:
        print("mmemu: --size must be a positive multiple of 4096", file=sys.stderr)
        return 2
    designs = [d.strip() for d in args.designs.split(",") if d.strip()]
    try:
        designs = expand_designs(designs)
    except ValueError as e:
        designs, unknown = [], str(e)
    else:
        unknown = [d for d in designs if d not in DESIGNS]
    if unknown or not designs:
        print(f"mmemu: unknown design(s) {unknown}; choose from "
              f"{', '.join(list(DESIGNS) + list(DESIGN_GROUPS))}", file=sys.stderr)
        return 2
    layout = None if args.layout == "bare" else args.layout
    show = not args.quiet and (sys.stderr.isatty() or size >= (4 << 30))
    results = [run(d, size, args.memory, layout, show, args.check) for d in designs]
    if args.json:
        print(json.dumps({r["design"]: r for r in results}, indent=2))
    else:
        print(format_table(results))
    return 0


def cmd_compare(args) -> int:
    designs = [d.strip() for d in args.designs.split(",") if d.strip()]
    try:
        res = compare(args.pid, designs, memory=args.memory, check=args.check, stop=args.stop)
    except ImportFailed as e:
        print(f"mmemu: cannot import process {args.pid}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(json.dumps(res, indent=2) if args.json else format_compare(res))
    return 0


def cmd_import(args) -> int:
    m = Machine(args.memory)
    try:
        p = import_process(m, args.pid, contents=args.contents, stop=args.stop)
    except ImportFailed as e:
        print(f"mmemu: cannot import process {args.pid}: {e.strerror or e}", file=sys.stderr)
        return 1
    rep = p.import_report
    print(f"imported process {args.pid}: {rep.vmas} VMAs, pages {rep.pages}, "
          f"THP pages (as base pages) {rep.thp_pages}, extra PTE tables {len(rep.extra_tables)}")
    for f in ("VmSize", "VmPTE", "RssAnon", "RssFile", "RssShmem"):
        print(f"  {f:<9} kernel {rep.kernel_status.get(f)} kB  emulated {rep.emulated_status.get(f)} kB")
    if args.save:
        if not hasattr(m, "save"):
            print("mmemu: --save needs machine snapshots (Machine.save), not in this build",
                  file=sys.stderr)
            return 1
        m.save(args.save)
        print(f"saved to {args.save}")
    return 0


def _add_procfs_commands(sub) -> None:
    """`mmemu compare PID` and `mmemu import PID --save FILE` (mmemu.procfs)."""
    cp = sub.add_parser("compare", help="what would classic and COW page-table forks of a live process cost")
    cp.add_argument("pid", type=int)
    cp.add_argument("--designs", default="classic,deferred,eager")
    cp.add_argument("--memory", default="64G", help="emulated physical memory (default 64G)")
    cp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    cp.add_argument("--check", action="store_true", help="run the invariant checker afterwards")
    cp.add_argument("--stop", action="store_true", help="SIGSTOP the process while reading it")
    cp.set_defaults(func=cmd_compare)
    ip = sub.add_parser("import", help="import a live process (and save a machine snapshot)")
    ip.add_argument("pid", type=int)
    ip.add_argument("--save", metavar="FILE", help="write a machine snapshot (Machine.save)")
    ip.add_argument("--memory", default="64G", help="emulated physical memory (default 64G)")
    ip.add_argument("--contents", action="store_true", help="copy page contents where readable")
    ip.add_argument("--stop", action="store_true", help="SIGSTOP the process while reading it")
    ip.set_defaults(func=cmd_import)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="mmemu", description="Linux memory-management emulator")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ft = sub.add_parser("fork-table", help="reproduce the COW page table RFC's fork table")
    ft.add_argument("--size", default="1G", help="mapping size (default 1G)")
    ft.add_argument("--memory", default="32G", help="emulated physical memory (default 32G)")
    ft.add_argument("--layout", default="typical", choices=["typical", "bare"],
                    help="the forking process: a small C program's layout (default) or empty")
    ft.add_argument("--designs", default="classic,deferred,eager",
                    help="comma-separated columns: classic, deferred, eager (default), "
                         "cow-pmd, cow-pud (whole-table COW, both accounting modes) or "
                         "cow-pmd-deferred, cow-pmd-eager, cow-pud-deferred, cow-pud-eager")
    ft.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ft.add_argument("--check", action="store_true", help="run the invariant checker afterwards")
    ft.add_argument("--quiet", action="store_true", help="no progress output")
    ft.set_defaults(func=cmd_fork_table)
    from .bench.cli import add_parser as add_bench_parser
    add_bench_parser(sub)
    from .bench.cow_levels import add_parser as add_cow_levels_parser
    add_cow_levels_parser(sub)
    _add_procfs_commands(sub)
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"mmemu: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`mmemu fork-table | head`): exit quietly, as CLI tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
