"""The command line checks everything before it works: every bad input ends as one line
`mmemu: ...` on stderr with exit status 2, never a traceback (issue 17)."""
import json
import subprocess
import sys

import pytest

import mmemu
from mmemu import cliutil
from mmemu.cli import main, parser
from mmemu.oracle.live import LiveHelper, linux_proc_available, pfns_available
from mmemu.stats import COUNTED_BY, COUNTER_HELP

pytestmark = pytest.mark.one_design


def fails(capsys, argv, *needles):
    """main(argv) exits 2 with exactly one stderr line `mmemu: ...` naming needles."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mmemu: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err
    return err


@pytest.mark.parametrize("argv,needles", [
    (["fork-table", "--size", "40G"], ["--size 40G does not fit in --memory 32G", "41G"]),
    (["fork-table", "--memory", "1M"], ["--size 1G does not fit in --memory 1M"]),
    (["fork-table", "--memory", "64K", "--size", "4K"], ["--memory 64K is too small for the typical layout"]),
    (["fork-table", "--memory", "1P"], ["more than the emulator models (64T)"]),
    (["fork-table", "--memory", "lots"], ["--memory: not a size: 'lots'"]),
    (["fork-table", "--size", "12345"], ["--size 12345 must be a multiple of 4096"]),
    (["fork-table", "--size", "0"], ["--size 0 is too small"]),
    (["fork-table", "--designs", ""], ["--designs is empty"]),
    (["fork-table", "--designs", " , "], ["--designs is empty"]),
    (["fork-table", "--designs", "classic,eager,classic"], ["classic given more than once"]),
    (["fork-table", "--designs", "magic"], ["unknown magic"]),
    (["fork-table", "--repeat", "0"], ["--repeat: must be at least 1"]),
    (["fork-table", "--layout", "huge"], ["invalid choice: 'huge'"]),
    (["nosuch"], ["invalid choice: 'nosuch'"]),
    (["bench", "--json", "/nonexistent-dir/out.json"], ["--json", "directory /nonexistent-dir does not exist"]),
    (["bench", "--quick", "--plot", "/nonexistent-dir/p.png"], ["--plot", "does not exist"]),
    (["bench", "--json", "/"], ["--json '/': not a file name"]),
    (["bench", "--check-ratios", "/nonexistent-dir/r.json"], ["--check-ratios", "no such readable file"]),
    (["import", "1", "--save", "/nonexistent-dir/snap.mms"], ["--save", "does not exist"]),
    (["import", "1", "--memory", "1Q"], ["--memory: not a size"]),
    (["compare"], ["a PID or --load FILE.mms"]),
    (["compare", "1", "--load", "x.mms"], ["a PID or --load FILE.mms"]),
    (["compare", "--load", "/nonexistent-dir/x.mms"], ["--load", "no such readable file"]),
    (["compare", "1", "--designs", "classic,classic"], ["given more than once"]),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, needles):
    fails(capsys, argv, *needles)


def test_plot_without_matplotlib_is_refused_before_the_run(capsys, monkeypatch, tmp_path):
    real = cliutil.importlib.util.find_spec
    monkeypatch.setattr(cliutil.importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    fails(capsys, ["bench", "--quick", "--plot", str(tmp_path / "p.png")],
          '--plot needs matplotlib: pip install "mmemu[plot]"')
    assert not (tmp_path / "p.png").exists()


def test_unwritable_output_file(capsys, tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        if subprocess.run(["test", "-w", str(d)]).returncode == 0:
            pytest.skip("running as a user who may write anywhere (root)")
        fails(capsys, ["bench", "--json", str(d / "x.json")], "not writable")
    finally:
        d.chmod(0o700)


def test_snapshot_that_is_not_one_is_one_line(capsys, tmp_path):
    f = tmp_path / "junk.mms"
    f.write_bytes(b"not a snapshot at all")
    fails(capsys, ["compare", "--load", str(f)], "not an mmemu snapshot")


def test_guard_turns_any_exception_into_one_line(capsys):
    def boom(args):
        raise RuntimeError("deep inside")

    def oom(args):
        raise mmemu.MMError(12, "out of emulated memory at 0x1000")
    assert cliutil.guard(boom, None) == 2
    assert capsys.readouterr().err == "mmemu: internal error: RuntimeError: deep inside\n"
    assert cliutil.guard(oom, None) == 2
    assert capsys.readouterr().err == "mmemu: ENOMEM: Cannot allocate memory: out of emulated memory at 0x1000\n"


def test_no_traceback_from_the_console_script():
    r = subprocess.run([sys.executable, "-m", "mmemu.cli", "fork-table", "--size", "40G"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr == "mmemu: --size 40G does not fit in --memory 32G (needs 41G or more)\n"
    assert r.stdout == ""


def test_version_and_bare_usage(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"mmemu {mmemu.__version__}\n"
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: mmemu")
    for cmd in ("fork-table", "bench", "compare", "import", "counters"):
        assert f"    {cmd}" in out


def test_every_subcommand_and_option_has_help():
    ap = parser()
    sub = next(a for a in ap._actions if a.dest == "cmd")
    assert set(sub.choices) >= {"fork-table", "bench", "compare", "import", "counters", "record",
                                "trace", "replay", "calibrate", "reproduce", "sweep"}
    for name, p in sub.choices.items():
        assert p.description, name
        for a in p._actions:
            assert a.help, f"mmemu {name} {a.option_strings or a.dest} has no help"


def test_check_says_what_it_checked_and_json_keeps_zero_counters(capsys):
    assert main(["fork-table", "--size", "4M", "--memory", "64M", "--layout", "bare",
                 "--designs", "classic,deferred", "--repeat", "3", "--json", "--check"]) == 0
    cap = capsys.readouterr()
    assert cap.err.startswith("checked: Machine.check() passed on 2 machine(s)")
    r = json.loads(cap.out)
    # every event counter is there, zeros too (JSON readers should not have to guess)
    assert set(r["classic"]["work"]) == {k for k in COUNTER_HELP if not k.startswith("nr_")}
    assert r["classic"]["work"]["cow_pte_tables_shared"] == 0
    assert r["deferred"]["work"]["cow_pte_tables_shared"] == 2
    assert r["deferred"]["work"]["fork_ptes_copied"] == 0
    for d in r.values():
        runs = d["fork_ms_runs"]
        assert len(runs) == 3 and d["fork_ms"] == sorted(runs)[1]
        assert d["fork_ms_iqr"] >= 0


def test_table_shows_spread_and_a_legend_of_the_counters_it_shows(capsys):
    assert main(["fork-table", "--size", "4M", "--memory", "64M", "--layout", "bare",
                 "--designs", "deferred", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "fork time (ms)" in out and "median of 1 fork\n" in out and "spread (IQR, ms)" in out
    legend = out[out.index("what the counters count"):].splitlines()[1:]
    shown = [line.split()[0] for line in out[out.index("work done"):out.index("what the")].splitlines()[1:] if line]
    assert shown == ["pgtable_alloc", "cow_pte_tables_shared"]      # zeros are not shown
    assert legend == [f"  {k:<26}{COUNTER_HELP[k]}" for k in shown]


def test_counters_lists_every_counter_with_meaning_and_kernel_function(capsys):
    assert main(["counters", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert list(rows) == list(mmemu.Machine("1M").vmstat())
    for k, r in rows.items():
        assert r["help"] and r["counted_by"] == COUNTED_BY[k], k
    assert rows["fork_ptes_copied"]["counted_by"] == "mm/memory.c: copy_pte_range"
    assert main(["counters"]) == 0
    out = capsys.readouterr().out
    assert "cow_pte_tables_shared" in out and "mm/memory.c: break_cow_pte" in out


_live = linux_proc_available() or pfns_available()


@pytest.mark.skipif(bool(_live), reason=_live or "live kernel available")
def test_compare_load_of_a_saved_import(capsys, tmp_path):
    """`mmemu import PID --save F` then `mmemu compare --load F`: the saved import is
    forked in each design; the import matched the kernel and says so; the imported process
    keeps the live pid and command name."""
    h = LiveHelper()
    try:
        h.call("mmap", addr=0x200000000000, len=1 << 22, prot=3, flags=0x22 | 0x100000)
        h.call("fill", addr=0x200000000000, len=1 << 22)
        snap = tmp_path / "imp.mms"
        assert main(["import", str(h.pid), "--save", str(snap)]) == 0
        with open(f"/proc/{h.pid}/comm") as f:
            comm = f.read().strip()
        assert f"imported process {h.pid} ({comm}) as pid 1" in capsys.readouterr().out
    finally:
        h.close()
    m = mmemu.Machine.load(str(snap))
    (p,) = m.processes
    assert (p.imported_from, p.imported_comm, p.pid) == (h.pid, comm, 1)
    assert main(["compare", "--load", str(snap), "--json", "--check"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["pid"], r["comm"]) == (h.pid, comm)
    assert r["import"]["matched"] is True and r["import"]["mismatches"] == {}
    assert r["designs"]["deferred"]["accounting"] == "deferred"
    assert r["designs"]["eager"]["accounting"] == "eager"
    # eager accounting counts the shared tables in the child, as a classic fork does
    assert r["designs"]["eager"]["child"]["VmPTE"] == r["designs"]["classic"]["child"]["VmPTE"]
    assert r["designs"]["deferred"]["child"]["VmPTE"] < r["designs"]["classic"]["child"]["VmPTE"]
    assert r["designs"]["deferred"]["work"]["cow_pte_tables_shared"] >= 2
    assert main(["compare", "--load", str(snap), "--designs", "classic"]) == 0
    assert "import matched the kernel" in capsys.readouterr().out
