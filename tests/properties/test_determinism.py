"""Determinism: the same operations give the same counters, pagemaps (PFNs included),
status, smaps and meminfo on every run, in a fresh machine and in a fresh interpreter
with another hash seed (nothing depends on set order, ids or addresses of Python objects)."""
import hashlib
import json
import os
import subprocess
import sys

import pytest

import mmemu
from mmemu import MAP_PRIVATE, MAP_SHARED, MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE, Madv

pytestmark = pytest.mark.one_design      # each run covers all three designs

PG = 4096
RW = 3
PRIV = MAP_PRIVATE | mmemu.MAP_ANONYMOUS
DESIGNS = {"classic": dict(cow_pgtable=False),
           "cow-deferred": dict(cow_pgtable=True, cow_pte_accounting="deferred"),
           "cow-eager": dict(cow_pgtable=True, cow_pte_accounting="eager")}


def observe(m):
    """Everything a user can read, as plain data."""
    out = {"vmstat": dict(m.vmstat()), "meminfo": dict(m.meminfo())}
    for p in m.processes:
        out[f"pid{p.pid}"] = {
            "status": dict(p.status()), "maps": str(p.maps()), "smaps": str(p.smaps()),
            "rollup": dict(p.smaps_rollup()), "statm": str(p.statm()),
            "pagemap": [(v.start, p.pagemap(v.start, (v.end - v.start) // PG).tolist())
                        for v in p.mm.vmas],
        }
    return out


def workload(design):
    """A scripted mix of every mechanism; returns what it observed after each phase."""
    m = mmemu.Machine("256M", **DESIGNS[design])
    seen = []
    f = m.create_file("/lib.so", data=bytes(range(256)) * 256)
    p = m.spawn(layout="typical")
    a = p.mmap(0, 8 << 20, RW, PRIV)
    p.touch(a, 6 << 20)
    p.write(a + 5, b"hello")
    s = p.mmap(0, 16 * PG, RW, MAP_SHARED | mmemu.MAP_ANONYMOUS)
    p.write(s, b"shared" * 1000)
    fm = p.mmap(0, 16 * PG, RW, MAP_PRIVATE, file=f)
    p.read(fm, 8 * PG)
    p.write(fm + 3 * PG, b"cow")
    seen.append(observe(m))
    c1 = p.fork()
    c2 = p.fork(cow_pgtable=True)
    c2.write(a + PG, b"child2")
    c1.touch(a + (2 << 20), 1 << 20)
    seen.append(observe(m))
    b = p.mremap(a + (1 << 20), 64 * PG, 128 * PG, MREMAP_MAYMOVE)
    p.mremap(b, 16 * PG, 16 * PG, MREMAP_MAYMOVE | MREMAP_DONTUNMAP)
    c2.mremap(a, 8 * PG, 8 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, a + (7 << 20))
    p.madvise(a + (3 << 20), 1 << 20, Madv.DONTNEED)
    c1.madvise(a + (4 << 20), 64 * PG, Madv.FREE)
    p.madvise(a + (5 << 20), 4 * PG, Madv.GUARD_INSTALL)
    p.mprotect(a + (2 << 20), 32 * PG, 1)
    p.munmap(a + (6 << 20), 16 * PG)
    top = p.brk(0)
    p.brk(top + 32 * PG)
    p.touch(top, 32 * PG)
    seen.append(observe(m))
    c3 = c2.fork(cow_pgtable=True)
    c3.write(a + (7 << 20), b"grandchild")
    c1.execve()
    c1.mmap(0, 4 * PG, RW, PRIV)
    c2.exit()
    seen.append(observe(m))
    for q in (c3, c1, p):
        q.exit()
    f.unlink()
    seen.append(observe(m))
    m.check()
    return seen


def digest(design):
    return hashlib.sha256(json.dumps(workload(design), sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("design", sorted(DESIGNS))
def test_same_operations_same_numbers(design):
    first, second = workload(design), workload(design)
    for phase, (x, y) in enumerate(zip(first, second)):
        assert x == y, f"phase {phase} differs between two runs"


def test_same_numbers_in_another_interpreter():
    here = {d: digest(d) for d in sorted(DESIGNS)}
    tests = os.path.dirname(os.path.abspath(__file__))
    code = ("import json, sys; sys.path.insert(0, %r); import test_determinism as t; "
            "print(json.dumps({d: t.digest(d) for d in sorted(t.DESIGNS)}))" % tests)
    for seed in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed,
                   PYTHONPATH=os.pathsep.join(sys.path))
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True).stdout
        assert json.loads(out) == here, f"PYTHONHASHSEED={seed} gives other numbers"


def test_designs_differ_only_where_defined():
    """A sanity check of the digest: the designs do account differently."""
    assert len({digest(d) for d in DESIGNS}) == 3
