"""Snapshots: Machine.save / Machine.load round-trip a machine exactly, identical runs give
identical machines and byte-identical files, and a bad file raises SnapshotError with
nothing built."""
import hashlib
import json
import os
import struct

import numpy as np
import pytest
from mmemu._core.constants import NR_EVENTS

import mmemu
from mmemu import (
    MADV_DONTNEED, MADV_GUARD_INSTALL, MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, MREMAP_MAYMOVE,
    PR_SET_COW_PTE, Madv,
)
from mmemu import snapshot as snap

PG = 4096
RW = 3
PRIV = MAP_PRIVATE | MAP_ANONYMOUS
SHARED = MAP_SHARED | MAP_ANONYMOUS
PM_PRESENT = 1 << 63
PFN_MASK = (1 << 55) - 1


# ---------------------------------------------------------------- what is compared
def observe(m):
    """Everything a user can read from the machine, plus the full internal state (the
    snapshot's own view: frame metadata, allocator, every Python field), without changing
    anything (page contents are read through the page tables, not by faulting)."""
    out = {"meminfo": str(m.meminfo()), "vmstat": dict(m.vmstat()),
           "accounting": m.cow_pte_accounting, "memory": m.memory,
           "max_map_count": m.max_map_count}
    procs = []
    for p in m.processes:
        pm, data = [], []
        for v in p.mm.vmas:
            e = p.pagemap(v.start, (v.end - v.start) // PG)
            pm.append((v.start, e.tobytes()))
            for i in np.flatnonzero(e & np.uint64(PM_PRESENT)):
                data.append(m.phys.frame(int(e[i]) & PFN_MASK))
        procs.append({
            "pid": p.pid, "parent": p.parent.pid if p.parent else None,
            "children": [c.pid for c in p.children], "maps": str(p.maps()),
            "smaps": str(p.smaps()), "rollup": dict(p.smaps_rollup()),
            "status": dict(p.status()), "statm": str(p.statm()), "pagemap": pm,
            "data": hashlib.sha256(b"".join(data)).hexdigest(),
            "prctl": p.prctl(mmemu.PR_GET_COW_PTE), "brk": p.mm.brk,
        })
    out["procs"] = procs
    out["files"] = [(f.path, f.size, f.read(0, f.size)) for f in m.files]
    state, arrays = m.dump_state()
    out["state"] = json.dumps(state, sort_keys=True)
    out["arrays"] = {k: v.tobytes() for k, v in arrays.items()}
    pfns = arrays["data_pfns"]
    out["frames"] = hashlib.sha256(m.phys.read_frames(pfns).tobytes()).hexdigest()
    return out


def assert_same(a, b):
    """Compare two observe() results key by key (a readable first difference)."""
    assert a.keys() == b.keys()
    for k in a:
        if k == "procs":
            assert len(a[k]) == len(b[k])
            for pa, pb in zip(a[k], b[k]):
                for kk in pa:
                    assert pa[kk] == pb[kk], f"pid {pa['pid']}: {kk} differs"
        else:
            assert a[k] == b[k], f"{k} differs"


# ---------------------------------------------------------------- a varied machine
BASE = 0x7E0000000000


def build(m):
    """Every kind of state: classic and COW forks (shared tables not yet broken, some
    broken), an owner that exited (deferred hand-over), files (shared and private maps,
    dirty pages, an unlinked but mapped file), shmem, mremap, guard regions, brk, prctl,
    WIPEONFORK, DONTNEED, mprotect, an exited child and an execve."""
    p = m.spawn(layout="typical")
    a = p.mmap(BASE, 6 << 20, RW, PRIV | mmemu.MAP_FIXED)
    p.touch(a, 6 << 20)
    p.write(a + 5, b"parent data" * 100)
    p.write(a + (4 << 20) + 123, os.urandom(3 * PG))
    p.touch(a + (5 << 20), 8 * PG, write=False)          # zero-page reads
    sh = p.mmap(0, 8 * PG, RW, SHARED)
    p.write(sh, b"shmem!")
    f = m.create_file("/data", data=bytes(range(256)) * 64)
    fm = p.mmap(0, 16 * PG, RW, MAP_SHARED, file=f)
    p.write(fm + PG, b"through the map")
    fp = p.mmap(0, 4 * PG, RW, MAP_PRIVATE, file=f)
    p.read(fp, 10)
    p.write(fp + 2 * PG, b"private cow")
    g = m.create_file("/gone", data=b"g" * 3 * PG)
    gm = p.mmap(0, 3 * PG, 1, MAP_SHARED, file=g)
    p.read(gm, 1)
    g.unlink()
    m.write_file(f, 5 * PG, b"dirty page")
    top = p.brk(0)
    p.brk(top + 5 * PG)
    p.write(top, b"heap")
    r = p.mmap(0, 1 << 20, RW, PRIV)
    p.write(r, b"to be moved")
    r2 = p.mremap(r, 1 << 20, 2 << 20, MREMAP_MAYMOVE)
    p.madvise(a + (3 << 20), 4 * PG, MADV_GUARD_INSTALL)
    w = p.mmap(0, 4 * PG, RW, PRIV)
    p.write(w, b"wipe me")
    p.madvise(w, 4 * PG, Madv.WIPEONFORK)
    p.madvise(a + (2 << 20), 16 * PG, MADV_DONTNEED)
    p.mprotect(a + (1 << 20), 4 * PG, 1)
    p.swap_out(a + (4 << 20), 8 * PG)              # swap entries (and their data) ...

    c1 = p.fork()                                  # ... shared with the children
    c1.write(a + 5, b"child1")
    c2 = p.fork(cow_pgtable=True)                  # shares tables
    c2.write(a + (1 << 21) + 7, b"c2 breaks one table")
    p.prctl(PR_SET_COW_PTE, 1)
    c3 = p.fork()                                  # COW by prctl, nothing broken yet
    gc3 = c3.fork()                                # grandchild, shares c3's (and p's) tables
    q = m.spawn()
    qa = q.mmap(0, 2 << 20, RW, PRIV)
    q.write(qa, b"q" * 5000)
    qc = q.fork(cow_pgtable=True)
    q.exit()                                       # deferred: ownership passes to qc
    e = c1.fork()
    e.exit(3)                                      # an exited child
    c1.execve()
    c1.mmap(0, 3 * PG, RW, PRIV)
    m.check()
    return {"a": a, "sh": sh, "fm": fm, "fp": fp, "r2": r2, "top": top, "qa": qa,
            "pids": [p.pid, c2.pid, c3.pid, gc3.pid, qc.pid]}


def further(m, info):
    """The same operations on the original and the loaded machine: writes to shared tables
    (break_cow_pte), forks, faults that allocate (free lists), munmap, exits, file and
    process creation (inode and pid counters)."""
    p, c2, c3, gc3, qc = (m.process(pid) for pid in info["pids"])
    a = info["a"]
    c3.write(a + 100, b"c3 breaks")
    assert c3.read(a + (4 << 20) + 123, 4) == p.read(a + (4 << 20) + 123, 4)   # swap-ins
    gc3.touch(a + (1 << 21), 64 * PG)
    qc.write(info["qa"] + 9000, b"qc writes")
    n = p.fork(cow_pgtable=True)
    n.write(info["sh"], b"shared write")
    p.munmap(a + (4 << 20), 1 << 20)
    c2.exit()
    x = p.mmap(0, 64 * PG, RW, PRIV)
    p.touch(x, 64 * PG)
    p.write(x, b"new")
    h = m.create_file("/new", data=b"n" * 100)
    p.mmap(0, PG, 1, MAP_PRIVATE, file=h)
    s = m.spawn(layout="typical")
    s.fork().exit()
    gc3.exit()
    p.brk(info["top"] + 2 * PG)
    m.check()


# ---------------------------------------------------------------- round trip
def test_round_trip_is_exact(tmp_path, fork_design):
    m = mmemu.Machine("1G")
    info = build(m)
    path = tmp_path / "m.mms"
    m.save(path)
    m2 = mmemu.Machine.load(path, check=True)
    assert type(m2) is mmemu.Machine
    before = observe(m)
    assert_same(before, observe(m2))
    assert m2.cow_pte_accounting == m.cow_pte_accounting
    m.check()
    m2.check()
    further(m, info)
    further(m2, info)
    assert_same(observe(m), observe(m2))
    # and a second generation: the loaded machine saves to the same bytes as the original
    m.save(tmp_path / "a.mms")
    m2.save(tmp_path / "b.mms")
    assert (tmp_path / "a.mms").read_bytes() == (tmp_path / "b.mms").read_bytes()


@pytest.mark.one_design
@pytest.mark.parametrize("compress", [True, False])
def test_empty_and_uncompressed(tmp_path, compress):
    m = mmemu.Machine("64M", max_map_count=77)
    m.save(tmp_path / "e.mms", compress=compress)
    m2 = mmemu.Machine.load(tmp_path / "e.mms")
    assert_same(observe(m), observe(m2))
    assert m2.max_map_count == 77 and m2.processes == []
    assert m2.spawn().pid == m.spawn().pid == 1


@pytest.mark.one_design
def test_pid_and_inode_counters_survive(tmp_path):
    m = mmemu.Machine("64M")
    for _ in range(3):
        m.spawn().exit()
    m.create_file("/a").unlink()
    m.save(tmp_path / "c.mms")
    m2 = mmemu.Machine.load(tmp_path / "c.mms")
    assert m.spawn().pid == m2.spawn().pid == 4
    assert m.create_file("/b").inode == m2.create_file("/b").inode


def test_saving_leaves_the_machine_unchanged(tmp_path, fork_design):
    m = mmemu.Machine("1G")
    info = build(m)
    before = observe(m)
    m.save(tmp_path / "x.mms")
    assert_same(before, observe(m))
    further(m, info)


# ---------------------------------------------------------------- determinism
def test_identical_runs_give_identical_machines_and_files(tmp_path, fork_design):
    runs = []
    for i in range(2):
        m = mmemu.Machine("1G")
        info = build_deterministic(m)
        further(m, info)
        m.save(tmp_path / f"{i}.mms")
        runs.append(observe(m))
    assert_same(runs[0], runs[1])
    assert (tmp_path / "0.mms").read_bytes() == (tmp_path / "1.mms").read_bytes()


def build_deterministic(m):
    """build() without its random bytes."""
    real = os.urandom
    os.urandom = lambda n: bytes((i * 7 + 3) & 255 for i in range(n))
    try:
        return build(m)
    finally:
        os.urandom = real


# ---------------------------------------------------------------- bad files
@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A small valid snapshot (the bytes) and its header."""
    d = tmp_path_factory.mktemp("snap")
    m = mmemu.Machine("64M", cow_pgtable=True)
    p = m.spawn()
    a = p.mmap(0, 1 << 21, RW, PRIV)
    p.write(a, os.urandom(3 * PG))
    p.fork()
    f = m.create_file("/f", data=b"file" * 1000)
    p.mmap(0, PG, 1, MAP_SHARED, file=f)
    m.save(d / "good.mms")
    data = (d / "good.mms").read_bytes()
    hlen = struct.unpack_from("<Q", data, 18)[0]
    header = json.loads(data[snap.PREAMBLE_SIZE:snap.PREAMBLE_SIZE + hlen])
    return data, header


def load_bytes(tmp_path, data, name="bad.mms"):
    path = tmp_path / name
    path.write_bytes(data)
    return mmemu.Machine.load(path)


def expect(tmp_path, data, pattern):
    with pytest.raises(mmemu.SnapshotError, match=pattern):
        load_bytes(tmp_path, data)


@pytest.mark.one_design
def test_good_fixture_loads(tmp_path, good):
    load_bytes(tmp_path, good[0]).check()


@pytest.mark.one_design
def test_empty_file(tmp_path):
    expect(tmp_path, b"", "not an mmemu snapshot: the file is empty")


@pytest.mark.one_design
def test_truncated_anywhere(tmp_path, good):
    data, header = good
    hend = snap.PREAMBLE_SIZE + struct.unpack_from("<Q", data, 18)[0]
    cuts = {1, 5, 10, 20, 57, 58, 59, hend // 2, hend - 1, hend, len(data) - 1}
    for s in header["sections"]:
        cuts |= {s["offset"], s["offset"] + 1, s["offset"] + s["length"] // 2}
    cuts |= set(np.linspace(1, len(data) - 1, 24).astype(int).tolist())
    cuts = sorted(c for c in cuts if 0 < c < len(data))
    assert len(cuts) >= 36
    for n in cuts:
        with pytest.raises(mmemu.SnapshotError) as e:
            load_bytes(tmp_path, data[:n])
        msg = str(e.value)
        assert f"truncated snapshot: the file ends at byte {n}" in msg, msg
        if n < snap.PREAMBLE_SIZE:
            assert "preamble" in msg
        elif n < hend:
            assert "inside the header" in msg
        else:
            sec = next(s for s in header["sections"] if s["offset"] <= n < s["offset"] + s["length"])
            assert f"inside section {sec['name']!r}" in msg


@pytest.mark.one_design
def test_flipped_byte_in_each_section(tmp_path, good):
    data, header = good
    hend = snap.PREAMBLE_SIZE + struct.unpack_from("<Q", data, 18)[0]
    for off in (snap.PREAMBLE_SIZE, snap.PREAMBLE_SIZE + 7, hend - 1, 30, 57):
        bad = bytearray(data)
        bad[off] ^= 0x40
        expect(tmp_path, bytes(bad), r"checksum mismatch in the header")
    assert len(header["sections"]) >= 10
    for s in header["sections"]:
        if s["length"] == 0:
            continue
        for off in (s["offset"], s["offset"] + s["length"] - 1):
            bad = bytearray(data)
            bad[off] ^= 1
            expect(tmp_path, bytes(bad), rf"checksum mismatch in section '{s['name']}' "
                                         rf"\(bytes {s['offset']}-{s['offset'] + s['length']}\)")


@pytest.mark.one_design
def test_wrong_magic_version_flags(tmp_path, good):
    data = good[0]
    expect(tmp_path, b"\x89MMEMX" + data[6:], "not an mmemu snapshot")
    expect(tmp_path, data[:10] + struct.pack("<I", 3) + data[14:],
           "unsupported snapshot format version 3 \\(this mmemu reads versions 1, 2\\)")
    expect(tmp_path, data[:10] + struct.pack("<I", 0) + data[14:], "unsupported .* version 0")
    expect(tmp_path, data[:14] + struct.pack("<I", 1) + data[18:], "unsupported snapshot flags")
    expect(tmp_path, data + b"\0" * 3, "3 bytes after the end of the snapshot")


@pytest.mark.one_design
def test_foreign_files(tmp_path):
    png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(100)
    expect(tmp_path, png, "not an mmemu snapshot")
    with open("/etc/passwd", "rb") as f:
        expect(tmp_path, f.read(), "not an mmemu snapshot")
    expect(tmp_path, b"\x89", "truncated snapshot: the file ends at byte 1, inside the 58-byte preamble")
    expect(tmp_path, np.arange(10000, dtype=np.int64).tobytes(), "not an mmemu snapshot")
    with pytest.raises(FileNotFoundError):
        mmemu.Machine.load(tmp_path / "missing.mms")
    assert issubclass(mmemu.SnapshotError, ValueError)


def rewrite(data, header_fn=None, state_fn=None, section_fn=None):
    """A re-sealed snapshot (valid checksums) with a changed header or state."""
    hlen = struct.unpack_from("<Q", data, 18)[0]
    header = json.loads(data[snap.PREAMBLE_SIZE:snap.PREAMBLE_SIZE + hlen])
    body = {}
    for s in header["sections"]:
        raw = data[s["offset"]:s["offset"] + s["length"]]
        body[s["name"]] = __import__("zlib").decompress(raw) if s["codec"] == "zlib" else raw
    if state_fn is not None:
        st = json.loads(body["state"])
        state_fn(st)
        body["state"] = json.dumps(st).encode()
    if section_fn is not None:
        section_fn(body)
    secs, pos = [], 0
    blobs = []
    for s in header["sections"]:
        raw = body[s["name"]]
        s = dict(s, codec="none", raw_length=len(raw), length=len(raw),
                 sha256=hashlib.sha256(raw).hexdigest())
        secs.append(s)
        blobs.append(raw)
    header["sections"] = secs
    if header_fn is not None:
        header_fn(header)
    for _ in range(2):       # offsets depend on the header length
        hb = json.dumps(header).encode()
        pos = snap.PREAMBLE_SIZE + len(hb)
        for s in header["sections"]:
            if isinstance(s, dict) and isinstance(s.get("offset"), int):
                s["offset"] = pos
                pos += s["length"]
        if isinstance(header.get("file_size"), int):
            header["file_size"] = pos
    hb = json.dumps(header).encode()
    pre = struct.pack("<10sIIQ32s", snap.MAGIC, snap.FORMAT_VERSION, 0, len(hb),
                      hashlib.sha256(hb).digest())
    return pre + hb + b"".join(blobs)


@pytest.mark.one_design
def test_resealed_copy_loads(tmp_path, good):
    m = load_bytes(tmp_path, rewrite(good[0]))
    m.check()
    assert_same(observe(m), observe(load_bytes(tmp_path, good[0], "g.mms")))


@pytest.mark.one_design
def test_files_with_the_two_unused_event_slots_load(tmp_path, good):
    """Snapshots written before every event slot had a name carry 32 event counters, the
    last two always 0: they load, with the same counters (slots 30 and 31 are TLB counters
    now, saved only when used); more counters than slots are refused."""
    m0 = load_bytes(tmp_path, good[0], "g.mms")
    assert len(m0.phys.events()) == NR_EVENTS
    old = rewrite(good[0], state_fn=lambda s: s["physmem"]["events"].extend([0, 0]))
    m = load_bytes(tmp_path, old)
    m.check()
    assert dict(m.vmstat()) == dict(m0.vmstat())
    assert_same(observe(m), observe(m0))
    expect(tmp_path, rewrite(good[0], state_fn=lambda s: s["physmem"]["events"].extend(
        [0] * (NR_EVENTS - 30 + 1))), f"expected 30 to {NR_EVENTS} event counters")


@pytest.mark.one_design
@pytest.mark.parametrize("change, pattern", [
    (lambda h: h.update(file_size="12"), "'file_size' must be an integer, got str"),
    (lambda h: h.update(sections={}), "'sections' must be list, got dict"),
    (lambda h: h["sections"][0].update(codec="lzma"), "unknown codec 'lzma'"),
    (lambda h: h["sections"][1].update(name=7), "'name' must be str, got int"),
    (lambda h: h["sections"][2].update(shape=[-1]), "bad shape"),
    (lambda h: h.update(format="hdf5"), "does not describe an mmemu snapshot"),
    (lambda h: h["sections"].pop(), "missing sections: frames"),
    (lambda h: h["sections"][1].update(dtype="<f8"), "not an integer type"),
    (lambda h: h["sections"][1].update(raw_length=3), "do not match"),
])
def test_header_with_wrong_types(tmp_path, good, change, pattern):
    expect(tmp_path, rewrite(good[0], header_fn=change), pattern)


@pytest.mark.one_design
@pytest.mark.parametrize("change, pattern", [
    (lambda s: s["machine"].update(memory="64M"), "'memory' must be an integer, got str"),
    (lambda s: s["machine"].update(memory=4096), "memory 4096 bytes but"),
    (lambda s: s["processes"][0]["mm"]["vmas"][0].__setitem__(0, "x"), "VMA fields must be integers"),
    (lambda s: s["processes"][0]["mm"]["vmas"][0].__setitem__(4, 99), "backing index 99 out of range"),
    (lambda s: s["processes"][0]["mm"]["vmas"][0].__setitem__(3, 1 << 63), "field out of range"),
    (lambda s: s["anon_vmas"].append(3), "anon_vmas must be booleans"),
    (lambda s: s["processes"][0]["mm"]["core"].update(pgd=1 << 40), "outside memory"),
    (lambda s: s["processes"][1].update(parent=999), "parent 999 is not a live process"),
    (lambda s: s["processes"][1].update(pid=1), "pid 1 appears twice"),
    (lambda s: s["backings"][0].update(users=5), "5 users recorded"),
    (lambda s: s["physmem"].update(data_hwm=1 << 30), "bad used ranges"),
    (lambda s: s["physmem"]["events"].pop(), "event counters"),
    (lambda s: s.update(processes=None), "'processes' must be list"),
    (lambda s: s["processes"][0]["mm"]["core"].update(rss=[1, 2]), "4 rss counters|2 rss counters"),
])
def test_state_with_wrong_contents(tmp_path, good, change, pattern):
    expect(tmp_path, rewrite(good[0], state_fn=change), pattern)


@pytest.mark.one_design
def test_page_tables_pointing_outside_memory_are_refused(tmp_path, good):
    def corrupt(body):
        pfns = np.frombuffer(body["data_pfns"], dtype="<i8")
        flags = np.frombuffer(body["frame.flags"], dtype="<u4")
        st = json.loads(body["state"])
        pgd = st["processes"][0]["mm"]["core"]["pgd"]
        frames = bytearray(body["frames"])
        k = int(np.flatnonzero(pfns == pgd)[0])
        table = np.frombuffer(frames, dtype="<u8", count=512, offset=k * PG).copy()
        i = int(np.flatnonzero(table)[0])
        table[i] = (table[i] & 0xFFF) | (1 << 45)     # a PUD beyond memory
        frames[k * PG:(k + 1) * PG] = table.tobytes()
        body["frames"] = bytes(frames)
        assert flags.size
    expect(tmp_path, rewrite(good[0], section_fn=corrupt), "bad PGD entry")


@pytest.mark.one_design
def test_bad_files_do_not_leak_host_memory(tmp_path, good):
    """A file that fails late (after physical memory was created) frees it at once."""
    from test_machine import host_rss_kb
    bad = rewrite(good[0], state_fn=lambda s: s["backings"][0].update(users=9))
    path = tmp_path / "late.mms"
    path.write_bytes(bad)
    for _ in range(20):
        with pytest.raises(mmemu.SnapshotError):
            mmemu.Machine.load(path)
    before = host_rss_kb()
    for _ in range(300):
        with pytest.raises(mmemu.SnapshotError):
            mmemu.Machine.load(path)
    assert host_rss_kb() - before < 4096


@pytest.mark.one_design
def test_save_is_atomic_and_refuses_unknown_state(tmp_path):
    m = mmemu.Machine("64M")
    p = m.spawn()
    path = tmp_path / "s.mms"
    m.save(path)
    good = path.read_bytes()
    p.mm.swap_extents = [1]              # state the format does not know
    with pytest.raises(mmemu.SnapshotError, match="swap_extents"):
        m.save(path)
    assert path.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["s.mms"]


@pytest.mark.one_design
def test_every_object_declares_its_state_where_it_is_made(tmp_path):
    """Explicit machine state: after a varied run, every attribute of every object save()
    writes is one its class's __init__ assigns (the swap device and the import registry
    included), and an attribute added later to any of them makes save() refuse, naming it."""
    from mmemu.state import declared_attributes
    m = mmemu.Machine("1G")
    build(m)
    assert {"swap_device", "_import_registry"} <= declared_attributes(mmemu.Machine)
    p = m.processes[0]
    shmem = next(b for b in m._backings if type(b).__name__ == "ShmemFile")
    objects = [m, p, p.mm, p.mm.vmas[0], m.files[0], shmem, m.swap_device]
    objects += [q for q in m.processes] + [q.mm for q in m.processes] + list(m._backings)
    for obj in objects:
        assert set(vars(obj)) <= declared_attributes(type(obj)), type(obj).__name__
    m.save(tmp_path / "ok.mms")
    for obj in objects[:7]:
        obj.later = 1
        with pytest.raises(mmemu.SnapshotError, match="has state the snapshot format does not "
                                                      "know: later"):
            m.save(tmp_path / "no.mms")
        del obj.later
    assert sorted(os.listdir(tmp_path)) == ["ok.mms"]


@pytest.mark.one_design
def test_load_check_flag_runs_the_checker(tmp_path):
    m = mmemu.Machine("64M")
    p = m.spawn()
    a = p.mmap(0, PG, RW, PRIV)
    p.touch(a, PG)
    p.mm.core._debug_poke("rss", 7, 1)
    m.save(tmp_path / "x.mms")
    for check in (True, False):                     # the checker always runs
        with pytest.raises(mmemu.SnapshotError, match="(?s)fails Machine.check.*pid 1: rss"):
            mmemu.Machine.load(tmp_path / "x.mms", check=check)


@pytest.mark.one_design
def test_docs_snapshot_example_runs(tmp_path, monkeypatch):
    import pathlib
    text = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "snapshots.md").read_text()
    part = text[text.index("# Snapshots"):]
    code = part[part.index("```python") + 9:]
    code = code[:code.index("```")]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/snapshots.md", "exec"), {})
    assert (tmp_path / "machine.mms").stat().st_size < 400 * 1024


# ---------------------------------------------------------------- random runs
RBASE = 0x7F0000000000 - 64 * PG      # a 128-page window over two PMD spans


def random_step(m, rng):
    """One random syscall or access (an error or signal is part of the run)."""
    procs = m.processes
    if not procs:
        q = m.spawn()
        q.mmap(RBASE, 128 * PG, RW, PRIV | mmemu.MAP_FIXED)
        q.write(RBASE, bytes(range(1, 256)) * (100 * PG // 255))
        return
    p = rng.choice(procs)
    pg = rng.randrange(128)
    n = rng.randrange(1, 24)
    addr, length = RBASE + pg * PG, n * PG
    op = rng.randrange(16)
    if op in (5, 6, 7, 14) and p.mm.vmas and rng.random() < 0.8:
        v = rng.choice(p.mm.vmas)                 # an access inside a mapping
        addr = v.start + rng.randrange((v.end - v.start) // PG) * PG
        length = min(length, v.end - addr)
    try:
        if op == 0:
            p.mmap(addr, length, RW, PRIV | mmemu.MAP_FIXED)
        elif op == 1:
            p.mmap(addr, length, RW, SHARED | mmemu.MAP_FIXED)
        elif op == 2:
            f = m.files[0] if m.files else m.create_file("/r", data=bytes(range(256)) * 64)
            p.mmap(addr, length, RW, rng.choice([MAP_SHARED, MAP_PRIVATE]) | mmemu.MAP_FIXED, file=f)
        elif op == 3:
            p.munmap(addr, length)
        elif op == 4:
            p.mprotect(addr, length, rng.choice([0, 1, 3]))
        elif op in (5, 6):
            p.write(addr, bytes([rng.randrange(1, 256)]) * rng.randrange(1, 3 * PG))
        elif op == 7:
            p.read(addr, rng.randrange(1, 2 * PG))
        elif op == 8:
            p.fork(cow_pgtable=(rng.random() < 0.6) or None)
        elif op == 9 and len(procs) > 1:
            p.exit()
        elif op == 10:
            p.madvise(addr, length, rng.choice([Madv.DONTNEED, Madv.FREE, Madv.GUARD_INSTALL,
                                                Madv.GUARD_REMOVE, Madv.WIPEONFORK]))
        elif op == 11:
            p.mremap(addr, length, rng.randrange(1, 24) * PG, MREMAP_MAYMOVE)
        elif op == 12:
            p.brk(p.brk(0) + rng.randrange(-4, 8) * PG)
        elif op == 13 and m.files:
            f = m.files[0]
            if rng.random() < 0.5:
                m.write_file(f, rng.randrange(64 * PG), b"w" * rng.randrange(1, 2 * PG))
            else:
                f.truncate(rng.randrange(64 * PG))
        elif op == 14:
            p.touch(addr, length, write=rng.random() < 0.5)
        elif op == 15:
            p.prctl(PR_SET_COW_PTE, rng.randrange(2))
    except (mmemu.MMError, mmemu.SegmentationFault, mmemu.BusError):
        pass


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_runs_continue_identically_after_load(tmp_path, fork_design, seed):
    import random
    rng = random.Random(seed)
    m = mmemu.Machine("64M")
    for _ in range(rng.randrange(30, 70)):
        random_step(m, rng)
    path = tmp_path / "r.mms"
    m.save(path)
    m2 = mmemu.Machine.load(path, check=True)
    assert_same(observe(m), observe(m2))
    state = rng.getstate()
    for machine in (m, m2):
        rng.setstate(state)
        for _ in range(60):
            random_step(machine, rng)
        machine.check()
    assert_same(observe(m), observe(m2))


@pytest.mark.one_design
def test_identical_runs_in_separate_interpreters(tmp_path):
    """Another interpreter (another hash seed, other object addresses) writes the same bytes."""
    import subprocess
    import sys
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import mmemu, test_snapshot as t\n"
        "m = mmemu.Machine('1G', cow_pgtable=True); i = t.build_deterministic(m)\n"
        "t.further(m, i); m.save(sys.argv[2])\n")
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONHASHSEED="12345",
               PYTHONPATH=os.pathsep.join([os.path.dirname(mmemu.__path__[0]),
                                           os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", code, here, str(tmp_path / "other.mms")],
                   check=True, env=env)
    m = mmemu.Machine("1G", cow_pgtable=True)
    further(m, build_deterministic(m))
    m.save(tmp_path / "here.mms")
    assert (tmp_path / "other.mms").read_bytes() == (tmp_path / "here.mms").read_bytes()


# ---------------------------------------------------------------- the page allocator
def fragmented(m):
    """A machine whose free memory is on every kind of list: per-cpu-pages lists cut short
    (so frees reach the buddy lists), blocks of several orders, and the gap. (Every frame
    in use is a process's: a loaded machine passes check().)"""
    m.phys.pcp_limits = (8, 4)
    p = m.spawn()
    a = p.mmap(0, 4 << 20, RW, PRIV)
    p.write(a, b"z" * (3 << 20))
    c = p.fork()
    c.write(a + 5 * PG, b"child")
    for off in range(0, 3 << 20, 3 * PG):
        p.madvise(a + off, PG, MADV_DONTNEED)
    c.madvise(a, 8 * PG, MADV_DONTNEED)         # frees 0, 3 and 6 (the parent dropped them)
    for order, off in ((1, 40), (2, 64), (3, 128), (4, 256), (5, 384)):
        for q in (c, p):                        # runs of 2^order pages, freed by both
            q.madvise(a + off * PG, (1 << order) * PG, MADV_DONTNEED)
    m.check()
    lists = m.phys.free_lists()
    assert len(set(lists["blocks"][1].tolist())) >= 3 and m.phys.pcp_pages > 0
    return p, c, a


@pytest.mark.one_design
def test_round_trip_keeps_the_free_lists(tmp_path):
    m = mmemu.Machine("64M")
    p, c, a = fragmented(m)
    m.save(tmp_path / "f.mms")
    m2 = mmemu.Machine.load(tmp_path / "f.mms")
    assert_same(observe(m), observe(m2))
    l1, l2 = m.phys.free_lists(), m2.phys.free_lists()
    for k in ("pcp", "blocks"):
        assert all(np.array_equal(x, y) for x, y in zip(l1[k], l2[k]))
    assert l1["gap"] == l2["gap"] and m2.phys.pcp_limits == (8, 4)
    assert m2.buddyinfo() == m.buddyinfo()
    for mm in (m, m2):          # the same allocations come next, frees merge the same way
        pr, cr = mm.process(p.pid), mm.process(c.pid)
        pr.touch(a, 3 << 20)
        cr.munmap(a, 1 << 20)
        assert mm.phys._alloc_pages(6) >= 0
    assert_same(observe(m), observe(m2))
    assert m.buddyinfo() == m2.buddyinfo()


@pytest.fixture(scope="module")
def with_blocks(tmp_path_factory):
    m = mmemu.Machine("64M")
    fragmented(m)
    path = tmp_path_factory.mktemp("blocks") / "b.mms"
    m.save(path)
    return path.read_bytes()


def _blocks(body):
    return np.frombuffer(body["free_blocks"], dtype="<i8").copy()


@pytest.mark.one_design
@pytest.mark.parametrize("state_change, section_change, pattern", [
    (lambda s: s["physmem"].update(gap=[5, 6]), None, "bad gap"),
    (lambda s: s["physmem"]["free_blocks"].__setitem__(0, 1 + s["physmem"]["free_blocks"][0]),
     None, "free_blocks holds"),
    (lambda s: s["physmem"].update(pcp=[4, 8]), None, "bad pcp limits"),
    (lambda s: s["physmem"].update(nr_free=s["physmem"]["nr_free"] + 1), None, "nr_free is"),
    (None, lambda b: b.update(free_blocks=np.where(_blocks(b) == _blocks(b)[0], 1,
                                                   _blocks(b)).astype("<i8").tobytes()),
     "overlap|in use|PG_BUDDY|not aligned"),
    (None, lambda b: b.update(free_data=b"\0" * 8 + b["free_data"][8:]),      # the zero page
     "the free lists hold frames in use"),
    (None, lambda b: b.update(free_data=b["free_data"][:8] * 2 + b["free_data"][16:]),
     "overlap"),
])
def test_inconsistent_free_lists_are_refused(tmp_path, with_blocks, state_change,
                                              section_change, pattern):
    expect(tmp_path, rewrite(with_blocks, state_fn=state_change, section_fn=section_change),
           pattern)


V1_FIXTURE = os.path.join(os.path.dirname(__file__), "data", "v1_cow_pair.mms")


@pytest.mark.one_design
def test_a_version_1_snapshot_loads():
    """tests/data/v1_cow_pair.mms: format 1, written before the buddy allocator by

        m = Machine("8M"); p = m.spawn()
        a = p.mmap(0x7f0000000000, 8 * PG, RW, PRIV | MAP_FIXED)
        p.write(a, b"parent page 0"); p.touch(a, 6 * PG)
        p.write(a + 5 * PG, b"to swap"); p.swap_out(a + 5 * PG, PG)
        f = m.create_file("/f", data=b"F" * (2 * PG))
        fm = p.mmap(0x7f0000100000, 2 * PG, PROT_READ, MAP_SHARED | MAP_FIXED, file=f)
        p.read(fm, 1)
        c = p.fork(); c.write(a + PG, b"child wrote page 1")
        p.munmap(a + 4 * PG, PG); c.munmap(a + 4 * PG, PG)
        c.write(a + 2 * PG, b"child wrote page 2"); c.munmap(a + PG, PG)
        b = p.mmap(0x7f0000400000, PG, RW, PRIV | MAP_FIXED); p.touch(b, PG); p.munmap(b, PG)
        m.save(path)

    Its two free stacks (data frame 8, table frame 2039) load as the pcp lists and its
    never-used frames 9..2038 as the gap; the next frames handed out are the ones the old
    allocator would have given."""
    m = mmemu.Machine.load(V1_FIXTURE, check=True)
    a, fm = 0x7F0000000000, 0x7F0000100000
    p, c = m.process(1), m.process(2)
    assert c.parent is p and [q.pid for q in m.processes] == [1, 2]
    mi = m.meminfo()
    # 2048 frames: the zero page, 8 tables (PGD, PUD, PMD, PTE each), anon pages 0-3 of the
    # parent and the child's copy of page 2 (5), the file's 2 cache pages: 16 in use
    assert (mi["MemTotal"], mi["MemFree"], mi["AnonPages"], mi["Cached"], mi["Mapped"],
            mi["PageTables"], mi["SwapTotal"], mi["SwapFree"]) == (8192, 2032 * 4, 20, 8, 8, 32, 256, 252)
    assert (p.status()["VmRSS"], c.status()["VmRSS"]) == (24, 12)
    assert (p.status()["VmSwap"], c.status()["VmSwap"]) == (4, 4)
    ev = m.vmstat()
    assert (ev["pgfault"], ev["cow_fault"], ev["pgalloc"], ev["pgfree"], ev["pgtable_alloc"],
            ev["pgtable_free"], ev["pswpout"]) == (10, 2, 11, 4, 9, 1, 1)
    lists = m.phys.free_lists()
    assert [x.tolist() for x in lists["pcp"]] == [[8], [2039]]
    assert len(lists["blocks"][0]) == 0 and lists["gap"] == (9, 2039)
    assert m.phys.used_ranges() == ((0, 9), (2039, 2048))
    # the gap 9..2038: 9, 10-11, 12-15, 16-31, ..., 512-1023 and down again from 2038
    assert m.buddyinfo() == (2, 2, 2, 0, 2, 2, 2, 2, 2, 2, 0)
    assert m.phys.pcp_pages == 2 and 2030 + 2 == 2032
    assert p.read(a, 13) == c.read(a, 13) == b"parent page 0"
    assert c.read(a + 2 * PG, 18) == b"child wrote page 2"
    assert p.read(fm, 4) == b"FFFF"
    pfn = lambda proc, addr: int(proc.pagemap(addr, 1)[0]) & PFN_MASK     # noqa: E731
    assert p.read(a + 5 * PG, 7) == b"to swap" and pfn(p, a + 5 * PG) == 8    # the hot frame
    assert c.read(a + 5 * PG, 7) == b"to swap" and pfn(c, a + 5 * PG) == 9    # then the gap
    x = p.mmap(0x7F0000400000, PG, RW, PRIV | mmemu.MAP_FIXED)
    p.touch(x, PG)
    assert pfn(p, x) == 10 and m.phys.free_lists()["pcp"][1].tolist() == []   # table 2039
    m.check()


V2_FIXTURE = os.path.join(os.path.dirname(__file__), "data", "v2_cow_sparse_swap.mms")


@pytest.mark.one_design
def test_a_version_2_snapshot_saves_again_to_the_same_file(tmp_path):
    """Written before each class saved its own state, read and written again since: the
    same header (but for the writer's version) and the same bytes in every section."""
    mmemu.Machine.load(V2_FIXTURE).save(tmp_path / "again.mms")

    def parts(data):
        hlen = struct.unpack_from("<Q", data, 18)[0]
        header = json.loads(data[snap.PREAMBLE_SIZE:snap.PREAMBLE_SIZE + hlen])
        header.pop("mmemu_version")
        return header, data[snap.PREAMBLE_SIZE + hlen:]
    with open(V2_FIXTURE, "rb") as f:
        assert parts((tmp_path / "again.mms").read_bytes()) == parts(f.read())


@pytest.mark.one_design
def test_a_version_2_snapshot_loads():
    """tests/machine/data/v2_cow_sparse_swap.mms: format 2, written before each class saved
    its own state (main at 57d80ad) by

        m = Machine("8M", swap="1M"); m.phys.pcp_limits = (8, 4); p = m.spawn()
        A, B, F = 0x7f0000000000, 0x7f0000200000, 0x7f0000400000
        p.mmap(A, 32 * PG, RW, PRIV | MAP_FIXED); p.touch(A, 32 * PG); p.write(A, b"parent page 0")
        p.madvise(A + 16 * PG, 16 * PG, MADV_DONTNEED)
        p.mmap(B, 3 * PG, RW, PRIV | MAP_FIXED)
        for i in range(3): p.write(B + i * PG, b"swap %d" % i)
        p.swap_out(B, 3 * PG); p.read(B, 1); p.read(B + PG, 1)
        f = m.create_file("/sparse", size=1 << 30); m.write_file(f, 1 << 29, b"middle")
        t = m.create_file("/tmp/t", data=b"T" * PG, tmpfs=True)
        p.mmap(F, PG, PROT_READ, MAP_SHARED | MAP_FIXED, file=t); p.read(F, 1)
        c = p.fork(cow_pgtable=True); m.save(path)

    Data frames come from the bottom: 0 the zero page, A's 32 pages 1-32; DONTNEED frees
    17-32 onto the data pcp list (high 8, batch 4), which spills its 4 coldest frames twice:
    17 (order 0), 18-19 (order 1), 20-23 (order 2), 24 (order 0) on the buddy lists, 25-32
    on the list. B's writes take 32, 31, 30; swap-out gives them back (slots 0, 1, 2) and
    the two reads take 30 and 31 (slots 0 and 1 freed: slot 2 in use); the sparse file's
    one cached page (index 131072) takes 32, the tmpfs page 29: the pcp list is 25-28.
    Tables come from the top: the parent's PGD, PUD, PMD and PTE tables of A, B, F
    (2047-2042), the child's PGD, PUD, PMD (2041-2039) and its copy of B's table (2038: it
    holds a swap entry); A's table (2044) is shared (pt_share 2), F's is not copied (a
    shared mapping). In use: 21 data frames and 10 tables, 2017 free."""
    m = mmemu.Machine.load(V2_FIXTURE, check=True)
    A, B, F = 0x7F0000000000, 0x7F0000200000, 0x7F0000400000
    p, c = m.process(1), m.process(2)
    assert c.parent is p and [q.pid for q in m.processes] == [1, 2]
    assert m.cow_pte_accounting == "deferred" and m.phys.pcp_limits == (8, 4)
    mi = m.meminfo()
    assert (mi["MemTotal"], mi["MemFree"], mi["AnonPages"], mi["Cached"], mi["Mapped"],
            mi["Shmem"], mi["PageTables"], mi["SwapTotal"], mi["SwapFree"]) == \
        (8192, 2017 * 4, 18 * 4, 8, 4, 4, 40, 1024, 1020)
    # the parent: A's 16 pages and B's 2 (anon), the tmpfs page, one swap entry; VmPTE
    # leaves the PGD out (PUD, PMD, 3 PTE tables). The child: B's 2 pages; A's shared
    # table counts for its owner (deferred); PUD, PMD and B's table.
    ps, cs = p.status(), c.status()
    assert (ps["VmRSS"], ps["RssAnon"], ps["RssShmem"], ps["VmSwap"], ps["VmPTE"],
            ps["VmSize"], ps["VmHWM"]) == (76, 72, 4, 4, 20, 36 * 4, 32 * 4)
    assert (cs["VmRSS"], cs["RssAnon"], cs["RssShmem"], cs["VmSwap"], cs["VmPTE"]) == \
        (8, 8, 0, 4, 12)
    ev = m.vmstat()
    # faults: A 32, B 3, two swap-ins, the tmpfs read; allocations: 32 + 3 + 2 + 2 cache
    # pages; frees: 16 DONTNEED + 3 swapped out; 30, 31, 32 held data and were zeroed
    assert (ev["pgfault"], ev["fault_anon"], ev["fault_file"], ev["pgalloc"], ev["pgfree"],
            ev["pages_zeroed"], ev["pgtable_alloc"], ev["ptes_zapped"], ev["pswpout"],
            ev["pswpin"], ev["cow_pte_tables_shared"], ev["fork_pte_tables_copied"],
            ev["fork_ptes_copied"], ev["fork_ptes_wrprotected"]) == \
        (38, 35, 1, 39, 19, 3, 10, 16, 3, 2, 1, 1, 3, 2)
    lists = m.phys.free_lists()
    assert [x.tolist() for x in lists["pcp"]] == [[25, 26, 27, 28], []]
    assert lists["blocks"][0].tolist() == [24, 17, 18, 20]          # order 0, 0, 1, 2
    assert lists["blocks"][1].tolist() == [0, 0, 1, 2] and lists["gap"] == (33, 2038)
    assert m.phys.used_ranges() == ((0, 33), (2038, 2048))
    # blocks 17, 24 / 18 / 20 and the gap 33, 34-35, 36-39, 40-47, 48-63, 64-127 ...
    # 512-1023, 1024-1535, 1536-1791 ... 2016-2031, 2032-2035, 2036-2037
    assert m.buddyinfo() == (3, 3, 3, 1, 2, 1, 2, 2, 2, 2, 0)
    assert np.flatnonzero(m.phys.pt_share).tolist() == [2038, 2042, 2043, 2044]
    assert m.phys.pt_share[2044] == 2
    pfn = lambda proc, addr: int(proc.pagemap(addr, 1)[0]) & PFN_MASK     # noqa: E731
    assert pfn(p, A + PG) == pfn(c, A + PG) == 2
    assert (pfn(p, B), pfn(p, B + PG), pfn(c, B), pfn(c, B + PG)) == (30, 31, 30, 31)
    assert p.read(A, 13) == c.read(A, 13) == b"parent page 0"
    assert p.read(F, 4) == b"TTTT" and m.read_file(m.files[0], 1 << 29, 6) == b"middle"
    assert [f.path for f in m.files] == ["/sparse", "/tmp/t"] and m.files[0].size == 1 << 30
    # the child's write copies the shared table (2037, from the gap) and the page (28, the
    # hottest pcp frame); the swapped page comes back once per process (no swap cache)
    c.write(A + PG, b"child page 1")
    assert (pfn(p, A + PG), pfn(c, A + PG)) == (2, 28) and m.phys.used_ranges()[1] == (2037, 2048)
    assert c.read(B + 2 * PG, 6) == p.read(B + 2 * PG, 6) == b"swap 2"
    assert (pfn(c, B + 2 * PG), pfn(p, B + 2 * PG)) == (27, 26)
    assert m.meminfo()["SwapFree"] == 1024
    m.check()
