"""The deterministic work counters of fixed scenarios (mmemu.bench.counters) equal the ones
recorded in benchmarks/baseline.json, exactly: a change in the work any hot path does must
be recorded in the same commit (`mmemu bench --record-counters benchmarks/baseline.json`)."""
import json
from pathlib import Path

import pytest

from mmemu.bench import counters

BASELINE = Path(__file__).resolve().parents[2] / "benchmarks" / "baseline.json"


@pytest.mark.one_design
def test_work_counters_match_the_recorded_baseline():
    recorded = json.loads(BASELINE.read_text())["scenarios"]
    diffs = counters.diff(recorded, counters.compute())
    assert not diffs, (
        "work counters differ from benchmarks/baseline.json:\n  " + "\n  ".join(diffs)
        + "\nIf the change is intended, re-record them in this commit:\n"
          "  mmemu bench --record-counters benchmarks/baseline.json")


@pytest.mark.one_design
def test_baseline_covers_the_hot_paths():
    recorded = json.loads(BASELINE.read_text())["scenarios"]
    fork = recorded["fork 64M classic"]
    assert fork["fork_ptes_copied"] == 16384 and fork["fork_pte_tables_copied"] == 32
    assert recorded["fork 64M deferred"]["cow_pte_tables_shared"] == 32
    assert "fork_ptes_copied" not in recorded["fork 64M deferred"]
    brk = recorded["break_cow_pte 64M deferred"]
    assert brk["cow_pte_tables_duplicated"] == 32 and brk["cow_fault"] == 32
    for d in ("classic", "deferred", "eager"):
        assert recorded[f"fork then child writes 16M {d}"]["pages_copied"] == 4096


@pytest.mark.one_design
def test_diff_names_every_change():
    a = {"s": {"x": 1, "y": 2}, "gone": {}}
    b = {"s": {"x": 1, "y": 3, "z": 4}, "new": {}}
    d = counters.diff(a, b)
    assert "s: y recorded 2, now 3" in d and "s: z recorded 0, now 4" in d
    assert "gone: recorded but no longer computed" in d and "new: new scenario, not recorded" in d
