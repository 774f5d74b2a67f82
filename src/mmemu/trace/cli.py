"""``mmemu record``, ``mmemu trace info`` and ``mmemu replay`` (registered by mmemu.cli)."""
from __future__ import annotations

import json
import sys

RECORD_HELP = "record a program's page faults and memory system calls with tracefs"
REPLAY_HELP = "replay a recorded trace under each page-table design"


def add_parser(sub) -> None:
    r = sub.add_parser("record", help=RECORD_HELP, description=RECORD_HELP,
                       usage="mmemu record -o TRACE [options] (-- CMD [ARGS...] | --pid PID)")
    r.add_argument("-o", "--output", required=True, metavar="TRACE", help="the trace file to write")
    r.add_argument("--pid", type=int, help="attach to this running process and its descendants")
    r.add_argument("--duration", type=float, metavar="S",
                   help="stop after S seconds (a command still running then gets SIGTERM)")
    r.add_argument("--interval", type=float, default=0.5, metavar="S",
                   help="seconds between periodic checkpoints (default 0.5)")
    r.add_argument("--buffer-kb", type=int, default=32768,
                   help="trace buffer per cpu in KiB (default 32768)")
    r.add_argument("--memory", default="64G", help="emulated memory of the starting snapshot")
    r.add_argument("--no-stop", action="store_true",
                   help="read checkpoints without stopping the processes (inexact)")
    r.add_argument("command", nargs="*", help="the command to run (after --)")
    r.set_defaults(func=cmd_record)
    t = sub.add_parser("trace", help="inspect a trace file", description="inspect a trace file "
                       "written by mmemu record")
    tsub = t.add_subparsers(dest="trace_cmd", required=True, metavar="COMMAND",
                            help="what to do with the trace")
    info = "processes, events per kind, duration, lost events, checkpoints"
    ti = tsub.add_parser("info", help=info, description=info)
    ti.add_argument("trace", metavar="TRACE", help="the trace file")
    ti.add_argument("--json", action="store_true", help="print JSON")
    ti.set_defaults(func=cmd_trace_info)
    p = sub.add_parser("replay", help=REPLAY_HELP, description=REPLAY_HELP)
    p.add_argument("trace", metavar="TRACE", help="the trace file (mmemu record -o TRACE)")
    p.add_argument("--designs", default="classic,deferred,eager",
                   help="comma-separated designs, as fork-table takes them (default classic,deferred,eager)")
    p.add_argument("--json", metavar="FILE", help="write every design's results and checkpoints as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="PageTables and RSS over time (needs matplotlib)")
    p.add_argument("--check", action="store_true", help="run the invariant checker after each replay")
    p.set_defaults(func=cmd_replay)


def cmd_record(args) -> int:
    from .record import RecordError, record
    from .tracefs import TracefsUnavailable
    if (args.pid is None) == (not args.command):
        print("mmemu: record needs a command (after --) or --pid PID, not both", file=sys.stderr)
        return 2
    try:
        s = record(args.output, command=args.command or None, pid=args.pid,
                   duration=args.duration, interval=args.interval, buffer_kb=args.buffer_kb,
                   memory=args.memory, stop_checkpoints=not args.no_stop,
                   log=lambda m: print(m, file=sys.stderr))
    except TracefsUnavailable as e:
        print(f"mmemu: cannot record: {e.strerror}", file=sys.stderr)
        return 2
    except RecordError as e:
        print(f"mmemu: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {s['events']} events, {s['checkpoints']} checkpoints, "
          f"{s['lost']} lost, {s['elapsed']:.2f} s"
          + (f", exit status {s['exit_status']}" if s["exit_status"] is not None else "")
          + (" (interrupted: partial trace)" if s["interrupted"] else ""))
    if s["lost"]:
        print(f"mmemu: the recording lost {s['lost']} events: the trace buffer filled faster "
              f"than it was read (try a larger --buffer-kb)", file=sys.stderr)
        return 1
    return 130 if s["interrupted"] else 0


def cmd_trace_info(args) -> int:
    from .trace import load
    t = load(args.trace)
    if args.json:
        print(json.dumps({"meta": t.meta, "counts": t.counts(), "events": len(t.events),
                          "checkpoints": len(t.checkpoints), "duration": t.duration()}, indent=2))
    else:
        print(t.info())
    return 0


def cmd_replay(args) -> int:
    from ..cliutil import output_path, require
    from .replay import replay
    from .trace import load
    output_path(args.json, "--json")
    output_path(args.plot, "--plot")
    if args.plot:
        require("matplotlib", "--plot", "plot")
    t = load(args.trace)
    designs = [d.strip() for d in args.designs.split(",") if d.strip()]
    res = replay(t, designs, check=args.check)
    print(format_results(t, res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({d: {**r.to_dict(), "predicted": predicted(r)} for d, r in res.items()},
                      f, indent=1)
    if args.plot:
        plot(res, args.plot)
    return 0


def format_results(t, res) -> str:
    w = 18
    rs = list(res.values())
    lines = []
    if t.meta.get("lost_events"):
        lines.append(f"WARNING: the recording lost {t.meta['lost_events']} events; the numbers "
                     f"below are lower bounds")
    lines.append(f"{'':<34}" + "".join(f"{r.title:>{w}}" for r in rs))

    def row(label, fn, fmt="{}"):
        lines.append(f"{label:<34}" + "".join(f"{fmt.format(fn(r)):>{w}}" for r in rs))
    row("events replayed", lambda r: r.events)
    row("  faults / syscalls", lambda r: f"{r.faults}/{r.syscalls}")
    row("  forks / execs / exits", lambda r: f"{r.forks}/{r.execs}/{r.exits}")
    row("PageTables peak (kB)", lambda r: r.peak_pagetables_kb)
    row("PageTables final (kB)", lambda r: r.final_pagetables_kb)
    row("PageTables added by forks (kB)", lambda r: r.pagetables_added_by_forks_kb)
    row("COW faults", lambda r: r.cow_faults)
    row("tables shared / broken", lambda r: f"{r.tables_shared}/{r.tables_broken}")
    row("tables copied at fork", lambda r: r.tables_copied)
    row("bytes copied", lambda r: r.bytes_copied)
    row("fork time (ms)", lambda r: r.fork_seconds * 1e3, "{:.2f}")
    row("emulator time (s)", lambda r: r.emulated_seconds, "{:.3f}")
    row("events/s", lambda r: r.events / r.emulated_seconds if r.emulated_seconds else 0, "{:.0f}")
    pred = {r.design: predicted(r) for r in rs}
    row("predicted kernel time, forks (ms)", lambda r: pred[r.design]["forks_s"] * 1e3, "{:.3f}")
    row("predicted kernel time, all (ms)", lambda r: pred[r.design]["total_s"] * 1e3, "{:.3f}")
    for f in ("VmPTE", "RssAnon"):
        row(f"checkpoints with {f} = kernel's", lambda r, f=f: _agree(r, f))
    row("checkpoints with faults = minflt", lambda r: _agree(r, "faults_since_first_checkpoint"))
    for r in rs:
        if r.syscall_mismatches:
            m = r.syscall_mismatches[0]
            lines.append(f"{r.design}: {len(r.syscall_mismatches)} syscall result(s) differ, first "
                         f"at event {m['event']}: {m['syscall']} returned {m['recorded']} on Linux, "
                         f"{m['replayed']} here")
        if r.refused_faults:
            f0 = r.refused_faults[0]
            lines.append(f"{r.design}: {sum(r.refused_fault_count.values())} fault(s) the emulator "
                         f"would not take, first at event {f0['event']} ({f0['address']}: {f0['reason']})")
    if rs and rs[0].differences:
        lines.append("differences from the kernel, by cause:")
        lines += ["  " + d for d in rs[0].differences]
    return "\n".join(lines)


def predicted(r, profile=None) -> dict:
    """The cost model's kernel time for one design's replay (mmemu.costmodel, the default
    profile unless one is given): the forks alone (their vmstat delta) and the whole trace,
    with the seconds per cost term of the whole trace."""
    from ..costmodel.predict import predict
    forks = predict({**r.fork_vmstat, "forks": r.forks}, profile)
    total = predict({**r.vmstat, "forks": r.forks, "exits": r.exits}, profile)
    return {"profile": total.profile, "forks_s": forks.seconds, "total_s": total.seconds,
            "terms_s": {k: t["seconds"] for k, t in total.terms.items()}}


def _agree(r, f) -> str:
    cps = [c for c in r.checkpoints if c["emulated"] is not None and c["kernel"][f] >= 0]
    same = sum(1 for c in cps if c["emulated"][f] == c["kernel"][f])
    return f"{same}/{len(r.checkpoints)}"


def plot(res, path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("--plot needs matplotlib (pip install matplotlib)") from None
    fig, (a1, a2) = plt.subplots(2, 1, sharex=True, figsize=(8, 6))
    for d, r in res.items():
        if not r.timeline:
            continue
        _, ts, pt, rss = zip(*r.timeline)
        a1.plot(ts, pt, label=r.title)
        a2.plot(ts, rss, label=r.title)
    a1.set_ylabel("PageTables (kB)")
    a2.set_ylabel("RSS of the traced processes (kB)")
    a2.set_xlabel("trace time (s)")
    a1.legend()
    fig.tight_layout()
    fig.savefig(path)
