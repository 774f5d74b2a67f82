"""`mmemu bench`: run the benchmark plan, print one table, write JSON and a plot; record or
check the CI baselines (work counters exactly, timing ratios with the 2x rule)."""
from __future__ import annotations

import json
import statistics
import sys

HELP = "benchmark the hot paths against the real kernel, numpy and the reference model"


def add_parser(sub) -> None:
    b = sub.add_parser("bench", help=HELP, description=HELP)
    b.add_argument("--quick", action="store_true",
                   help="64 MiB only, few rounds (the CI timing pass, about 10 s)")
    b.add_argument("--json", metavar="FILE", help="write every measurement, ratio and target as JSON")
    b.add_argument("--plot", metavar="FILE.png", help="draw fork time and PageTables against size (needs matplotlib)")
    b.add_argument("--check-ratios", metavar="FILE",
                   help="fail (exit 1) when a tracked ratio is 2x worse than recorded in FILE")
    b.add_argument("--record-ratios", metavar="FILE",
                   help="run three times and record the median of each tracked ratio in FILE")
    b.add_argument("--record-counters", metavar="FILE",
                   help="only record the deterministic work counters in FILE (no timing)")
    b.add_argument("--check-counters", metavar="FILE",
                   help="only compare the work counters with FILE exactly (no timing)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_bench)


def _progress_bar(enabled):
    tty = sys.stderr.isatty()

    def show(i, n, label):
        if not enabled:
            return
        width = 30
        fill = width * i // n if n else width
        line = f"[{'#' * fill}{'.' * (width - fill)}] {i}/{n} {label}"
        if tty:
            sys.stderr.write("\r\033[K" + line + ("\n" if i >= n else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
    return show


def _ratios(results) -> dict:
    """The run's ratios, with the cost model's prediction errors (mmemu.costmodel.bench)."""
    from . import report
    from ..costmodel import bench as costmodel
    return {**report.ratios(results), **costmodel.ratios(costmodel.predictions(results))}


def _preflight(args) -> None:
    """Everything bench needs, checked before it measures anything: writable output paths,
    readable input files, matplotlib for --plot."""
    from ..cliutil import input_path, output_path, require
    for opt in ("json", "plot", "record_ratios", "record_counters"):
        output_path(getattr(args, opt), "--" + opt.replace("_", "-"))
    for opt in ("check_ratios", "check_counters"):
        input_path(getattr(args, opt), "--" + opt.replace("_", "-"))
    if args.plot:
        require("matplotlib", "--plot", "plot")


def cmd_bench(args) -> int:
    from . import counters, report, runner, track
    _preflight(args)
    if args.record_counters or args.check_counters:
        if args.record_counters:
            counters.record(args.record_counters)
            print(f"recorded the work counters of {len(counters.SCENARIOS)} scenarios in {args.record_counters}")
        if args.check_counters:
            diffs = counters.compare(args.check_counters)
            if diffs:
                print("work counters differ from " + args.check_counters + ":\n  " + "\n  ".join(diffs))
                print(f"if the change is intended: mmemu bench --record-counters {args.check_counters}")
                return 1
            print(f"work counters match {args.check_counters} ({len(counters.SCENARIOS)} scenarios)")
        return 0
    progress = _progress_bar(not args.quiet)
    jobs = runner.plan(args.quick)
    results = runner.run(jobs, progress)
    rs = _ratios(results)
    if args.record_ratios:
        # record each ratio's median over three runs, not one run's luck
        runs = [rs] + [_ratios(runner.run(jobs, progress)) for _ in range(2)]
        rs = {k: statistics.median([r[k] for r in runs if k in r]) for k in rs}
    failures = []
    if args.check_ratios:
        failures, notes = track.check(args.check_ratios, rs)
        if failures:
            # shared machines are noisy: measure once more, keep each ratio's better value
            sys.stderr.write(f"{len(failures)} ratio(s) 2x worse; measuring again to confirm\n")
            again = _ratios(runner.run(jobs, progress))
            rs = {k: min(v, again.get(k, v)) for k, v in rs.items()}
            failures, notes = track.check(args.check_ratios, rs)
    info = report.meta(args.quick)
    tg = report.targets(results, rs)
    print(report.table(results, rs, tg, info))
    from ..costmodel import bench as costmodel
    predicted = costmodel.predictions(results)
    print("\n".join(costmodel.lines(predicted)))
    if not args.quick:
        from ..sweep.bench import report as sweep_report; print(sweep_report())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": info, "results": results, "ratios": rs, "targets": tg,
                       "predicted": predicted}, f, indent=1)
    if args.plot:
        from .plot import plot
        plot(results, args.plot)
    if args.record_ratios:
        kept = track.record(args.record_ratios, rs)
        print(f"\nrecorded {len(kept)} tracked ratios in {args.record_ratios}")
    if args.check_ratios:
        print(f"\ntracked ratios against {args.check_ratios} (fail at {track.FACTOR:g}x worse):")
        for n in notes:
            print("  ok   " + n)
        for name, rec, now in failures:
            print(f"  FAIL {name}: {now:.4g}, recorded {rec:.4g} (x{now / rec:.2f})")
        if failures:
            return 1
    return 0
