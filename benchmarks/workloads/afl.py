"""A fork server: AFL++ (Debian package afl++) fuzzing a small SQLite harness (built with
afl-cc against the Debian libsqlite3-dev) for a fixed number of executions. The fork
server (the harness, stopped in its fork-server loop) is recorded by attaching to it
(``mmemu record --pid``: its state imported, then every execution it forks followed);
the recording is mmemu.reproduce.afl's, the one `mmemu reproduce afl-sqlite` uses.

    python benchmarks/workloads/afl.py [--execs 2000]

Writes results/afl.json: per design the fork cost per execution (page tables, COW faults,
emulated fork time)."""
import argparse
import sys

from common import RESULTS, Skip, main

from mmemu.reproduce.afl import Unavailable, record_afl


def run():
    a = argparse.ArgumentParser()
    a.add_argument("--execs", type=int, default=2000)
    args = a.parse_args()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "afl.mmt"
    try:
        s = record_afl(out, args.execs)
    except Unavailable as e:
        raise Skip(str(e)) from None
    return out, s["note"]


if __name__ == "__main__":
    sys.exit(main("afl", run))
