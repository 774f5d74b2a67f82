"""`mmemu sweep`: a grid on Dask (a LocalCluster of 2 worker processes, or a given scheduler),
one tidy table, failed cells reported, resumed after an interruption."""
import pytest

pytest.importorskip("distributed", reason="sweeps need the sweep extra: pip install 'mmemu[sweep]'")
pytest.importorskip("pandas", reason="sweeps need the sweep extra: pip install 'mmemu[sweep]'")
pytest.importorskip("pyarrow", reason="sweeps need the sweep extra: pip install 'mmemu[sweep]'")

import pandas as pd  # noqa: E402

from mmemu.cli import main  # noqa: E402
from mmemu.costmodel.profile import UNITS, Profile  # noqa: E402
from mmemu.sweep import make_cells  # noqa: E402
from mmemu.sweep.run import batches, sweep  # noqa: E402

pytestmark = pytest.mark.one_design
MIB = 1 << 20
PROF = Profile("round", {**{u: 0.0 for u in UNITS}, "fork_fixed": 100e-6, "fork_table": 2e-6,
                         "fork_pte": 50e-9, "cow_fault_warm": 1e-6})
GRID = {"designs": ["classic", "deferred"], "sizes": ["4M", "8M"], "workloads": ["fork", "fork_write"]}


@pytest.fixture(scope="module")
def scheduler():
    from distributed import LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
        yield c.scheduler_address


def _row(t, design, size, workload):
    r = t[(t.design == design) & (t["size"] == size) & (t.workload == workload)]
    assert len(r) == 1
    return r.iloc[0]


def test_grid_on_a_local_cluster_of_two_workers(tmp_path):
    grid = {**GRID, "sizes": ["4M", "8M", "1000"]}
    res = sweep(grid, tmp_path / "t.parquet", workers=2, profile=PROF, progress=False)
    t = pd.read_parquet(tmp_path / "t.parquet")
    assert len(t) == 12 and res.computed == 12 and res.reused == 0 and res.failed == 4
    bad = t[t.error.notna()]
    assert set(bad["size"]) == {1000} and all("multiple of 4096" in e for e in bad.error)
    r = _row(t, "classic", 8 * MIB, "fork")
    assert (r.n_fork_ptes_copied, r.n_fork_pte_tables_copied, r.n_forks) == (2048, 4, 1)
    assert r.predicted_s == pytest.approx(100e-6 + 4 * 2e-6 + 2048 * 50e-9, rel=1e-12)
    assert r.PageTables_kB > 0 and r.emulated_s > 0
    r = _row(t, "deferred", 8 * MIB, "fork_write")
    assert (r.n_cow_pte_tables_shared, r.n_cow_pte_tables_duplicated, r.n_cow_fault) == (4, 4, 2048)
    assert pd.isna(r.n_fork_ptes_copied)
    assert set(t.commit) != {""} and t.key.is_unique


def test_resume_after_an_interruption_and_repeat_bit_identical(tmp_path, scheduler):
    out = tmp_path / "r.parquet"
    seen = []

    def interrupt(rows):
        seen.extend(rows)
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        sweep(GRID, out, scheduler=scheduler, profile=PROF, progress=False, batch=2, on_batch=interrupt)
    assert not out.exists() and len(seen) == 2
    assert len(list((tmp_path / "r.parquet.parts").glob("*.parquet"))) == 1
    res = sweep(GRID, out, scheduler=scheduler, profile=PROF, progress=False, batch=2)
    assert (res.reused, res.computed, res.failed) == (2, 6, 0) and len(res.table) == 8
    assert not (tmp_path / "r.parquet.parts").exists()
    again = sweep(GRID, out, scheduler=scheduler, profile=PROF, progress=False)
    assert (again.reused, again.computed) == (8, 0)
    fresh = sweep(GRID, tmp_path / "f.parquet", scheduler=scheduler, profile=PROF, progress=False)
    a, b = res.table.set_index("key"), fresh.table.set_index("key").loc[res.table.key]
    counters = [c for c in a.columns if c.startswith("n_")]
    assert counters and a[counters].equals(b[counters])


def test_cells_are_keyed_by_content_and_batched():
    cells = make_cells({**GRID, "workloads": ["fork", {"name": "fork", "stride": 16}]})
    assert len({c.key for c in cells}) == len(cells) == 8
    assert make_cells({**GRID, "workloads": ["fork", {"name": "fork", "stride": 16}]})[0].key == cells[0].key
    bs = batches(cells, 2)
    assert sorted(c.key for b in bs for c in b) == sorted(c.key for c in cells)
    assert len(bs) == 8 and len(batches(cells, 2, batch=3)) == 3
    with pytest.raises(ValueError, match="unknown workload 'sort'"):
        make_cells({**GRID, "workloads": ["sort"]})
    with pytest.raises(ValueError, match="unknown designs"):
        make_cells({**GRID, "designs": ["odf"]})


def test_cli_on_a_given_scheduler_with_plots(tmp_path, scheduler, capsys):
    pytest.importorskip("matplotlib", reason="plots need matplotlib")
    cfg = tmp_path / "grid.json"
    cfg.write_text('{"designs": ["classic", "eager"], "sizes": ["4M", "16M"], "workloads": ["fork", "fork_exit"]}')
    out = tmp_path / "s.parquet"
    assert main(["sweep", str(cfg), "-o", str(out), "--scheduler", scheduler, "--quiet",
                 "--plots", str(tmp_path / "plots"), "--kernel-points"]) == 0
    text = capsys.readouterr().out
    assert "8 cells" in text and "0 failed" in text
    t = pd.read_parquet(out)
    r = _row(t, "classic", 16 * MIB, "fork_exit")
    assert r.n_exits == 1 and r.n_ptes_zapped == 4096
    for name in ("sweep-fork-time.png", "sweep-pagetables.png", "sweep-workloads.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"


def test_cli_errors(tmp_path, capsys):
    cfg = tmp_path / "bad.json"
    cfg.write_text('{"designs": ["classic"], "sizes": ["4M"], "colour": 1}')
    assert main(["sweep", str(cfg)]) == 2
    assert "unknown keys ['colour']" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "none.json")]) == 2
    assert "cannot read sweep config" in capsys.readouterr().err


def test_bench_speedup_runs_serial_and_parallel():
    from mmemu.sweep.bench import speedup
    r = speedup(2, {"designs": ["classic", "deferred"], "sizes": ["4M"], "workloads": ["fork"]})
    assert r["cells"] == 2 and r["serial_s"] > 0 and r["parallel_s"] > 0
    assert r["ratio"] == pytest.approx(r["parallel_s"] / r["serial_s"])


def test_kernel_fork_points_are_measured_per_size():
    from mmemu.sweep.plot import kernel_forks
    pts = kernel_forks([4 * MIB, 8 * MIB, 4 * MIB], repeats=2)
    assert sorted(pts) == [4 * MIB, 8 * MIB] and all(v > 0 for v in pts.values())
