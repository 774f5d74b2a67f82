"""Hostile snapshots (issue 12 item 4): files whose checksums are right but whose contents
are not. Each is refused with SnapshotError -- never an abort, MemoryError, RecursionError
or a machine that breaks later -- and none makes the host allocate more than the file and
the machine it describes can justify. The cases that crashed or exhausted the host before
run in a subprocess under an address-space limit. The mutation fuzzer
(tests/properties/test_snapshot_mutations.py) is the class test; these are its named members.
"""
import hashlib
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest

import mmemu
from mmemu import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE

pytestmark = pytest.mark.one_design

PG = 4096
RW = 3
PRIV = MAP_PRIVATE | MAP_ANONYMOUS
PRE = struct.Struct("<10sIIQ32s")
A = 0x7F0000000000                      # a PMD span (2 MiB) of its own
V1_FIXTURE = os.path.join(os.path.dirname(__file__), "data", "v1_cow_pair.mms")


# ---------------------------------------------------------------- the file, taken apart
def unseal(data: bytes):
    """(version, header, {section: decoded bytes}) of a snapshot."""
    _, version, _, hlen, _ = PRE.unpack_from(data)
    header = json.loads(data[PRE.size:PRE.size + hlen])
    body = {}
    for s in header["sections"]:
        raw = data[s["offset"]:s["offset"] + s["length"]]
        body[s["name"]] = zlib.decompress(raw) if s["codec"] == "zlib" else raw
    return version, header, body


def seal(version, header, body, zlib9=(), compressed=None, edit=None) -> bytes:
    """A snapshot with valid lengths and checksums: the sections named in zlib9 compressed
    (level 9), those in compressed given as (zlib stream, raw length), the others raw;
    edit(records) may change the section records of the header last."""
    recs, blobs = [], []
    for s in header["sections"]:
        if compressed and s["name"] in compressed:
            stored, n = compressed[s["name"]]
        else:
            raw = body[s["name"]]
            stored = zlib.compress(raw, 9) if s["name"] in zlib9 else raw
            n = len(raw)
        zipped = s["name"] in zlib9 or bool(compressed and s["name"] in compressed)
        recs.append(dict(s, codec="zlib" if zipped else "none", raw_length=n,
                         length=len(stored), sha256=hashlib.sha256(stored).hexdigest()))
        blobs.append(stored)
    if edit is not None:
        edit(recs)
    hdr = dict(header, sections=recs)
    for _ in range(3):          # the offsets depend on the header's length
        pos = PRE.size + len(json.dumps(hdr).encode())
        for r in recs:
            r["offset"] = pos
            pos += r["length"]
        hdr["file_size"] = pos
    hb = json.dumps(hdr).encode()
    return PRE.pack(b"\x89MMEMU\r\n\x1a\n", version, 0, len(hb), hashlib.sha256(hb).digest()) + hb \
        + b"".join(blobs)


def changed(data, state=None, **sections) -> bytes:
    """data with its state changed by state(st) and sections replaced (by bytes or by a
    function of their numpy array)."""
    version, header, body = unseal(data)
    if state is not None:
        st = json.loads(body["state"])
        state(st)
        body["state"] = json.dumps(st).encode()
    for name, new in sections.items():
        if callable(new):
            dt = next(s["dtype"] for s in header["sections"] if s["name"] == name)
            a = np.frombuffer(body[name], dtype=dt).copy()
            new(a)
            new = a.tobytes()
        body[name] = new
    return seal(version, header, body)


def refused(tmp_path, data, pattern):
    path = tmp_path / "bad.mms"
    path.write_bytes(data)
    with pytest.raises(mmemu.SnapshotError, match=pattern):
        mmemu.Machine.load(path)


LOADER = r"""
import resource, sys
limit = int(sys.argv[1]) << 20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import mmemu
try:
    m = mmemu.Machine.load(sys.argv[2])
except mmemu.SnapshotError as e:
    print("REFUSED", str(e).replace("\n", " | "))
else:
    exec(sys.argv[3])
    for p in sorted(m.processes, key=lambda q: -q.pid):
        p.exit()
    m.check()
    print("LOADED")
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")][0].split()[1]
print("MAXRSS_KB", hwm)     # this mm's peak (ru_maxrss keeps the parent's across exec)
"""


def load_in_subprocess(tmp_path, data, limit_mb=3072, then="pass"):
    """Load data in a child interpreter under an address-space limit; after a load run
    `then` (with m the machine), exit every process and check. Returns (outcome line,
    peak RSS in kB); a crash, an abort or any other exception fails the test."""
    path = tmp_path / "hostile.mms"
    path.write_bytes(data)
    r = subprocess.run([sys.executable, "-c", LOADER, str(limit_mb), str(path), then],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    return lines[-2], int(lines[-1].split()[1])


# ---------------------------------------------------------------- machines to corrupt
@pytest.fixture(scope="module", params=["deferred", "eager"])
def cow_pair(request, tmp_path_factory):
    """A COW fork: the parent's 2 MiB span A (4 MiB VMA, the second span untouched) is one
    PTE table shared by parent and child (pt_share 2, read-only PMD entries)."""
    m = mmemu.Machine("64M", cow_pte_accounting=request.param)
    p = m.spawn()
    p.mmap(A, 4 << 20, RW, PRIV | MAP_FIXED)
    p.write(A, b"parent" * 100)
    p.touch(A, 64 * PG)
    p.fork(cow_pgtable=True)
    table = p.mm.core.walk(A)[2] >> 12 & ((1 << 40) - 1)
    assert m.phys.pt_share[table] == 2
    path = tmp_path_factory.mktemp("cow") / "pair.mms"
    m.save(path)
    return path.read_bytes(), table


def moved_pmd_entry(data):
    """The child's PMD entry for span A moved to the next span (empty in both, inside the
    VMA): every count still agrees, but the two holders map the shared table at different
    addresses, which the deferred hand-over (a remaining holder at the same address)
    cannot survive."""
    version, header, body = unseal(data)
    st = json.loads(body["state"])
    pfns = np.frombuffer(body["data_pfns"], "<i8")
    entries = np.frombuffer(body["frames"], "<u8").copy()      # the tables' entries, 512 a frame

    def table(pfn):
        return int(np.flatnonzero(pfns == pfn)[0]) * 512

    def below(entry):
        return table((int(entry) >> 12) & ((1 << 40) - 1))
    pud = below(entries[table(st["processes"][1]["mm"]["core"]["pgd"]) + (A >> 39 & 511)])
    pmd = below(entries[pud + (A >> 30 & 511)]) + (A >> 21 & 511)
    assert entries[pmd] != 0 and entries[pmd + 1] == 0
    entries[pmd + 1], entries[pmd] = entries[pmd], 0
    body["frames"] = entries.tobytes()
    return seal(version, header, body)


# ---------------------------------------------------------------- the named cases
def test_a_process_left_out_of_a_cow_pair_is_refused(tmp_path, cow_pair):
    """The child dropped from the file (the parent no longer lists it, the counts it held
    are gone): the shared table's count says 2, one PMD entry points at it. Before: the
    parent's exit aborted the interpreter ("shared PTE table ... has no other holder")."""
    data, table = cow_pair

    def drop_child(st):
        st["processes"].pop(1)
        st["processes"][0]["children"] = []
    out, _ = load_in_subprocess(tmp_path, changed(data, drop_child))
    assert out.startswith("REFUSED the loaded machine fails Machine.check()")
    assert f"pt_share differs on 1 PTE tables (first pfn {table}: stored 2, PMD entries 1)" in out


def test_a_table_shared_at_two_addresses_is_refused(tmp_path, cow_pair):
    out, _ = load_in_subprocess(tmp_path, moved_pmd_entry(cow_pair[0]))
    assert out.startswith("REFUSED the loaded machine fails Machine.check()")
    assert f"PTE table {cow_pair[1]} linked at two addresses" in out


def test_two_processes_sharing_a_pgd_are_refused(tmp_path, cow_pair):
    def share(st):
        st["processes"][1]["mm"]["core"]["pgd"] = st["processes"][0]["mm"]["core"]["pgd"]
    refused(tmp_path, changed(cow_pair[0], share), r"mm 1 and mm 2 share the PGD frame")


def test_mm_ids_are_unique_and_below_the_counter(tmp_path, cow_pair):
    data = cow_pair[0]
    refused(tmp_path, changed(data, lambda st: st["processes"][1]["mm"]["core"].update(id=1)),
            "two address spaces with mm id 1")
    refused(tmp_path, changed(data, lambda st: st["processes"][1]["mm"]["core"].update(id=3)),
            r"mm 'id' must be an integer in \[1, 2\], not 3")


def test_negative_refcounts_and_counters_are_refused(tmp_path, cow_pair):
    data, table = cow_pair
    version, header, body = unseal(data)
    st = json.loads(body["state"])
    d1 = st["physmem"]["data_hwm"]
    pfn = int(np.frombuffer(body["data_pfns"], "<i8")[0])        # the parent's first page
    assert pfn < d1

    def minus(a):
        a[pfn] = -1
    refused(tmp_path, changed(data, **{"frame.refcount": minus}),
            f"refcount differs on 1 frames \\(first pfn {pfn}: refcount -1")
    refused(tmp_path, changed(data, **{"frame.mapcount": minus}), "mapcount differs")
    refused(tmp_path, changed(data, lambda s: s["processes"][0]["mm"]["core"]["rss"].__setitem__(1, -1)),
            r"rss counters must be integers in \[0, 8388608\], not \[0, -1, 0, 0\]")
    refused(tmp_path, changed(data, lambda s: s["physmem"].update(nr_anon_mapped=-1)),
            r"'nr_anon_mapped' must be an integer in \[0, 16384\], not -1")
    refused(tmp_path, changed(data, lambda s: s["processes"][0]["mm"].update(total_vm=-1)),
            r"'total_vm' = -1 out of range")


def test_a_shared_table_count_that_disagrees_with_its_pmds_is_refused(tmp_path, cow_pair):
    data, table = cow_pair
    version, header, body = unseal(data)
    st = json.loads(body["state"])
    t0 = st["physmem"]["table_lwm"]
    index = st["physmem"]["data_hwm"] + (table - t0)

    def three(a):
        a[index] = 3
    refused(tmp_path, changed(data, **{"frame.pt_share": three}),
            f"pt_share differs on 1 PTE tables \\(first pfn {table}: stored 3, PMD entries 2\\)")


def test_pids_and_parents_are_checked(tmp_path, cow_pair):
    data = cow_pair[0]
    refused(tmp_path, changed(data, lambda s: s["processes"][1].update(parent=None)),
            "process 2 is a child of 1 but names another parent")
    refused(tmp_path, changed(data, lambda s: s["processes"][0]["children"].append(2)),
            "child 2 is not a live process or is listed twice")
    refused(tmp_path, changed(data, lambda s: s["processes"][0].update(parent=2)),
            "parent 2 is younger than its child")
    refused(tmp_path, changed(data, lambda s: s["machine"].update(next_pid=2)),
            "pid 2 out of order or beyond the pid counter 2")


def test_a_huge_mm_id_counter_costs_no_host_memory(tmp_path, cow_pair):
    """A 4 KiB file with the mm id counter near 2^31 made the loader ask for 16 GiB (the
    registry of mms was indexed by id): now it loads in a few MB, forks take the last ids,
    and the next one is EAGAIN."""
    data = changed(cow_pair[0], lambda s: s["physmem"].update(next_mm_id=(1 << 31) - 4))
    version, header, body = unseal(data)
    small = seal(version, header, body, zlib9=set(body))
    assert len(small) < 5 * 1024
    then = textwrap.dedent("""
        import errno
        p = m.process(1)
        assert [p.fork().mm.core.id for _ in range(2)] == [2**31 - 3, 2**31 - 2]
        try:
            p.fork()
        except mmemu.MMError as e:
            assert e.errno == errno.EAGAIN
        else:
            raise AssertionError("a fork past the last mm id")
    """)
    out, rss_kb = load_in_subprocess(tmp_path, small, limit_mb=2048, then=then)
    assert out == "LOADED" and rss_kb < 200 * 1024


def test_sections_claiming_more_than_they_can_hold_are_refused_before_decoding(tmp_path, cow_pair):
    data = cow_pair[0]
    version, header, body = unseal(data)
    st = json.loads(body["state"])
    ph = st["physmem"]
    used = ph["data_hwm"] + ph["nframes"] - ph["table_lwm"]      # the frames ever used
    # a per-frame array of 16 Mi entries: 64 MiB of zeros in a 62 KiB section
    big = dict(body, **{"frame.flags": bytes(4 << 24)})
    hdr = json.loads(json.dumps(header))
    for s in hdr["sections"]:
        if s["name"] == "frame.flags":
            s["shape"] = [1 << 24]
    out, rss_kb = load_in_subprocess(tmp_path, seal(version, hdr, big, zlib9={"frame.flags"}),
                                     limit_mb=1024)
    assert out == (f"REFUSED bad snapshot: section 'frame.flags': {1 << 24} entries, more than "
                   f"the machine can have ({used})") and rss_kb < 150 * 1024
    # a raw length no zlib stream of that size can decode to (1032:1 at best)
    claim = {}

    def more(recs):
        s = next(r for r in recs if r["name"] == "swap_data")
        s["raw_length"] = claim["raw"] = s["length"] * 1032 + 1025
        claim["length"] = s["length"]
    refused(tmp_path, seal(version, header, body, zlib9={"swap_data"}, edit=more),
            "section 'swap_data': {length} stored bytes cannot hold {raw} bytes".format(**claim))
    # a state of 64 MiB of "[]," in 65 KiB (parsed: 22 million lists, about 1.5 GiB)
    bomb = b"[" + b"[]," * ((64 << 20) // 3) + b"[]]"
    refused(tmp_path, seal(version, header, dict(body, state=bomb), zlib9={"state"}),
            r"section 'state': \d+ stored bytes decoding to \d+: more than a snapshot's state "
            r"compresses \(at most 256:1\)")


def test_a_machine_too_large_for_the_host_is_refused(tmp_path, cow_pair):
    """64 TiB of memory under a 2 GiB address-space limit: SnapshotError, not MemoryError."""
    def huge(st):
        st["machine"]["memory"] = 1 << 46
        st["physmem"]["nframes"] = 1 << 34
    out, _ = load_in_subprocess(tmp_path, changed(cow_pair[0], huge), limit_mb=2048)
    assert out == "REFUSED bad snapshot: the machine it describes does not fit in this host's memory"


def test_deeply_nested_state_is_refused(tmp_path, cow_pair):
    """Before: RecursionError. A state nested past the recursion limit, and a value nested
    below it where an integer belongs (no message walks it)."""
    version, header, body = unseal(cow_pair[0])
    deep = dict(body, state=b"[" * 100000 + b"]" * 100000)
    out, _ = load_in_subprocess(tmp_path, seal(version, header, deep))
    assert out == "REFUSED bad snapshot: state is nested too deeply"
    st = json.loads(body["state"])
    st["physmem"]["next_mm_id"] = json.loads("[" * 500 + "]" * 500)
    refused(tmp_path, seal(version, header, dict(body, state=json.dumps(st).encode())),
            r"'next_mm_id' must be an integer in \[0, 2147483646\], not \[+\.\.\.\]+$")
    hb = b"[" * 100000 + b"]" * 100000
    forged = b"\x89MMEMU\r\n\x1a\n" + struct.pack("<IIQ32s", version, 0, len(hb),
                                                  hashlib.sha256(hb).digest()) + hb
    out, _ = load_in_subprocess(tmp_path, forged)
    assert out.startswith("REFUSED bad snapshot: header is nested too deeply")


def test_a_version_1_swap_map_of_256_gib_costs_no_host_memory(tmp_path):
    """Version 1 stored the swap map densely: 64 Mi slots (256 GiB of swap) compress to
    about 264 KiB, and the loader read the map whole and sized the device by it. Now the
    map is read in pieces keeping the slots in use, and the device (SwapTotal as it was)
    is a host reservation that fails cleanly under the limit."""
    version, header, body = unseal(open(V1_FIXTURE, "rb").read())
    assert version == 1
    nslots = 64 << 20
    z = zlib.compressobj(9)
    stream = z.compress(body["swap_map"])       # the fixture's 64 slots, then zeros
    left = nslots * 4 - len(body["swap_map"])
    while left:
        stream += z.compress(bytes(min(left, 1 << 22)))
        left -= min(left, 1 << 22)
    stream += z.flush()
    hdr = json.loads(json.dumps(header))
    next(s for s in hdr["sections"] if s["name"] == "swap_map")["shape"] = [nslots]
    blob = seal(1, hdr, body, compressed={"swap_map": (stream, nslots * 4)})
    assert len(blob) < 400 * 1024
    out, rss_kb = load_in_subprocess(tmp_path, blob, limit_mb=2048)
    assert out == "REFUSED bad snapshot: the machine it describes does not fit in this host's memory"
    assert rss_kb < 200 * 1024
    # with room for the device's reservation it loads: 256 GiB of swap, one slot in use
    then = "mi = m.meminfo(); assert (mi['SwapTotal'], mi['SwapFree']) == (256 << 20, (256 << 20) - 4)"
    out, rss_kb = load_in_subprocess(tmp_path, blob, limit_mb=1 << 20, then=then)
    assert out == "LOADED" and rss_kb < 200 * 1024


def test_what_the_checker_now_proves(tmp_path, cow_pair):
    """Invariants the checker gained for hostile files: a special PTE off the zero page, a
    page-cache page mapped at another offset, an anon page in a VMA without an anon_vma,
    flags a frame in use cannot have, a frame in two page caches."""
    data = cow_pair[0]
    refused(tmp_path, changed(data, lambda s: s["processes"][0]["mm"]["vmas"][0].__setitem__(5, None)),
            "anon page or swap entry in a VMA without an anon_vma")
    version, header, body = unseal(data)
    pfn = int(np.frombuffer(body["data_pfns"], "<i8")[0])

    def both(a):
        a[pfn] |= 2 | 4                 # PG_ANON | PG_FILE
    refused(tmp_path, changed(data, **{"frame.flags": both}),
            f"frames in use without exactly one role .*: {pfn}")
