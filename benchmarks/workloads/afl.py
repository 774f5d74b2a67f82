"""A fork server: AFL++ (Debian package afl++) fuzzing a small SQLite harness (built with
afl-cc against the Debian libsqlite3-dev) for a fixed number of executions. The fork
server (the harness, stopped in its fork-server loop) is recorded by attaching to it
(``mmemu record --pid``: its state imported, then every execution it forks followed).

    python benchmarks/workloads/afl.py [--execs 2000]

Writes results/afl.json: per design the fork cost per execution (page tables, COW faults,
emulated fork time)."""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, Skip, apt_install, main, tracefs_or_skip

HARNESS = r'''
#include <sqlite3.h>
#include <stdio.h>
int main(int argc, char **argv)
{
    static char sql[1 << 16];
    FILE *f = fopen(argv[1], "rb");
    if (!f) return 1;
    size_t n = fread(sql, 1, sizeof sql - 1, f);
    fclose(f);
    sql[n] = 0;
    sqlite3 *db;
    if (sqlite3_open(":memory:", &db) != SQLITE_OK) return 1;
    sqlite3_exec(db, sql, 0, 0, 0);
    sqlite3_close(db);
    return 0;
}
'''
SEEDS = ["CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT); INSERT INTO t VALUES(1,'x'),(2,'y'); "
         "SELECT b FROM t WHERE a > 0 ORDER BY b;",
         "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<100) "
         "SELECT sum(x), group_concat(x) FROM c;",
         "CREATE TABLE u(x); CREATE INDEX i ON u(x); INSERT INTO u SELECT randomblob(64); "
         "SELECT count(*), max(length(x)) FROM u;"]


def _children(pid):
    kids = []
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            kids += [int(k) for k in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
        except OSError:
            pass
    return kids


def run():
    a = argparse.ArgumentParser()
    a.add_argument("--execs", type=int, default=2000)
    args = a.parse_args()
    tracefs_or_skip()
    apt_install(["afl-fuzz", "afl-cc"], ["afl++"])
    if not Path("/usr/include/sqlite3.h").exists():
        apt_install(["sqlite3-never-a-program"], ["libsqlite3-dev"])
    from mmemu.trace.record import record
    RESULTS.mkdir(exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix="mmemu-afl-"))
    (d / "harness.c").write_text(HARNESS)
    (d / "in").mkdir()
    for i, s in enumerate(SEEDS):
        (d / "in" / f"seed{i}.sql").write_text(s)
    b = subprocess.run(["afl-cc", "-O1", "-o", str(d / "harness"), str(d / "harness.c"), "-lsqlite3"],
                       capture_output=True, text=True, env=dict(os.environ, AFL_QUIET="1"))
    if b.returncode != 0:
        raise Skip(f"afl-cc could not build the SQLite harness: {b.stderr.strip()[-200:]}")
    env = dict(os.environ, AFL_NO_UI="1", AFL_SKIP_CPUFREQ="1", AFL_NO_AFFINITY="1",
               AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES="1", AFL_SKIP_CRASHES="1",
               AFL_FORKSRV_INIT_TMOUT="60000")
    fuzz = subprocess.Popen(["afl-fuzz", "-i", str(d / "in"), "-o", str(d / "out"),
                             "-E", str(args.execs), "-t", "2000", "--", str(d / "harness"), "@@"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, server = time.time() + 60, None
        while server is None:
            if fuzz.poll() is not None or time.time() > deadline:
                raise Skip(f"afl-fuzz did not start its fork server: {fuzz.stderr.read()[-300:]}")
            for k in _children(fuzz.pid):
                try:
                    if os.readlink(f"/proc/{k}/exe") == str(d / "harness"):
                        server = k
                except OSError:
                    pass
            time.sleep(0.005)
        out = RESULTS / "afl.mmt"
        s = record(out, pid=server, duration=600, interval=0.5)
        fuzz.wait(120)
    finally:
        if fuzz.poll() is None:
            fuzz.kill()
            fuzz.wait()
        shutil.rmtree(d, ignore_errors=True)
    return out, (f"afl-fuzz -E {args.execs} on a SQLite harness (afl-cc, Debian libsqlite3); "
                 f"the fork server attached after its start; recorded {s['elapsed']:.1f} s")


if __name__ == "__main__":
    sys.exit(main("afl", run))
