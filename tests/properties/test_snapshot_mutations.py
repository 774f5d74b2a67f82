"""A mutation fuzzer for snapshots: take valid snapshots of each fork design, change one field
(a value of the JSON state, or one element of an array section), recompute every length and
checksum so that only the content is wrong, and load the result in a subprocess under an
address-space limit. Each load must raise SnapshotError, or give a machine that passes
check() and survives every process exiting (check() again, every frame back). Never a crash,
an abort, a MemoryError, a RecursionError, or a machine that breaks later.

CI runs a fixed, derandomized budget; MMEMU_SNAPSHOT_MUTATIONS=N explores N fresh mutations
per design (MMEMU_SNAPSHOT_SEED picks the seed).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import textwrap
import zlib

import pytest

import mmemu
from mmemu import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE

pytestmark = pytest.mark.one_design

PG = 4096
RW = PROT_READ | PROT_WRITE
PRIV = MAP_PRIVATE | MAP_ANONYMOUS
PRE = struct.Struct("<10sIIQ32s")
BUDGET = int(os.environ.get("MMEMU_SNAPSHOT_MUTATIONS", "120"))
SEED = int(os.environ.get("MMEMU_SNAPSHOT_SEED", "0" if "MMEMU_SNAPSHOT_MUTATIONS" not in os.environ
                          else str(random.SystemRandom().randrange(1 << 30))))


# ---- the documented file format (mmemu.snapshot's module docstring), written independently ----
def parse(blob: bytes):
    magic, version, flags, hlen, _ = PRE.unpack_from(blob)
    header = json.loads(blob[PRE.size:PRE.size + hlen])
    sections = {}
    for s in header["sections"]:
        raw = blob[s["offset"]:s["offset"] + s["length"]]
        sections[s["name"]] = zlib.decompress(raw) if s["codec"] == "zlib" else raw
    return (magic, version, flags), header, sections


def serialize(pre, header, sections) -> bytes:
    magic, version, flags = pre
    recs, body = [], []
    hdr = dict(header)
    # lay the sections out after a header of the same padded length as before
    template = json.dumps({**hdr, "sections": [dict(s, offset=(1 << 64) - 1, length=(1 << 64) - 1,
                                                    sha256="0" * 64) for s in header["sections"]],
                           "file_size": (1 << 64) - 1}, sort_keys=True, separators=(",", ":"))
    hlen = len(template.encode()) + 64
    pos = PRE.size + hlen
    for s in header["sections"]:
        data = sections[s["name"]]
        stored = zlib.compress(data, 1) if s["codec"] == "zlib" else data
        recs.append(dict(s, offset=pos, length=len(stored), raw_length=len(data),
                         sha256=hashlib.sha256(stored).hexdigest()))
        body.append(stored)
        pos += len(stored)
    hbytes = json.dumps(dict(hdr, sections=recs, file_size=pos), sort_keys=True,
                        separators=(",", ":")).encode()
    hbytes += b" " * (hlen - len(hbytes))
    return PRE.pack(magic, version, flags, hlen, hashlib.sha256(hbytes).digest()) + hbytes + b"".join(body)


def build(design: str, path) -> None:
    """A machine with a bit of everything: COW-shared tables, a classic child, a file mapped
    shared and private, shmem, a swap entry, freed frames on the free lists."""
    cow = design != "classic"
    m = mmemu.Machine("64M", cow_pgtable=cow,
                      cow_pte_accounting="eager" if design == "cow-eager" else "deferred")
    p = m.spawn()
    a = p.mmap(0, 4 << 20, RW, PRIV)
    p.touch(a, 4 << 20)
    p.write(a, b"payload" * 100)
    f = m.create_file("data", data=b"f" * (5 * PG))
    p.mmap(0, 5 * PG, RW, MAP_SHARED, file=f)
    fp = p.mmap(0, 5 * PG, RW, MAP_PRIVATE, file=f)
    p.write(fp + PG, b"private")
    s = p.mmap(0, 8 * PG, RW, MAP_SHARED | MAP_ANONYMOUS)
    p.write(s, b"shm")
    p.swap_out(a + 3 * PG, PG)
    c = p.fork()
    c.write(a + 8 * PG, b"child")
    g = c.fork()
    g.touch(a + (2 << 20), 4 * PG)
    t = p.mmap(0, 4 << 20, RW, PRIV)
    p.touch(t, 4 << 20)
    p.munmap(t, 4 << 20)                      # freed data and table frames
    m.check()
    m.save(path)


def mutations(sections, rng, n):
    """n (section, description, new bytes) mutations of one field each."""
    state = json.loads(sections["state"])
    leaves = []

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + [k])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, path + [i])
        leaves.append(path)
    walk(state, [])
    leaves = [p for p in leaves if p]
    arrays = {k: v for k, v in sections.items() if k not in ("state",) and len(v)}
    out = []
    for _ in range(n):
        if rng.random() < 0.6:
            path = rng.choice(leaves)
            new = json.loads(sections["state"])
            node = new
            for k in path[:-1]:
                node = node[k]
            old = node[path[-1]]
            choices = [0, 1, -1, 2**31, 2**40, 2**62, -2**63, 2**64, None, "x", [], {}, True, 1.5]
            if isinstance(old, int) and not isinstance(old, bool):
                choices += [old + 1, old - 1, old * 2, old + 4096, old ^ 1]
            if isinstance(old, list) and len(old) > 1:
                choices += [old[::-1], old[:-1], old + old[-1:]]
            value = rng.choice(choices)
            if rng.random() < 0.1 and isinstance(node, dict):
                del node[path[-1]]
                desc = f"state{path}: deleted"
            else:
                node[path[-1]] = value
                desc = f"state{path}: {old!r:.40} -> {value!r:.40}"
            out.append(("state", desc, json.dumps(new, sort_keys=True, separators=(",", ":")).encode()))
        else:
            name = rng.choice(sorted(arrays))
            data = bytearray(sections[name])
            width = 8 if name in ("data_pfns", "free_data", "free_table", "page_caches") else \
                rng.choice([1, 4, 8])
            if len(data) < width:
                continue
            i = rng.randrange(len(data) // width) * width
            val = rng.choice([0, 1, 0xFF, 0x7F, (1 << (8 * width)) - 1, 1 << (8 * width - 1),
                              int.from_bytes(data[i:i + width], "little") + 1,
                              rng.randrange(1 << (8 * width))])
            val &= (1 << (8 * width)) - 1
            old = int.from_bytes(data[i:i + width], "little")
            data[i:i + width] = val.to_bytes(width, "little")
            out.append((name, f"{name}[byte {i}, {width} bytes]: {old:#x} -> {val:#x}", bytes(data)))
    return out


LOADER = r'''
import resource, sys, json, os
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
sys.setrecursionlimit(10000)
import mmemu
for path in sys.argv[1:]:
    print("LOAD", path, flush=True)
    try:
        m = mmemu.Machine.load(path)
    except mmemu.SnapshotError as e:
        print("REFUSED", str(e)[:100], flush=True)
        continue
    m.check()
    for p in sorted(m.processes, key=lambda q: -q.pid):
        p.exit()
        m.check()
    mi = m.meminfo()
    assert m.processes == []
    print("LOADED", mi["MemFree"], flush=True)
print("DONE", flush=True)
'''


@pytest.mark.parametrize("design", ["classic", "cow-deferred", "cow-eager"])
def test_mutated_snapshots_are_refused_or_sound(design, tmp_path):
    base = tmp_path / "base.mms"
    build(design, base)
    pre, header, sections = parse(base.read_bytes())
    assert serialize(pre, header, sections) and mmemu.Machine.load(base) is not None
    # the rewriter itself is faithful: an unmutated rewrite loads and checks
    same = tmp_path / "same.mms"
    same.write_bytes(serialize(pre, header, sections))
    mmemu.Machine.load(same, check=True)

    rng = random.Random(f"{SEED}-{design}")
    cases = mutations(sections, rng, BUDGET)
    paths, descs = [], {}
    for i, (name, desc, data) in enumerate(cases):
        p = tmp_path / f"m{i}.mms"
        p.write_bytes(serialize(pre, header, dict(sections, **{name: data})))
        paths.append(str(p))
        descs[str(p)] = desc
    failures = []
    todo = list(paths)
    while todo:
        r = subprocess.run([sys.executable, "-c", LOADER, *todo], capture_output=True, text=True,
                           timeout=900)
        lines = r.stdout.splitlines()
        loaded = [ln.split()[1] for ln in lines if ln.startswith("LOAD ")]
        if r.returncode == 0 and lines and lines[-1] == "DONE":
            break
        culprit = loaded[-1] if loaded else todo[0]
        failures.append(f"{descs[culprit]}: exit {r.returncode}: {r.stderr.strip()[-400:]}")
        todo = todo[todo.index(culprit) + 1:]
    assert failures == [], f"seed {SEED}:\n" + "\n".join(failures)
