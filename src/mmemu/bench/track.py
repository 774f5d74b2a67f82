"""Regression tracking of timing ratios: a recorded set (benchmarks/ratios.json) and the
2x rule -- a tracked ratio (mmemu / same-run baseline, lower is better) fails when it gets
2 times worse or more than its recorded value."""
from __future__ import annotations

import json
from pathlib import Path

FACTOR = 2.0
# the ratios the quick pass tracks (measured at 64 MiB, whole-table COW's at 1 and 16 GiB)
TRACKED = [
    "fork.classic.64M/kernel.fork",
    "fork.classic.64M/numpy.fork",
    "fork.deferred.64M/kernel.fork",
    "fork.eager.64M/kernel.fork",
    "cow_data.64M.warm/kernel.cow.warm",
    "cow_data.64M.warm/numpy.cow_data",
    "fork_write.classic.64M/reference.fork_write",
    "fork.classic.64M/reference.fork",
    "touch.64M/numpy.touch",
    "break_cow_pte.deferred.64M/numpy.fork",
    "munmap.64M/numpy.munmap",
    "exit.64M/numpy.munmap",
    "read.64M/numpy.read",
    "two_machines.64M/two_machines.64M.serial",
    "kernel.fork.64M.predicted/kernel.fork.64M",       # cost model: max(pred/meas, meas/pred)
    "kernel.fork_write.64M.predicted/kernel.fork_write.64M",
    # whole-table COW (report.UPPER_RATIOS)
    "fork.cow-pmd-deferred.16G/fork.deferred.16G",
    "fork.cow-pud-deferred.16G/fork.cow-pud-deferred.1G",
    "break_cow_pte.cow-pmd-deferred.1G/break_cow_pte.deferred.1G",
    "cow_rewrite.cow-pmd-deferred.1G/cow_rewrite.deferred.1G",
]


def record(path, ratios: dict) -> dict:
    kept = {k: round(ratios[k], 6) for k in TRACKED if k in ratios}
    doc = {"_doc": "Same-run timing ratios (mmemu median / baseline median, lower is better) "
                   "of `mmemu bench --quick`; CI fails when one is 2x worse or more. Re-record "
                   "with `mmemu bench --quick --record-ratios benchmarks/ratios.json`.",
           "factor": FACTOR, "ratios": kept}
    Path(path).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return kept


def check(path, ratios: dict) -> tuple:
    """(failures, notes): failures are (name, recorded, now) at or beyond the factor."""
    doc = json.loads(Path(path).read_text())
    factor = doc.get("factor", FACTOR)
    failures, notes = [], []
    for name, rec in sorted(doc["ratios"].items()):
        now = ratios.get(name)
        if now is None:
            notes.append(f"{name}: not measured in this run (baseline unavailable here)")
        elif now >= factor * rec:
            failures.append((name, rec, now))
        else:
            notes.append(f"{name}: {now:.4g} (recorded {rec:.4g}, x{now / rec:.2f})")
    return failures, notes
