"""Recording real programs on the live kernel (tracefs, as root) and replaying them: the
classic replay's VmPTE and RssAnon equal the kernel's at every checkpoint, every syscall
returns what it returned on Linux, a killed program and an interrupted recorder leave a
loadable trace and no tracefs instance behind. Skipped, with the reason, where tracefs or
a C compiler is not usable."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mmemu.trace import load
from mmemu.trace.events import SYSCALL
from mmemu.trace.record import record
from mmemu.trace.replay import replay
from mmemu.trace.synthetic import build_program
from mmemu.trace.tracefs import Instance, TracefsUnavailable

pytestmark = pytest.mark.one_design
HERE = Path(__file__).parent


def _tracefs_reason():
    try:
        Instance(64).remove()
    except TracefsUnavailable as e:
        return e.strerror
    except OSError as e:
        return f"tracefs: {e}"
    return None


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    reason = _tracefs_reason()
    if reason:
        pytest.skip(f"tracefs not usable: {reason}")
    try:
        return build_program(tmp_path_factory.mktemp("synth"))
    except FileNotFoundError as e:
        pytest.skip(str(e))


def _instances():
    return sorted(p for p in os.listdir("/sys/kernel/tracing/instances") if p.startswith("mmemu-"))


def _assert_faithful(t, allow_refused=0):
    r = replay(t, ["classic"], check=True)["classic"]
    assert r.lost_events == 0
    assert r.syscall_mismatches == []
    assert sum(r.refused_fault_count.values()) <= allow_refused, r.refused_faults[:5]
    assert len(r.checkpoints) >= 2
    for c in r.checkpoints:
        assert c["emulated"] is not None, c
        assert (c["emulated"]["VmPTE"], c["emulated"]["RssAnon"]) == \
            (c["kernel"]["VmPTE"], c["kernel"]["RssAnon"]), c
        # every fault the kernel counted (minflt) is in the trace, and was replayed
        assert c["emulated"]["faults_since_first_checkpoint"] == \
            c["kernel"]["faults_since_first_checkpoint"], c
    return r


def test_record_and_replay_a_forking_program(synth, tmp_path):
    before = _instances()
    out = tmp_path / "t.mmt"
    s = record(out, command=[synth, "8", "loop", "10"], interval=0.02)
    assert s["lost"] == 0 and s["exit_status"] == 0 and not s["interrupted"]
    assert _instances() == before                      # the instance is gone
    t = load(out)
    c = t.counts()
    for name in ("mmap", "munmap", "mprotect", "mremap", "brk", "openat", "close", "exit_group"):
        assert c.get("syscall " + name, 0) >= 1, name
    assert c["fork"] == 10 and c["exit"] == 11 and len(t.meta["pids"]) == 11
    assert c["fault"] >= 10 * (2048 + 1024)             # 8 MiB written, the child's COW half
    # the EINVAL munmap of address 1 is in the trace with its result
    sc = t.events[t.events["kind"] == SYSCALL]
    assert any(e["nr"] == 11 and e["a0"] == 1 and e["ret"] == -22 for e in sc)
    r = _assert_faithful(t)
    assert r.faults == c["fault"] + c.get("kernel-fault", 0)
    assert r.cow_faults >= 10 * 1024 and r.forks == 10
    for d, x in replay(t, ["deferred", "eager"], check=True).items():
        assert x.syscall_mismatches == [] and x.tables_shared >= 2


def test_a_program_killed_midway(synth, tmp_path):
    out = tmp_path / "k.mmt"

    def synths():
        out = []
        for p in os.listdir("/proc"):
            try:
                if p.isdigit() and Path(f"/proc/{p}/comm").read_text().strip() == "mmemu-synth":
                    out.append(int(p))
            except OSError:
                pass
        return out

    def killer():
        deadline = time.time() + 20
        while len(synths()) < 2 and time.time() < deadline:     # forked, the child holding
            time.sleep(0.01)
        time.sleep(0.2)
        for p in synths():
            os.kill(p, signal.SIGKILL)
    th = threading.Thread(target=killer)
    th.start()
    s = record(out, command=[synth, "8", "hold"], interval=0.05, duration=20)
    th.join()
    assert s["exit_status"] == -signal.SIGKILL and s["lost"] == 0
    t = load(out)
    assert t.counts()["exit"] == 2 and t.counts()["fork"] == 1
    _assert_faithful(t)


def test_an_interrupted_recorder_restores_tracefs(synth, tmp_path):
    out = tmp_path / "i.mmt"
    before = _instances()
    import mmemu       # the recorder runs the mmemu under test (installed, or from src/)
    env = dict(os.environ, PYTHONPATH=str(Path(mmemu.__file__).resolve().parents[1]))
    rec = subprocess.Popen([sys.executable, "-m", "mmemu.cli", "record", "-o", str(out),
                            "--interval", "0.05", "--", synth, "8", "hold"],
                           env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        while not any(i.startswith(f"mmemu-{rec.pid}") for i in _instances()):
            assert time.time() < deadline and rec.poll() is None
            time.sleep(0.02)
        time.sleep(0.8)
        rec.send_signal(signal.SIGINT)
        assert rec.wait(30) == 130
    finally:
        if rec.poll() is None:
            rec.kill()
    assert _instances() == before
    t = load(out)                           # a partial trace, marked, loadable
    assert t.meta["interrupted"] is True
    for p in t.meta["pids"]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _assert_faithful(t)


@pytest.mark.parametrize("case", ["unmounted", "no permission"])
def test_without_tracefs_exit_2_in_one_line(tmp_path, monkeypatch, capsys, case):
    """No tracefs, or no permission to use it (as a non-root user sees it: os.access
    refuses), is one line and exit status 2, with nothing started or written."""
    from mmemu.cli import main
    from mmemu.trace import tracefs
    if case == "unmounted":
        monkeypatch.setattr(tracefs, "TRACEFS", (str(tmp_path / "none"),))
        want = "mmemu: cannot record: tracefs is not mounted"
    else:
        monkeypatch.setattr(tracefs, "TRACEFS", (str(tmp_path),))
        monkeypatch.setattr(tracefs.os, "access", lambda path, mode: False)
        want = f"mmemu: cannot record: no permission to use tracefs at {tmp_path}"
    assert main(["record", "-o", str(tmp_path / "x.mmt"), "--", "true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(want) and err.count("\n") == 1
    assert not (tmp_path / "x.mmt").exists()


def test_a_recording_that_lost_events(synth, tmp_path, capsys):
    """A buffer far too small: the loss is counted, the CLI exits 1 saying so, and the
    replay reports it first instead of being silently wrong."""
    from mmemu.cli import main
    from mmemu.trace.cli import format_results
    out = tmp_path / "lost.mmt"
    assert main(["record", "-o", str(out), "--buffer-kb", "8", "--", synth, "64"]) == 1
    err = capsys.readouterr().err
    assert "mmemu: the recording lost" in err and "--buffer-kb" in err
    t = load(out)
    lost = t.meta["lost_events"]
    assert lost > 0 and sum(t.meta["lost_per_cpu"].values()) == lost
    res = replay(t, ["classic"])
    assert res["classic"].lost_events == lost
    assert res["classic"].differences[0].startswith(f"the recording lost {lost} events")
    assert format_results(t, res).startswith(f"WARNING: the recording lost {lost} events")
