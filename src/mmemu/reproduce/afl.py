"""A fork server to record: AFL++ (Debian package afl++) fuzzing a small SQLite harness
(built with afl-cc against Debian's libsqlite3-dev) for a fixed number of executions, its
fork server (the harness, stopped in its fork-server loop) recorded by attaching to it
(mmemu.trace.record with ``pid``: its state imported, then every execution it forks
followed). Used by ``mmemu reproduce afl-sqlite`` and benchmarks/workloads/afl.py.
Unavailable says why it cannot run here (no root, apt-get failed, no tracefs)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

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


class Unavailable(Exception):
    """The recording cannot run here; the message says why."""


def apt_install(programs, packages) -> None:
    """Unless every one of `programs` is on PATH (or is an existing absolute path):
    apt-get install the Debian `packages` (apt-get update once first); Unavailable if that
    is not possible or fails."""
    def present(p):
        return os.path.exists(p) if os.path.isabs(p) else shutil.which(p)
    if all(present(p) for p in programs):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable(f"needs {', '.join(packages)} (apt-get as root)")
    stamp = Path("/tmp/mmemu-apt-updated")
    if not stamp.exists():
        subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True)
        stamp.touch()
    r = subprocess.run(["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600",
                        *packages], capture_output=True, text=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if r.returncode != 0 or not all(present(p) for p in programs):
        raise Unavailable(f"apt-get install {' '.join(packages)} failed: {r.stderr.strip()[-200:]}")


def tracefs_usable() -> None:
    """Unavailable unless a tracefs instance can be made (root, tracefs mounted)."""
    from ..trace.tracefs import Instance
    try:
        Instance(64).remove()
    except OSError as e:
        raise Unavailable(f"tracefs not usable: {getattr(e, 'strerror', None) or e}") from None


def _children(pid):
    kids = []
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            kids += [int(k) for k in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
        except OSError:
            pass
    return kids


def record_afl(output, execs: int = 2000) -> dict:
    """Run afl-fuzz for `execs` executions of the SQLite harness and record its fork
    server into the trace file `output`; returns record()'s summary with "note" (what ran)
    and "execs_per_sec" (afl-fuzz's own figure for the run, from fuzzer_stats; None if it
    wrote none). Unavailable if afl++, libsqlite3-dev or tracefs is missing here."""
    if execs < 1:
        raise ValueError("execs must be at least 1")
    tracefs_usable()
    apt_install(["afl-fuzz", "afl-cc"], ["afl++"])
    apt_install(["/usr/include/sqlite3.h"], ["libsqlite3-dev"])
    from ..trace.record import record
    d = Path(tempfile.mkdtemp(prefix="mmemu-afl-"))
    try:
        (d / "harness.c").write_text(HARNESS)
        (d / "in").mkdir()
        for i, s in enumerate(SEEDS):
            (d / "in" / f"seed{i}.sql").write_text(s)
        b = subprocess.run(["afl-cc", "-O1", "-o", str(d / "harness"), str(d / "harness.c"), "-lsqlite3"],
                           capture_output=True, text=True, env=dict(os.environ, AFL_QUIET="1"))
        if b.returncode != 0:
            raise Unavailable(f"afl-cc could not build the SQLite harness: {b.stderr.strip()[-200:]}")
        env = dict(os.environ, AFL_NO_UI="1", AFL_SKIP_CPUFREQ="1", AFL_NO_AFFINITY="1",
                   AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES="1", AFL_SKIP_CRASHES="1",
                   AFL_FORKSRV_INIT_TMOUT="60000")
        fuzz = subprocess.Popen(["afl-fuzz", "-i", str(d / "in"), "-o", str(d / "out"),
                                 "-E", str(execs), "-t", "2000", "--", str(d / "harness"), "@@"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline, server = time.time() + 60, None
            while server is None:
                if fuzz.poll() is not None or time.time() > deadline:
                    raise Unavailable(f"afl-fuzz did not start its fork server: {fuzz.stderr.read()[-300:]}")
                for k in _children(fuzz.pid):
                    try:
                        if os.readlink(f"/proc/{k}/exe") == str(d / "harness"):
                            server = k
                    except OSError:
                        pass
                time.sleep(0.005)
            s = record(output, pid=server, duration=600, interval=0.5)
            fuzz.wait(120)
        finally:
            if fuzz.poll() is None:
                fuzz.kill()
                fuzz.wait()
        s["execs_per_sec"] = _stat(d / "out" / "default" / "fuzzer_stats", "execs_per_sec")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    s["note"] = (f"afl-fuzz -E {execs} on a SQLite harness (afl-cc, Debian libsqlite3); the fork "
                 f"server attached after its start; recorded {s['elapsed']:.1f} s")
    return s


def _stat(path: Path, key: str):
    """One number of afl-fuzz's fuzzer_stats file (None if absent)."""
    try:
        for line in path.read_text().splitlines():
            k, _, v = line.partition(":")
            if k.strip() == key:
                return float(v)
    except (OSError, ValueError):
        pass
    return None
