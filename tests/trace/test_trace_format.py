"""The trace file: round trip, and a clear TraceError (nothing half-loaded) for truncated,
corrupted, reordered and foreign input."""
import json
import os

import numpy as np
import pytest

import mmemu
from mmemu.trace import TraceError, load
from mmemu.trace.events import FAULT, SYSCALL
from mmemu.trace.format import PREAMBLE_SIZE
from mmemu.trace.synthetic import fork_write_trace

pytestmark = pytest.mark.one_design


@pytest.fixture
def trace_file(tmp_path):
    t = fork_write_trace(1 << 20)
    m = mmemu.Machine("64M")
    m.spawn(layout="typical")
    snap = tmp_path / "m.mms"
    m.save(snap)
    t.snapshot = snap.read_bytes()
    t.meta["snapshot_pids"] = {}
    path = tmp_path / "t.mmt"
    t.save(path)
    return t, path


def test_round_trip_is_exact(trace_file):
    t, path = trace_file
    u = load(path)
    assert u.events.tobytes() == t.events.tobytes()
    assert u.meta == json.loads(json.dumps(t.meta))
    assert u.snapshot == t.snapshot
    assert u.counts()["fault"] == 256 + 128 + 128
    assert u.counts()["syscall mmap"] == 1
    assert "events:      517" in u.info()
    data = path.read_bytes()
    u.save(path)
    assert path.read_bytes() == data                   # deterministic
    assert [p for p in os.listdir(path.parent) if p.startswith(".mmemu-trace-")] == []


@pytest.mark.parametrize("cut", [0, 5, PREAMBLE_SIZE - 1, PREAMBLE_SIZE + 3, -1, -100])
def test_truncated(trace_file, tmp_path, cut):
    _, path = trace_file
    data = path.read_bytes()
    bad = tmp_path / "bad.mmt"
    bad.write_bytes(data[:cut] if cut else b"")
    with pytest.raises(TraceError, match="truncated|empty|ends at byte"):
        load(bad)


def test_every_flipped_byte_is_refused(trace_file, tmp_path):
    _, path = trace_file
    data = bytearray(path.read_bytes())
    bad = tmp_path / "bad.mmt"
    for pos in list(range(0, len(data), max(1, len(data) // 97))) + [len(data) - 1]:
        d = bytearray(data)
        d[pos] ^= 0x40
        bad.write_bytes(bytes(d))
        with pytest.raises(TraceError):
            load(bad)


def test_foreign_files(trace_file, tmp_path):
    _, path = trace_file
    snap = tmp_path / "m.mms"
    for blob, what in [(snap.read_bytes(), "not an mmemu trace"),
                       (b"hello world\n" * 10, "not an mmemu trace"),
                       (path.read_bytes()[:10] + (2).to_bytes(4, "little") + path.read_bytes()[14:],
                        "unsupported trace format version 2")]:
        f = tmp_path / "foreign"
        f.write_bytes(blob)
        with pytest.raises(TraceError, match=what):
            load(f)
    with pytest.raises(TraceError, match="directory"):
        load(tmp_path)
    with pytest.raises(TraceError, match="cannot read .*: No such file or directory"):
        load(tmp_path / "missing.mmt")


def test_reordered_events_are_refused(tmp_path):
    t = fork_write_trace(1 << 20)
    t.events[[10, 11]] = t.events[[11, 10]]
    t.events["ts"][10], t.events["ts"][11] = t.events["ts"][11], t.events["ts"][10]
    t.events[[10, 11]] = t.events[[11, 10]]       # ts no longer increasing
    with pytest.raises(TraceError, match="reordered"):
        t.save(tmp_path / "r.mmt")                # refused before anything is written
    assert not (tmp_path / "r.mmt").exists()


def test_reordered_sections_are_refused(trace_file, tmp_path):
    """Two sections swapped in the file (the header re-signed): offsets no longer agree."""
    import hashlib
    import struct
    _, path = trace_file
    data = path.read_bytes()
    hlen = struct.unpack_from("<Q", data, 18)[0]
    hdr = json.loads(data[PREAMBLE_SIZE:PREAMBLE_SIZE + hlen])
    a, b = hdr["sections"][1], hdr["sections"][2]
    blob_a = data[a["offset"]:a["offset"] + a["length"]]
    blob_b = data[b["offset"]:b["offset"] + b["length"]]
    body = data[:a["offset"]] + blob_b + blob_a + data[b["offset"] + b["length"]:]
    hdr["sections"][1], hdr["sections"][2] = b, a
    raw = json.dumps(hdr, sort_keys=True).encode().ljust(hlen)
    body = body[:26] + hashlib.sha256(raw).digest() + raw + body[PREAMBLE_SIZE + hlen:]
    f = tmp_path / "swapped.mmt"
    f.write_bytes(body)
    with pytest.raises(TraceError, match="starts at byte"):
        load(f)


def test_bad_checkpoint_reference(tmp_path):
    from mmemu.trace.events import CHECKPOINT_DTYPE
    t = fork_write_trace(1 << 20)
    t.checkpoints = np.zeros(1, CHECKPOINT_DTYPE)
    t.checkpoints["event"] = len(t.events) + 1
    with pytest.raises(TraceError, match="checkpoint"):
        t.validate()


def test_to_pandas():
    pd = pytest.importorskip("pandas", reason="pandas is the optional 'trace' extra")
    t = fork_write_trace(1 << 20)
    df = t.to_pandas()
    assert isinstance(df, pd.DataFrame) and len(df) == len(t.events)
    assert (df["kind"] == "fault").sum() == int((t.events["kind"] == FAULT).sum())
    assert list(df.loc[df["kind"] == "syscall", "syscall"]) == ["mmap", "munmap"]
    assert df["write"].sum() == 512


def test_trace_info_cli(trace_file, capsys):
    from mmemu.cli import main
    _, path = trace_file
    assert main(["trace", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "events:      517" in out and "lost events: 0" in out


def test_trace_info_of_a_bad_file_is_one_line(tmp_path, capsys):
    from mmemu.cli import main
    f = tmp_path / "x"
    f.write_bytes(b"junk")
    assert main(["trace", "info", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmemu: not an mmemu trace") and err.count("\n") == 1
