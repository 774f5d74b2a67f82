"""Shared by the workload scripts: record a command (or attach to a pid), replay the trace
under every design, summarise one row per design, and skip with a reason."""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parents[1] / "src"))

from mmemu.trace import load                              # noqa: E402
from mmemu.trace.replay import fidelity, replay           # noqa: E402

DESIGNS = ["classic", "deferred", "eager"]


class Skip(Exception):
    """The workload cannot run here; the message says why."""


def apt_install(programs, packages) -> None:
    """Unless every one of programs is on PATH: apt-get install the Debian packages
    (apt-get update once first); Skip if that fails (mmemu.reproduce.afl.apt_install)."""
    from mmemu.reproduce.afl import Unavailable, apt_install as install
    try:
        install(programs, packages)
    except Unavailable as e:
        raise Skip(str(e)) from None


def tracefs_or_skip() -> None:
    from mmemu.reproduce.afl import Unavailable, tracefs_usable
    try:
        tracefs_usable()
    except Unavailable as e:
        raise Skip(str(e)) from None


def summarise(name: str, trace_path: Path, note: str = "") -> dict:
    """Replay the trace under every design; the row of the results table per design and
    the classic replay's fidelity; written to results/NAME.json."""
    t = load(trace_path)
    res = replay(t, DESIGNS, check=True)
    classic = res["classic"]
    out = {"workload": name, "note": note, "trace": str(trace_path), "events": len(t.events),
           "counts": t.counts(), "lost_events": t.meta.get("lost_events", 0),
           "processes": len(t.meta.get("pids", [])), "designs": {}}
    fid = fidelity(classic, ("VmPTE", "RssAnon"))
    exact = [f for f in fid if f["VmPTE"] == 0 and f["RssAnon"] == 0]
    out["fidelity"] = {"checkpoints": len(fid), "exact": len(exact),
                       "worst": max(fid, key=lambda f: abs(f["VmPTE"] or 0) + abs(f["RssAnon"] or 0),
                                    default=None),
                       "syscall_mismatches": len(classic.syscall_mismatches),
                       "refused_faults": sum(classic.refused_fault_count.values()),
                       "differences": classic.differences}
    for d, r in res.items():
        out["designs"][d] = {
            "title": r.title, "pagetables_added_kb": r.pagetables_added_by_forks_kb,
            "peak_pagetables_kb": r.peak_pagetables_kb, "cow_faults": r.cow_faults,
            "table_breaks": r.tables_broken, "tables_shared": r.tables_shared,
            "memory_saved_kb": classic.peak_pagetables_kb - r.peak_pagetables_kb,
            "forks": r.forks, "emulated_s": r.emulated_seconds,
            "events_per_s": r.events / r.emulated_seconds if r.emulated_seconds else 0,
            "fork_ms": r.fork_seconds * 1e3, "vmstat": r.vmstat}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=1))
    return out


def main(name: str, run) -> int:
    """Run a workload (run() returns (trace path, note)); print its rows; 0, or 0 with
    'skipped: reason' written to results/NAME.json when it cannot run here."""
    try:
        path, note = run()
    except Skip as e:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{name}.json").write_text(json.dumps({"workload": name, "skipped": str(e)}))
        print(f"{name}: skipped: {e}")
        return 0
    out = summarise(name, path, note)
    f = out["fidelity"]
    print(f"{name}: {out['events']} events, {out['processes']} processes, lost {out['lost_events']}; "
          f"classic fidelity: {f['exact']}/{f['checkpoints']} checkpoints exact, "
          f"{f['syscall_mismatches']} syscall mismatches, {f['refused_faults']} refused faults")
    for d, r in out["designs"].items():
        print(f"  {d:<9} PageTables added {r['pagetables_added_kb']:>7} kB  COW faults "
              f"{r['cow_faults']:>8}  breaks {r['table_breaks']:>6}  saved {r['memory_saved_kb']:>7} kB  "
              f"{r['emulated_s']:.3f} s")
    return 0
