"""``mmemu compare PID`` and ``mmemu import PID --save FILE`` (mmemu.procfs): what classic
and COW page-table forks of a live process (or of a saved import) would cost, and the
import itself."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .cliutil import UsageError, choices_arg, input_path, output_path, size_arg
from .compare import DESIGN_GROUPS, DESIGNS, expand_designs, compare, compare_loaded, format_compare
from .machine import Machine
from .procfs import ImportFailed, import_process

COMPARE_HELP = "what would classic and COW page-table forks of a live process cost"
IMPORT_HELP = "import a live process into an emulated machine (and save a machine snapshot)"


def add_parser(sub: Any) -> None:
    """Register ``mmemu compare`` and ``mmemu import``."""
    cp = sub.add_parser("compare", help=COMPARE_HELP, description=COMPARE_HELP)
    cp.add_argument("pid", type=int, nargs="?", help="the live process to import (or use --load)")
    cp.add_argument("--load", metavar="FILE.mms",
                    help="compare the imported process of a snapshot saved by 'mmemu import --save'")
    cp.add_argument("--designs", default="classic,deferred,eager",
                    help="comma-separated columns, each once: classic, deferred, eager (default all)")
    cp.add_argument("--memory", default="64G", help="emulated physical memory (default 64G)")
    cp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    cp.add_argument("--check", action="store_true", help="run the invariant checker afterwards")
    cp.add_argument("--stop", action="store_true", help="SIGSTOP the process while reading it")
    cp.set_defaults(func=cmd_compare)
    ip = sub.add_parser("import", help=IMPORT_HELP, description=IMPORT_HELP)
    ip.add_argument("pid", type=int, help="the live process to import")
    ip.add_argument("--save", metavar="FILE", help="write a machine snapshot (Machine.save)")
    ip.add_argument("--memory", default="64G", help="emulated physical memory (default 64G)")
    ip.add_argument("--contents", action="store_true", help="copy page contents where readable")
    ip.add_argument("--stop", action="store_true", help="SIGSTOP the process while reading it")
    ip.set_defaults(func=cmd_import)


def cmd_compare(args: argparse.Namespace) -> int:
    designs = expand_designs(choices_arg(args.designs, "--designs", [*DESIGNS, *DESIGN_GROUPS]))
    if (args.pid is None) == (args.load is None):
        raise UsageError("compare takes a PID or --load FILE.mms (one of them)")
    if args.load:
        input_path(args.load, "--load")
        res = compare_loaded(args.load, designs, check=args.check)
    else:
        memory = size_arg(args.memory, "--memory", minimum=64 << 10)
        try:
            res = compare(args.pid, designs, memory=memory, check=args.check, stop=args.stop)
        except ImportFailed as e:
            print(f"mmemu: cannot import process {args.pid}: {e.strerror or e}", file=sys.stderr)
            return 1
    print(json.dumps(res, indent=2) if args.json else format_compare(res))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    memory = size_arg(args.memory, "--memory", minimum=64 << 10)
    output_path(args.save, "--save")
    m = Machine(memory)
    try:
        p = import_process(m, args.pid, contents=args.contents, stop=args.stop)
    except ImportFailed as e:
        print(f"mmemu: cannot import process {args.pid}: {e.strerror or e}", file=sys.stderr)
        return 1
    rep = p.import_report
    print(f"imported process {args.pid} ({p.imported_comm}) as pid {p.pid}: {rep.vmas} VMAs, "
          f"pages {rep.pages}, THP pages (as base pages) {rep.thp_pages}, "
          f"extra PTE tables {len(rep.extra_tables)}")
    for f in ("VmSize", "VmPTE", "RssAnon", "RssFile", "RssShmem"):
        print(f"  {f:<9} kernel {rep.kernel_status.get(f)} kB  emulated {rep.emulated_status.get(f)} kB")
    if args.save:
        m.save(args.save)
        print(f"saved to {args.save}")
    return 0
