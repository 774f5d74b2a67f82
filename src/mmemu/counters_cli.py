"""``mmemu counters``: every vmstat counter of ``Machine.vmstat()`` with what it counts and
the kernel function that counts it (mmemu.stats.COUNTER_HELP and COUNTED_BY)."""
from __future__ import annotations

import argparse
import json
from typing import Any

from .stats import COUNTED_BY, COUNTER_HELP

HELP = "list every vmstat counter with its meaning and the kernel function that counts it"


def add_parser(sub: Any) -> None:
    """Register ``mmemu counters``."""
    c = sub.add_parser("counters", help=HELP, description=HELP)
    c.add_argument("--json", action="store_true",
                   help="print {name: {help, counted_by}} as JSON instead of a table")
    c.set_defaults(func=cmd_counters)


def cmd_counters(args: argparse.Namespace) -> int:
    rows = {k: {"help": v, "counted_by": COUNTED_BY.get(k, "")} for k, v in COUNTER_HELP.items()}
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    w = max(len(k) for k in rows) + 2
    print(f"{'counter':<{w}}meaning / counted by (kernel function)")
    for k, r in rows.items():
        print(f"{k:<{w}}{r['help']}")
        print(f"{'':<{w}}  {r['counted_by'] or '(mmemu only)'}")
    return 0
