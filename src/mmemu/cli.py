"""The ``mmemu`` command.

    mmemu fork-table [--size 1G] [--memory 32G] [--layout typical|bare]
                     [--designs classic,deferred,eager] [--repeat 5] [--json] [--check]
    mmemu bench [--quick] [--json FILE] [--plot FILE.png] ...
    mmemu compare PID | --load FILE.mms      mmemu import PID [--save FILE]
    mmemu counters

Each subcommand lives in its own module with an ``add_parser(sub)`` function; adding one
is one line in SUBCOMMANDS. Every subcommand checks its arguments before it works and
runs under mmemu.cliutil.guard: an error is one line ``mmemu: ...`` and exit status 2.
"""
from __future__ import annotations

import importlib
import sys
from typing import List, Optional

from . import __version__
from .cliutil import Parser, guard

# the modules whose add_parser(sub) registers a subcommand, in the order `mmemu -h` lists them
SUBCOMMANDS = [
    "mmemu.forktable",
    "mmemu.bench.cli",
    "mmemu.bench.cow_levels",   # cow-levels: the whole-table COW study
    "mmemu.procfs_cli",
    "mmemu.counters_cli",
    "mmemu.trace.cli",          # record, trace info, replay
    "mmemu.costmodel.cli",      # calibrate, reproduce, sweep
]


def parser() -> Parser:
    """The ``mmemu`` argument parser with every subcommand registered."""
    ap = Parser(prog="mmemu", description="mmemu: an emulator of Linux memory management "
                "(page tables, faults, fork, copy-on-write page tables)")
    ap.add_argument("--version", action="version", version=f"mmemu {__version__}")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND", title="commands")
    for name in SUBCOMMANDS:
        importlib.import_module(name).add_parser(sub)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``mmemu`` with argv (default sys.argv[1:]); returns the exit status."""
    try:
        ap = parser()
        args = ap.parse_args(argv)
    except SystemExit as e:        # --help, --version, a usage error: argparse's status
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    if args.cmd is None:
        ap.print_help()
        return 0
    return guard(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
