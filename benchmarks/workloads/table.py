"""Regenerate the workload results table in docs/record-replay.md:

    python benchmarks/workloads/table.py            # run every workload, then write the table
    python benchmarks/workloads/table.py --no-run   # only rewrite it from results/*.json
    python benchmarks/workloads/table.py --replay   # replay the recorded results/*.mmt again

Each workload script installs or finds its component and records a skip with the reason
when it cannot run here; the table shows that reason in its row."""
import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parents[1] / "docs" / "record-replay.md"
WORKLOADS = ["pool", "redis", "afl"]
BEGIN, END = "<!-- workloads table: begin -->", "<!-- workloads table: end -->"


def table() -> str:
    rows = ["| workload | design | PageTables added by forks (kB) | COW faults | table breaks "
            "| PageTables saved at peak (kB) | emulated time (s) | classic fidelity |",
            "|---|---|---:|---:|---:|---:|---:|---|"]
    notes = []
    for w in WORKLOADS:
        f = HERE / "results" / f"{w}.json"
        if not f.exists():
            rows.append(f"| {w} | - | not run | | | | | |")
            continue
        r = json.loads(f.read_text())
        if "skipped" in r:
            rows.append(f"| {w} | - | skipped: {r['skipped']} | | | | | |")
            continue
        fid = r["fidelity"]
        fid_s = (f"VmPTE and RssAnon exact at {fid['exact']}/{fid['checkpoints']} checkpoints; "
                 f"{fid['syscall_mismatches']} syscall mismatches; {fid['refused_faults']} faults refused")
        for i, (d, x) in enumerate(r["designs"].items()):
            rows.append(f"| {w if i == 0 else ''} | {d} | {x['pagetables_added_kb']} | {x['cow_faults']} "
                        f"| {x['table_breaks']} | {x['memory_saved_kb']} | {x['emulated_s']:.3f} "
                        f"| {fid_s if i == 0 else ''} |")
        per_fork = ", ".join(f"{d} {x['pagetables_added_kb'] / x['forks']:.0f} kB of page tables "
                             f"and {x['fork_ms'] * 1e3 / x['forks']:.0f} µs emulated"
                             for d, x in r["designs"].items() if x["forks"])
        notes.append(f"- **{w}**: {r['note']}; {r['events']} events from {r['processes']} "
                     f"processes, {r['lost_events']} lost. Per fork: {per_fork}."
                     + (" Differences: " + "; ".join(fid["differences"]) + "." if fid["differences"] else ""))
    return "\n".join(rows + [""] + notes)


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--no-run", action="store_true", help="only rewrite the table from results/")
    a.add_argument("--replay", action="store_true",
                   help="replay the traces in results/ again (no recording), then rewrite")
    args = a.parse_args()
    if args.replay:
        sys.path.insert(0, str(HERE))
        from common import summarise
        for w in WORKLOADS:
            done = HERE / "results" / f"{w}.json"
            if (HERE / "results" / f"{w}.mmt").exists() and done.exists():
                summarise(w, HERE / "results" / f"{w}.mmt", json.loads(done.read_text())["note"])
    elif not args.no_run:
        for w in WORKLOADS:
            subprocess.run([sys.executable, str(HERE / f"{w}.py")], check=False)
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(head + BEGIN + "\n" + table() + "\n" + END + tail)
    print(f"wrote the table into {DOC}")


if __name__ == "__main__":
    main()
