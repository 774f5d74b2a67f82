"""mmemu.costmodel: predicted kernel time from work counters, the profile format, the fit,
and `mmemu calibrate` against the live kernel (tiny sizes, few repeats)."""
import json

import numpy as np
import pytest

from mmemu.cli import main
from mmemu.costmodel import TERMS, load_profile, predict
from mmemu.costmodel.calibrate import fit
from mmemu.costmodel.emulate import add, fork_then_write
from mmemu.costmodel.profile import DEFAULT, UNITS, Profile

pytestmark = pytest.mark.one_design
MIB = 1 << 20
UNIT = {u: 0.0 for u in UNITS}


def profile(**units):
    return Profile("test", {**UNIT, **units})


def test_fork_counters_priced_term_by_term():
    p = profile(fork_fixed=100e-6, fork_table=2e-6, fork_pte=50e-9, pgtable_alloc=1e-6)
    pr = predict({"forks": 1, "pgtable_alloc": 35, "fork_ptes_copied": 16384,
                  "fork_pte_tables_copied": 32, "fork_ptes_wrprotected": 16384}, p)
    # 100 us + 32 x 2 us + 16384 x 50 ns + (35 - 32) upper-level tables x 1 us
    assert pr.seconds == pytest.approx(100e-6 + 64e-6 + 819.2e-6 + 3e-6, rel=1e-12)
    assert pr.terms["pgtable.alloc"]["count"] == 3
    assert pr.terms["fork.pte"]["count"] == 16384
    assert pr.unpriced == {}
    assert "fork.table" in str(pr) and "16384" in str(pr)


def test_the_emulated_fork_then_write_is_priced_as_the_kernel_work():
    em = fork_then_write(64 * MIB, "classic", check=True)
    # the warm-up fork already write-protected the parent's PTEs, as the kernel helper's
    # earlier rounds do: the measured fork copies them without write-protecting any
    assert em["fork"] == {"forks": 1, "pgtable_alloc": 35, "fork_ptes_copied": 16384,
                          "fork_pte_tables_copied": 32}
    assert em["write"] == {"pgfault": 16384, "cow_fault": 16384, "pgalloc": 16384}
    p = profile(fork_fixed=1e-4, fork_table=1e-6, fork_pte=1e-8, cow_fault_warm=2e-6, pgtable_alloc=5e-7)
    got = predict(add(em["fork"], em["write"]), p)
    assert got.seconds == pytest.approx(1e-4 + 32e-6 + 16384e-8 + 3 * 5e-7 + 16384 * 2e-6, rel=1e-12)
    deferred = fork_then_write(64 * MIB, "deferred")
    assert deferred["fork"]["cow_pte_tables_shared"] == 32
    assert deferred["write"]["cow_pte_tables_duplicated"] == 32
    assert predict(deferred["write"], p).terms["cow_pte.pte"]["count"] == 16384


def test_every_counter_is_priced_once_and_unknown_work_is_listed():
    counters = [t[2] for t in TERMS]
    assert len(counters) == len(set(counters))
    assert all(t[4] in UNITS for t in TERMS)
    pr = predict({"mremap_ptes_moved": 7, "nr_free_pages": -5, "pgfault": 3}, profile())
    assert pr.unpriced == {"mremap_ptes_moved": 7} and pr.seconds == 0


def test_bad_counters_and_profiles_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="negative work counters"):
        predict({"fork_ptes_copied": -1}, profile())
    with pytest.raises(ValueError, match="cannot read cost profile"):
        load_profile(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not JSON"):
        load_profile(tmp_path / "bad.json")
    (tmp_path / "short.json").write_text(json.dumps({"units": {"fork_pte": 1e-8}}))
    with pytest.raises(ValueError, match="missing or non-numeric units"):
        load_profile(tmp_path / "short.json")


def test_the_shipped_profile_was_measured_here_and_says_so():
    doc = json.loads(DEFAULT.read_text())
    assert doc["default"] is True and "shipped" in doc["_doc"]
    assert doc["kernel"].startswith("6.") and doc["cpu"]
    prof = load_profile()
    assert prof.name.startswith("default") and all(prof.units[u] >= 0 for u in UNITS)
    assert prof.units["fork_pte"] > 0 and prof.units["anon_fault"] > prof.units["zero_fault"] > 0
    for op, f in doc["fits"].items():
        assert len(f["points"]) >= 9 and 0 <= f["rms_residual"] <= f["max_residual"], op
    held = {v["size"] for v in doc["validation"]}
    fitted = {p["size"] for f in doc["fits"].values() for p in f["points"]}
    assert held == {64 * MIB, 256 * MIB, 1 << 30, 4 << 30} and not held & fitted


def test_fit_recovers_exact_costs_and_keeps_them_non_negative():
    pts = [{"a": a, "b": b, "min_s": 3e-6 * a + 5e-8 * b} for a, b in ((1, 10), (2, 500), (8, 100), (3, 7))]
    f = fit(pts, ("a", "b"), ("ua", "ub"))
    assert f["coef_s"] == pytest.approx([3e-6, 5e-8], rel=1e-9)
    assert f["max_residual"] < 1e-9
    # data that a negative cost would fit better: the cost is held at zero, the rest refitted
    pts = [{"a": 1, "b": b, "min_s": t} for b, t in ((1, 2.0), (2, 1.5), (3, 1.0))]
    f = fit(pts, ("a", "b"), ("ua", "ub"))
    assert f["coef_s"][1] == 0 and f["coef_s"][0] > 0
    assert [p["fit_s"] for p in pts] == pytest.approx([f["coef_s"][0]] * 3)


def test_calibrate_quick_on_the_live_kernel(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert main(["calibrate", "--quick", "--quiet", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "validation at held-out sizes" in text and "rms" in text
    prof = load_profile(out)
    doc = json.loads(out.read_text())
    assert doc["default"] is False and doc["kernel"] and "minimum of 3 repeats" in doc["statistic"]
    assert prof.units["anon_fault"] > 0 and prof.units["cow_fault_warm"] > 0
    for f in doc["fits"].values():
        for p in f["points"]:
            assert p["min_s"] <= p["median_s"] and p["residual"] == pytest.approx(p["fit_s"] / p["min_s"] - 1)
            assert p["tables"] >= 1 and p["ptes"] >= 1
    (v,) = doc["validation"]
    assert v["size"] == 6 * MIB and v["fork_measured_s"] > 0
    assert v["fork_error"] == pytest.approx(v["fork_predicted_s"] / v["fork_measured_s"] - 1)


def test_fork_table_prints_the_prediction(capsys):
    assert main(["fork-table", "--size", "64M", "--layout", "bare", "--quiet"]) == 0
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if ln.startswith("predicted kernel (ms)"))
    values, note = row[len("predicted kernel (ms)"):].split("    cost profile ")
    classic, deferred, eager = (float(v) for v in values.split())
    # deferred shares the tables and takes no page reference; eager (v3-v5) takes every
    # page's reference and RSS at fork as a classic fork does, priced the same
    assert classic == eager > deferred > 0
    assert note.startswith("default")


def test_bench_prices_the_kernel_measurements_of_the_run():
    from mmemu.costmodel import bench
    results = {"kernel.fork.4M": {"kind": "kernel", "op": "fork", "size": 4 * MIB,
                                  "fork_cpu_s": [3e-3, 2e-3, 4e-3], "cow_cpu_s": [9e-3, 5e-3, 6e-3],
                                  "cow_s": [1, 1, 1]},
               "kernel.fork.16M": {"kind": "kernel", "op": "fork", "size": 16 * MIB, "skipped": "x"},
               "fork.classic.4M": {"kind": "mmemu", "op": "fork", "size": 4 * MIB}}
    p = profile(fork_fixed=1e-3, cow_fault_warm=1e-6)
    (row,) = bench.predictions(results, p)
    assert row["fork_measured_s"] == 2e-3 and row["fork_write_measured_s"] == 7e-3   # 2 + 5 ms
    assert row["fork_predicted_s"] == pytest.approx(1e-3)
    assert row["fork_write_predicted_s"] == pytest.approx(1e-3 + 1024e-6)
    rs = bench.ratios([row])
    assert rs == pytest.approx({"kernel.fork.4M.predicted/kernel.fork.4M": 2.0,
                                "kernel.fork_write.4M.predicted/kernel.fork_write.4M": 7e-3 / 2.024e-3})
    text = "\n".join(bench.lines([row], None))
    assert "classic fork 4M" in text and "-50.0%" in text


def test_calibrate_refuses_an_unwritable_output_before_measuring(tmp_path, capsys):
    assert main(["calibrate", "--quick", "-o", str(tmp_path / "no" / "p.json")]) == 2
    assert capsys.readouterr().err == (f"mmemu: --output {tmp_path / 'no' / 'p.json'}: directory "
                                       f"{tmp_path / 'no'} does not exist\n")
