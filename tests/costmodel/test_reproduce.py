"""`mmemu reproduce`: the registry of published figures, each with mmemu's number beside it."""
import pytest

from mmemu.cli import main
from mmemu.costmodel.profile import UNITS, Profile
from mmemu.reproduce import reproduce

pytestmark = pytest.mark.one_design
# a profile with round numbers, so the expected values can be worked out by hand
PROF = Profile("round", {**{u: 0.0 for u in UNITS}, "fork_fixed": 100e-6, "fork_table": 2e-6,
                         "fork_pte": 50e-9, "cow_fault_warm": 1e-6})


def test_seed_meminfo_at_1g():
    (fig,) = reproduce(["seed-meminfo"], PROF)
    rows = {r.quantity: r for r in fig.rows}
    assert rows["classic: PageTables delta"].published == 2076
    assert rows["deferred: PageTables delta"].published == 92
    # the typical layout: the 1 GiB's 512 tables + the program's; COW PTE shares them;
    # the child's new tables are all the PageTables growth, its PGD aside
    classic = rows["classic: PageTables delta"].mmemu
    assert 512 * 4 < classic <= 1.05 * 2076
    assert rows["classic: child VmPTE (v2-v5 letters)"].mmemu == classic - 4
    assert rows["deferred: PageTables delta"].mmemu <= 100
    assert rows["deferred: child VmPTE (v2-v5 letters)"].mmemu <= 60
    fork = rows["classic: predicted kernel fork"].mmemu
    assert fork > (100e-6 + 512 * 2e-6 + 262144 * 50e-9) * 1e3        # the region alone


def test_v2_fork_latency_with_round_units():
    (fig,) = reproduce(["v2-fork-latency"], PROF)
    rows = {r.quantity: r for r in fig.rows}
    # bare process, 512 MiB: 256 tables, 131072 PTEs copied; COW shares the 256 tables
    assert rows["classic fork at 512 MB"].mmemu == pytest.approx(
        (100e-6 + 256 * 2e-6 + 131072 * 50e-9) * 1e3, rel=1e-9)
    assert rows["COW PTE fork at 512 MB"].mmemu == pytest.approx((100e-6 + 256 * 2e-6) * 1e3, rel=1e-9)
    assert rows["classic fork at 512 MB"].ratio == pytest.approx(rows["classic fork at 512 MB"].mmemu / 10)
    assert "fork_ptes_copied=131072" in rows["classic fork at 512 MB"].work
    assert len(fig.series["classic (predicted)"]["y"]) == 10


def test_v2_fault_latency_with_round_units():
    (fig,) = reproduce(["v2-fault-latency"], PROF)
    seq = {r.quantity.split(":")[0]: r for r in fig.rows if "sequential" in r.quantity}
    # classic: one warm COW fault per page, 1 us each
    assert seq["classic"].mmemu == pytest.approx(1e-3, rel=1e-9)
    # COW PTE: the same faults plus each table duplicated (2 us + 512 entries x 50 ns) once
    assert seq["deferred"].mmemu == pytest.approx(1e-3 + (2e-6 + 512 * 50e-9) / 512 * 1e3, rel=1e-9)
    rnd = [r for r in fig.rows if "random" in r.quantity]
    assert [r.published for r in rnd] == [0.000028, 0.000027]
    assert all(0 < r.mmemu < 1e-3 for r in rnd)             # repeated pages do not fault again


def test_cli_prints_and_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="plots need the plot extra")
    assert main(["reproduce", "v2-fork-latency", "--plots", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "classic fork at 512 MB" in out and "10 ms" in out and "ratio" in out
    png = (tmp_path / "v2-fork-latency.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_figure_is_a_one_line_error(capsys):
    assert main(["reproduce", "odf-66x", "--no-plots"]) == 2
    assert "unknown figure(s) ['odf-66x']" in capsys.readouterr().err
