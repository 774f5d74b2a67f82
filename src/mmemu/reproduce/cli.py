"""`mmemu reproduce [NAME...]`: print each reproduced figure and write its plot."""
from __future__ import annotations

from pathlib import Path

HELP = "reproduce the published evaluations: published number, mmemu's work, predicted time"


def add_parser(sub) -> None:
    from .figures import FIGURES
    r = sub.add_parser("reproduce", help=HELP, description=HELP)
    r.add_argument("names", nargs="*", metavar="NAME", help=f"figures (default all): {', '.join(FIGURES)}")
    r.add_argument("--profile", metavar="PROFILE.json", help="cost profile (default: the shipped one)")
    r.add_argument("--plots", metavar="DIR", default=".", help="where to write NAME.png (default .)")
    r.add_argument("--no-plots", action="store_true", help="print only")
    r.add_argument("--trace", metavar="FILE", help="afl-sqlite: a recorded AFL++ fork-server trace "
                   "(default: record a few executions here, or skip with the reason)")
    r.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args) -> int:
    from .figures import reproduce
    from ..costmodel.profile import load
    prof = load(args.profile)
    figs = reproduce(args.names, prof, args.trace)
    if not args.no_plots:
        Path(args.plots).mkdir(parents=True, exist_ok=True)
    print(f"cost profile: {prof.name}; ratio = mmemu / published\n")
    for fig in figs:
        print(fig)
        if not args.no_plots and not fig.skipped:
            from .plot import draw
            path = Path(args.plots) / f"{fig.name}.png"
            draw(fig, path)
            print(f"  plot: {path}")
        print()
    return 0
