"""Replay of traces made without a kernel: exact counts per design, lost events, faults the
emulator would not take and syscall results that differ, each reported with its event."""
import json

import numpy as np
import pytest

from mmemu.cli import main
from mmemu.trace.events import EXIT, FAULT, PF_USER, PF_WRITE, SYSCALL, SYSCALL_NR
from mmemu.trace.replay import fidelity, replay
from mmemu.trace.synthetic import BASE, fork_write_trace

pytestmark = pytest.mark.one_design
MIB = 1 << 20


def test_fork_then_write_counts_per_design():
    t = fork_write_trace(8 * MIB)
    res = replay(t, ["classic", "deferred", "eager"], check=True)
    pages = 8 * MIB >> 12
    for d, r in res.items():
        assert r.events == len(t.events) and r.faults == pages * 2
        assert r.forks == 1 and r.exits == 2 and r.syscalls == 2
        assert r.cow_faults == pages // 2               # the child's half: copies
        assert r.syscall_mismatches == [] and r.refused_faults == []
        assert r.final_pagetables_kb == 0
        assert r.bytes_copied == 4096 * (pages // 2) + 8 * (r.vmstat.get("fork_ptes_copied", 0)
                                                     + r.vmstat.get("cow_pte_entries_copied", 0))
    c = res["classic"]
    assert c.vmstat["pgfault"] == 2 * pages
    assert c.vmstat["wp_reuse"] == pages // 2           # the parent's, after the child exited
    assert c.tables_copied == 4 and c.tables_shared == 0 and c.fork_vmstat["fork_ptes_copied"] == pages
    # the child's copy of 4 PTE tables + its PMD, PUD and PGD
    assert c.pagetables_added_by_forks_kb == 4 * 7
    for d in ("deferred", "eager"):
        assert res[d].tables_shared == 4 and res[d].tables_copied == 0
        assert res[d].pagetables_added_by_forks_kb < c.pagetables_added_by_forks_kb


def test_lost_events_are_reported_first(capsys):
    t = fork_write_trace(1 * MIB)
    t.meta["lost_events"] = 17
    r = replay(t, ["classic"])["classic"]
    assert r.lost_events == 17 and "lost 17 events" in r.differences[0]
    from mmemu.trace.cli import format_results
    assert format_results(t, {"classic": r}).startswith("WARNING: the recording lost 17 events")


def _with(t, rows):
    """t with extra events (dicts) appended before the parent's exit."""
    from mmemu.trace.events import EVENT_DTYPE
    extra = np.zeros(len(rows), EVENT_DTYPE)
    for i, row in enumerate(rows):
        for k, v in row.items():
            extra[i][k] = v
    ev = np.concatenate([t.events[:-1], extra, t.events[-1:]])
    ev["ts"] = np.arange(len(ev)) * 1000 + 1_000_000
    t.events = ev
    return t


def test_faults_the_emulator_would_not_take_are_reported():
    t = fork_write_trace(1 * MIB)
    t = _with(t, [{"kind": FAULT, "pid": 100, "a0": 0x1000, "a1": PF_USER | PF_WRITE},
                  {"kind": SYSCALL, "pid": 100, "nr": SYSCALL_NR["mprotect"], "a0": BASE,
                   "a1": 4096, "a2": 1},
                  {"kind": FAULT, "pid": 100, "a0": BASE + 5, "a1": PF_USER | PF_WRITE | 1}])
    r = replay(t, ["classic"], check=True)["classic"]
    n = len(t.events)
    assert r.refused_faults == [
        {"event": n - 4, "pid": 100, "address": "0x1000", "error_code": "0x6",
         "reason": "outside every emulated VMA"},
        {"event": n - 2, "pid": 100, "address": hex(BASE + 5), "error_code": "0x7",
         "reason": "access_error: the VMA does not allow this access"}]
    assert r.refused_fault_count == {"outside every emulated VMA": 1,
                                     "access_error: the VMA does not allow this access": 1}


def test_syscall_results_that_differ_are_reported():
    t = fork_write_trace(1 * MIB)
    # Linux said EINVAL (-22) to a valid munmap; and brk returned an address we do not give
    t = _with(t, [{"kind": SYSCALL, "pid": 100, "nr": SYSCALL_NR["munmap"], "a0": BASE,
                   "a1": 4096, "ret": -22},
                  {"kind": SYSCALL, "pid": 100, "nr": SYSCALL_NR["madvise"], "a0": BASE + 4096,
                   "a1": 4096, "a2": 4, "ret": 0}])
    r = replay(t, ["classic"], check=True)["classic"]
    n = len(t.events)
    assert [(m["event"], m["syscall"], m["recorded"], m["replayed"]) for m in r.syscall_mismatches] \
        == [(n - 3, "munmap", -22, 0)]
    assert r.not_replayed == {"syscall result differs": 1}


def test_replay_cli_json_and_unknown_design(tmp_path, capsys):
    t = fork_write_trace(1 * MIB)
    path = tmp_path / "t.mmt"
    t.save(path)
    out = tmp_path / "r.json"
    assert main(["replay", str(path), "--designs", "classic,eager", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "COW faults" in text and "classic fork" in text
    data = json.loads(out.read_text())
    assert sorted(data) == ["classic", "eager"] and data["eager"]["cow_faults"] == 128
    assert main(["replay", str(path), "--designs", "classic,nope"]) == 2
    assert capsys.readouterr().err.startswith("mmemu: unknown design(s) ['nope']")


def test_fidelity_helper():
    t = fork_write_trace(1 * MIB)
    r = replay(t, ["classic"])["classic"]
    assert fidelity(r) == []            # no checkpoints in a synthetic trace


def test_replay_prints_and_writes_the_cost_models_prediction(tmp_path, capsys):
    from mmemu.costmodel.profile import load
    t = fork_write_trace(8 * MIB)
    path, out = tmp_path / "t.mmt", tmp_path / "r.json"
    t.save(path)
    assert main(["replay", str(path), "--designs", "classic,deferred", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "predicted kernel time, forks (ms)" in text and "predicted kernel time, all (ms)" in text
    data = json.loads(out.read_text())
    u = load(None).units
    pages = 8 * MIB >> 12
    # a classic fork of 8 MiB: the fixed cost, 4 PTE tables and 2048 PTEs copied, and the
    # child's PGD, PUD and PMD as page-table allocations (its VmPTE + PGD: 7 pages)
    alloc = data["classic"]["fork_vmstat"]["pgtable_alloc"] - 4
    assert alloc == 3
    want = u["fork_fixed"] + 4 * u["fork_table"] + pages * u["fork_pte"] + alloc * u["pgtable_alloc"]
    assert data["classic"]["predicted"]["forks_s"] == pytest.approx(want, rel=1e-12)
    # the deferred fork shares the 4 tables: priced as 4 table copies, no PTE copied
    d = data["deferred"]["predicted"]
    assert d["forks_s"] < data["classic"]["predicted"]["forks_s"]
    assert d["total_s"] == pytest.approx(sum(d["terms_s"].values()), rel=1e-12)
