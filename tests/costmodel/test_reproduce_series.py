"""`mmemu reproduce`: the figures of the later versions (v5-fork-latency), of On-Demand-Fork
(odf-65x) and AFL on SQLite (afl-sqlite: a fork-server trace replayed under classic, RFC v2
and v5), with a profile of round numbers so every expected value is worked out by hand."""
import numpy as np
import pytest

from mmemu.cli import main
from mmemu.costmodel.profile import UNITS, Profile
from mmemu.flags import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from mmemu.reproduce import FIGURES, reproduce
from mmemu.reproduce.figures import AFL_PUBLISHED, afl_sqlite, fork_server_rates
from mmemu.trace import EVENT_DTYPE, Trace
from mmemu.trace.events import EXIT, FAULT, FORK, PF_PROT, PF_USER, PF_WRITE, SYSCALL, SYSCALL_NR
from mmemu.trace.replay import replay

pytestmark = pytest.mark.one_design
PROF = Profile("round", {**{u: 0.0 for u in UNITS}, "fork_fixed": 100e-6, "fork_table": 2e-6,
                         "fork_pte": 50e-9, "cow_fault_warm": 1e-6})
BASE, SERVER = 0x7F0000000000, 100


def test_the_registry_holds_every_figure():
    assert list(FIGURES) == ["seed-meminfo", "v2-fork-latency", "v2-fault-latency",
                             "v5-fork-latency", "odf-65x", "afl-sqlite"]


def test_v5_fork_latency_prices_the_eager_accounting_as_a_classic_copy():
    (fig,) = reproduce(["v5-fork-latency"], PROF)
    rows = {r.quantity: r for r in fig.rows}
    # 512 MiB bare process: 256 tables, 131072 PTEs. Classic copies them; v5 shares the
    # tables and accounts every entry (fork_ptes_accounted, priced as a PTE copy)
    classic = (100e-6 + 256 * 2e-6 + 131072 * 50e-9) * 1e3
    assert rows["classic fork at 512 MB"].mmemu == pytest.approx(classic, rel=1e-9)
    assert rows["COW PTE v5 fork at 512 MB"].mmemu == pytest.approx(classic, rel=1e-9)
    assert "fork_ptes_accounted=131072" in rows["COW PTE v5 fork at 512 MB"].work
    assert "cow_pte_tables_shared=256" in rows["COW PTE v5 fork at 512 MB"].work
    assert rows["v5 / classic at 512 MB (same: 1)"].mmemu == pytest.approx(1.0)
    assert rows["COW PTE v5 fork at 512 MB"].published == 10.0


def test_odf_65x_at_1g():
    (fig,) = reproduce(["odf-65x"], PROF)
    rows = {r.quantity: r for r in fig.rows}
    classic = (100e-6 + 512 * 2e-6 + 262144 * 50e-9) * 1e3
    odf = (100e-6 + 512 * 2e-6) * 1e3           # the 512 tables shared, priced as fork_table
    assert rows["classic fork at 1 GB"].mmemu == pytest.approx(classic, rel=1e-9)
    assert rows["On-Demand-Fork fork at 1 GB"].mmemu == pytest.approx(odf, rel=1e-9)
    speedup = rows["classic / On-Demand-Fork at 1 GB"]
    assert speedup.published == 65.0
    assert speedup.mmemu == pytest.approx(classic / odf, rel=1e-9)
    assert speedup.ratio == pytest.approx(classic / odf / 65, rel=1e-9)


def _fork_server_trace(execs: int, period_ns: int, pages: int = 1024, writes: int = 10,
                       code: int = PF_USER | PF_WRITE | PF_PROT, first: int = 0) -> Trace:
    """A fork server without a kernel: process 100 maps 1024 pages of private anonymous
    memory at BASE (2 MiB-aligned), writes the first `pages`, then forks `execs` children,
    one every `period_ns`; each child writes (faults with error `code` on) `writes` pages
    from page `first` (COW faults) and exits."""
    ev = [(SYSCALL, SERVER, SYSCALL_NR["mmap"], (0, 1024 << 12, PROT_READ | PROT_WRITE,
                                                  MAP_PRIVATE | MAP_ANONYMOUS, 0xFFFFFFFF, 0), BASE)]
    ev += [(FAULT, SERVER, 0, (BASE + (i << 12), PF_USER | PF_WRITE), 0) for i in range(pages)]
    forks = []
    for k in range(execs):
        child = 1000 + k
        forks.append(len(ev))
        ev.append((FORK, SERVER, 0, (child, 0x11), 0))
        ev += [(FAULT, child, 0, (BASE + (i << 12), code), 0) for i in range(first, first + writes)]
        ev.append((EXIT, child, 0, (1,), 0))
    a = np.zeros(len(ev), EVENT_DTYPE)
    for i, (kind, pid, nr, args, ret) in enumerate(ev):
        a[i]["kind"], a[i]["pid"], a[i]["nr"], a[i]["ret"] = kind, pid, nr, ret
        for j, v in enumerate(args):
            a[i][f"a{j}"] = v
    # one ns apart, but fork k at forks[0] + k * period_ns (its child's events just after it)
    ts = 1_000_000 + np.arange(len(a), dtype=np.int64)
    for k, i in enumerate(forks):
        ts[i:] += period_ns - (i - forks[k - 1]) if k else 0
    a["ts"] = ts
    meta = {"command": ["(synthetic fork server)"], "root": SERVER,
            "pids": [SERVER] + [1000 + k for k in range(execs)], "lost_events": 0, "files": [],
            "snapshot_memory": 1 << 30}
    t = Trace(meta, a)
    t.validate()
    return t


def test_fork_server_rates_by_hand():
    t = _fork_server_trace(execs=3, period_ns=1_000_000)
    forks = t.events["ts"][t.events["kind"] == FORK].astype(np.int64)
    assert list(np.diff(forks)) == [1_000_000, 1_000_000]
    res = replay(t, ("classic", "v2", "v5"), check=True)
    # the counters the hand-worked times below rest on
    c, v2, v5 = (res[d].vmstat for d in ("classic", "v2", "v5"))
    assert (c["fork_ptes_copied"], c["fork_pte_tables_copied"], c["cow_fault"]) == (3 * 1024, 3 * 2, 30)
    assert (v2["cow_pte_tables_shared"], v2["cow_pte_tables_duplicated"], v2["cow_fault"]) == (6, 3, 30)
    assert v2["cow_pte_entries_copied"] == 3 * 512 and not v2.get("fork_ptes_accounted")
    assert v5["fork_ptes_accounted"] == 3 * 1024
    r = fork_server_rates(t, res, PROF)
    assert r["exec_s"] == pytest.approx(1e-3, rel=1e-12)
    # per execution: fork 100 us; classic copies 2 tables (4 us) and 1024 PTEs (51.2 us);
    # the child's 10 COW faults 10 us
    classic = 100e-6 + 4e-6 + 51.2e-6 + 10e-6
    # RFC v2 shares the 2 tables (4 us); the writes break the first: one table (2 us) and
    # its 512 entries (25.6 us) copied; v5 also accounts the 1024 entries at fork (51.2 us)
    rfc2 = 100e-6 + 4e-6 + 2e-6 + 25.6e-6 + 10e-6
    d = r["designs"]
    assert d["classic"]["mm_s"] == pytest.approx(classic, rel=1e-9)
    assert d["v2"]["mm_s"] == pytest.approx(rfc2, rel=1e-9)
    assert d["v5"]["mm_s"] == pytest.approx(rfc2 + 51.2e-6, rel=1e-9)
    rest = 1e-3 - classic
    assert r["rest_s"] == pytest.approx(rest, rel=1e-9)
    assert d["classic"]["execs_per_s"] == pytest.approx(1000, rel=1e-9)
    assert d["v2"]["execs_per_s"] == pytest.approx(1 / (rest + rfc2), rel=1e-9)


def test_afl_sqlite_figure_from_a_given_trace(tmp_path, capsys):
    t = _fork_server_trace(execs=4, period_ns=2_000_000)
    path = tmp_path / "server.mmt"
    t.save(path)
    fig = afl_sqlite(PROF, trace=path)
    rows = {r.quantity: r for r in fig.rows}
    assert rows["time per execution, recorded (classic)"].mmemu == pytest.approx(2.0, rel=1e-9)
    classic, rfc2 = 165.2e-6, 141.6e-6
    rest = 2e-3 - classic
    assert rows["v2 / classic execs/s"].published == pytest.approx(503.67 / 53.86)
    assert rows["v2 / classic execs/s"].mmemu == pytest.approx((rest + classic) / (rest + rfc2), rel=1e-9)
    assert rows["v2 / classic, if an execution were its mm work"].mmemu == pytest.approx(classic / rfc2,
                                                                                        rel=1e-9)
    assert rows["v5 / classic execs/s"].published == pytest.approx(52.15 / 53.50)
    assert rows["v5 / classic execs/s"].mmemu == pytest.approx((rest + classic) / (rest + rfc2 + 51.2e-6),
                                                                rel=1e-9)
    assert set(AFL_PUBLISHED) == {"v2", "v5"}
    # the CLI takes the trace with --trace and plots it
    pytest.importorskip("matplotlib", reason="plots need the plot extra")
    assert main(["reproduce", "afl-sqlite", "--trace", str(path), "--plots", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "v2 / classic execs/s" in out and "9.351 x" in out
    assert (tmp_path / "afl-sqlite.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_replay_follows_the_version_rules():
    """A version of the series replays under its own rules, not only its accounting: a read
    fault of the child on a shared table breaks it under mmemu's eager design, and under v5
    (v4's __handle_mm_fault: only write or unshare faults break) leaves it shared."""
    # the server writes the first table's pages; the child reads one page it never wrote
    t = _fork_server_trace(execs=1, period_ns=1_000_000, pages=100, writes=1, code=PF_USER, first=200)
    res = replay(t, ("eager", "v5"), check=True)
    assert res["eager"].vmstat["cow_pte_tables_shared"] == res["v5"].vmstat["cow_pte_tables_shared"] == 1
    assert res["eager"].vmstat["cow_pte_tables_duplicated"] == 1
    assert res["v5"].vmstat.get("cow_pte_tables_duplicated", 0) == 0
    assert res["v5"].vmstat["fault_zero_page"] == 1


def test_a_trace_without_two_forks_is_refused():
    t = _fork_server_trace(execs=1, period_ns=1_000_000)
    with pytest.raises(ValueError, match="fewer than 2 forks"):
        fork_server_rates(t, replay(t, ("classic",)), PROF)


def test_a_missing_trace_file_is_a_one_line_error(tmp_path, capsys):
    assert main(["reproduce", "afl-sqlite", "--trace", str(tmp_path / "none.mmt"), "--no-plots"]) == 2
    assert "none.mmt" in capsys.readouterr().err


@pytest.mark.workloads
def test_afl_sqlite_records_a_fork_server_here():
    """Live: afl-fuzz on the SQLite harness, its fork server recorded (installs afl++ and
    libsqlite3-dev with apt-get when missing; skipped with the reason when it cannot)."""
    fig = afl_sqlite(PROF)
    if fig.skipped:
        pytest.skip(fig.skipped)
    rows = {r.quantity: r for r in fig.rows}
    # one fork of the server per execution: afl-fuzz -E 300, less those it ran before the
    # recorder attached (more of them on a loaded machine)
    execs = int(fig.source.rsplit(", ", 1)[1].split()[0])
    assert 2 <= execs <= 300
    assert rows["time per execution, recorded (classic)"].mmemu > 0
    assert "fork_ptes_copied=" in rows["classic: predicted mm kernel time per execution"].work
    assert "cow_pte_tables_shared=" in rows["v2: predicted mm kernel time per execution"].work
    assert "fork_ptes_accounted=" in rows["v5: predicted mm kernel time per execution"].work
    # the round profile prices the fork server's fork alone at 100 us or more
    assert all(rows[f"{d}: predicted mm kernel time per execution"].mmemu >= 0.1
               for d in ("classic", "v2", "v5"))


@pytest.mark.workloads
def test_reproduce_without_names_prints_every_figure(capsys):
    """Live (afl-sqlite records here, or says why it is skipped)."""
    assert main(["reproduce", "--no-plots"]) == 0
    out = capsys.readouterr().out
    heads = [ln.split(":")[0] for ln in out.splitlines() if ln and not ln.startswith(" ")]
    assert [h for h in heads if h in FIGURES] == list(FIGURES)
    afl = out[out.index("afl-sqlite:"):]
    assert "v2 / classic execs/s" in afl or "skipped: " in afl
