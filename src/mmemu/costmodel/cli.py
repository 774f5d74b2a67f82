"""`mmemu calibrate` (and the registration of this package's other subcommands)."""
from __future__ import annotations

import sys

HELP = "measure this machine's kernel and write a cost profile for predicted kernel time"


def add_parser(sub) -> None:
    """Register calibrate, reproduce and sweep on the `mmemu` sub-parser."""
    c = sub.add_parser("calibrate", help=HELP, description=HELP)
    c.add_argument("-o", "--output", metavar="PROFILE.json", default="profile.json",
                   help="where to write the profile (default profile.json)")
    c.add_argument("--quick", action="store_true", help="tiny sizes, 3 repeats (a smoke test)")
    c.add_argument("--quiet", action="store_true", help="no progress output")
    c.set_defaults(func=cmd_calibrate)
    from ..reproduce.cli import add_parser as add_reproduce
    add_reproduce(sub)
    from ..sweep.cli import add_parser as add_sweep
    add_sweep(sub)


def _progress(enabled):
    def show(label):
        if enabled:
            sys.stderr.write(f"calibrate: {label}\n")
            sys.stderr.flush()
    return show


def format_profile(prof) -> str:
    """The units, every fit's quality and the held-out validation, as text."""
    from ..bench.report import fmt_time
    m = prof.meta
    lines = [f"cost profile: {prof.name}; Linux {m.get('kernel')}, {m.get('cpus')} CPUs "
             f"({m.get('cpu')}); each point the {m.get('statistic')}", "", "units:"]
    lines += [f"  {k:<16} {fmt_time(v)}" for k, v in prof.units.items()]
    lines += ["", "fits (residual = fit / measured - 1):"]
    for op, f in m.get("fits", {}).items():
        terms = ", ".join(f"{r} {fmt_time(c)}" for r, c in zip(f["regressors"], f["coef_s"]))
        lines.append(f"  {op:<12} {terms}; {len(f['points'])} points, rms {f['rms_residual']:.1%}, "
                     f"max {f['max_residual']:.1%}")
    lines += ["", "validation at held-out sizes (classic fork; fork + child writes every page):"]
    for v in m.get("validation", []):
        s = f"{v['size'] >> 20} MiB"
        if "skipped" in v:
            lines.append(f"  {s:>9}  skipped: {v['skipped']}")
            continue
        lines.append(f"  {s:>9}  fork measured {fmt_time(v['fork_measured_s'])}, predicted "
                     f"{fmt_time(v['fork_predicted_s'])} ({v['fork_error']:+.1%});  fork+write measured "
                     f"{fmt_time(v['fork_write_measured_s'])}, predicted "
                     f"{fmt_time(v['fork_write_predicted_s'])} ({v['fork_write_error']:+.1%})")
    return "\n".join(lines)


def cmd_calibrate(args) -> int:
    from ..cliutil import output_path
    from .calibrate import calibrate
    from .profile import save
    output_path(args.output, "--output")
    prof = calibrate(quick=args.quick, progress=_progress(not args.quiet))
    save(prof, args.output)
    print(format_profile(prof))
    print(f"\nwrote {args.output}")
    return 0
