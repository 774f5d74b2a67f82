"""Timings with their spread and plots people can read (issue 17 items 3 and 10)."""
import pytest

from mmemu.bench import plot as bplot
from mmemu.bench import report, runner

pytestmark = pytest.mark.one_design
MIB = 1 << 20


def fake(sizes):
    res = {}

    def put(key, kind, op, size, design=None, **kw):
        res[key] = runner.summarize({"id": key, "kind": kind, "op": op, "size": size,
                                     "design": design, **kw})
    for size in sizes:
        s = runner.size_name(size)
        n = size // 4096
        put(f"kernel.fork.{s}", "kernel", "fork", size, times=[0.02, 0.021, 0.019, 0.03, 0.02],
            pages=n, child_VmPTE_kb=size // 2 ** 19 + 8)
        put(f"numpy.fork.{s}", "numpy", "fork", size, times=[0.002], pages=n)
        for d, t, kb in (("classic", 0.001, size // 2 ** 19), ("deferred", 1e-5, 16), ("eager", 1.1e-5, 16)):
            put(f"fork.{d}.{s}", "mmemu", "fork", size, d, times=[t, t * 2, t, t, t * 3], pages=n,
                host_peak=1 << 20, must_hold=1 << 20, work={}, child_pgtables_kb=kb)
    return res


def test_quick_run_marks_1g_targets_na_at_64m():
    res = fake([64 * MIB])
    rs = report.ratios(res)
    tg = {t["target"]: t for t in report.targets(res, rs)}
    row = tg["classic fork 64M <= 1/10 of the kernel's fork"]
    assert row["met"] is None and row["note"] == "n/a at 64 MiB" and row["value"] == pytest.approx(0.05)
    assert tg["classic fork of 64M < 0.5 s (seconds)"]["note"] == "n/a at 64 MiB"
    # a target defined at 64 MiB is judged
    assert "note" not in tg["(fork alone, classic, 64M >= 100x faster than the reference model)"]
    text = report.table(res, rs, list(tg.values()), report.meta(True))
    assert "MISSED" not in text
    assert "  n/a at 64 MiB  classic fork 64M <= 1/10 of the kernel's fork" in text


def test_full_run_judges_1g_targets():
    res = fake([64 * MIB, 1 << 30, 16 << 30])
    rs = report.ratios(res)
    tg = {t["target"]: t for t in report.targets(res, rs)}
    assert tg["classic fork 1G <= 1/10 of the kernel's fork"]["met"] is True
    assert tg["classic fork of 16G < 0.5 s (seconds)"]["met"] is True
    assert not any("note" in t for t in tg.values())


def test_table_shows_rounds_and_spread_and_ratios_one_way():
    res = fake([64 * MIB])
    rs = report.ratios(res)
    text = report.table(res, rs, report.targets(res, rs), report.meta(True))
    head = next(line for line in text.splitlines() if line.startswith("operation"))
    assert head.split() == ["operation", "size", "mmemu", "rounds", "IQR", "per", "page", "÷", "kernel",
                            "÷", "lower", "bound", "÷", "reference", "host", "MB", "hold", "MB", "ratio"]
    row = next(line for line in text.splitlines() if line.startswith("fork deferred"))
    # 5 rounds of 10, 20, 10, 10, 30 µs: median 10 µs, IQR (inclusive quartiles) 20 - 10
    assert row.split()[2:7] == ["64M", "10", "µs", "5", "10"]
    assert "0.0005 of 20 ms" in row           # deferred / kernel, never "1/2000"
    assert "1/" not in text.split("targets:")[1].replace("<= 1/10", "").replace("<= 1/300", "")
    assert [report.fmt_ratio(x) for x in (0.05, 1 / 1035, 1.6, 250.0)] == ["0.05", "0.000966", "1.6", "250"]


def _png_pixels(path):
    import matplotlib.image as mpimg
    return mpimg.imread(path)


@pytest.mark.parametrize("sizes", [[64 * MIB], [64 * MIB, 1 << 30, 16 << 30]])
def test_plot_is_readable(tmp_path, sizes, monkeypatch):
    pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    import matplotlib.pyplot as plt
    drawn = {}
    real_savefig = plt.Figure.savefig

    def keep(fig, path, **kw):
        drawn["fig"] = fig
        return real_savefig(fig, path, **kw)
    monkeypatch.setattr(plt.Figure, "savefig", keep)
    out = tmp_path / "p.png"
    bplot.plot(fake(sizes), str(out))
    img = _png_pixels(out)
    assert img.shape[0] > 300 and img[..., :3].std() > 0.05        # not blank
    ax1, ax2 = drawn["fig"].axes
    if len(sizes) == 1:
        assert len(ax1.patches) == 4 and len(ax1.lines) == 0         # bars, not one-point lines
        assert [t.get_text() for t in ax1.get_xticklabels()] == ["Linux (this machine)", "classic",
                                                                  "COW PTE deferred", "COW PTE eager"]
    else:
        assert [t.get_text() for t in ax1.get_xticklabels()] == ["64M", "1G", "16G"]
        styles = {(ln.get_marker(), ln.get_linestyle()) for ln in ax1.lines}
        assert len(styles) == 4                                        # overlapping series differ
