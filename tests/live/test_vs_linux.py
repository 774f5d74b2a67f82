"""The same syscalls on the live Linux kernel under the test run and on mmemu: the numbers
/proc reports for the region must be the same.

Each scenario runs twice: once in this very process (ctypes mmap/madvise/mprotect and
os.fork on a private region at a fixed, otherwise empty address, with THP disabled for it)
reading /proc/self/smaps and /proc/self/pagemap, and once on an emulated machine. Only
per-region numbers are compared, so whatever else the Python process maps does not matter.
"""
import ctypes
import json
import mmap as _mmap
import os
import struct

import pytest

import mmemu
from conftest import PG

ADDR = 0x200000000000          # 32 TiB: far from anything Python maps
ADDR2 = ADDR + (1 << 30)       # an mremap destination, in another 1 GiB span
NPAGES = 16
FILE_DATA = bytes(range(1, 17)) * (NPAGES * PG // 16)
FIELDS = ["Rss", "Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty",
          "Referenced", "Anonymous"]

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mremap.restype = ctypes.c_void_p
libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]

MAP_FIXED_NOREPLACE = 0x100000
MADV_NOHUGEPAGE = int(mmemu.MADV_NOHUGEPAGE)      # 15 (14 is MADV_HUGEPAGE)


def _pagemap_flags(entries):
    """(present, swapped, file/shared, exclusive) per page."""
    return [[(e >> 63) & 1, (e >> 62) & 1, (e >> 61) & 1, (e >> 56) & 1] for e in entries]


def _smaps_fields(path, addr):
    out, on = {}, False
    with open(path) as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                on = int(head.split("-")[0], 16) == addr
                if on:
                    out["range"] = head
            elif on and head[:-1] in FIELDS:
                out[head[:-1]] = int(line.split()[1])
            elif on and head == "VmFlags:":
                out["VmFlags"] = line.split()[1:]
    return out or None


class Live:
    """The region in this process, on the real kernel. kind: "private" or "shared"
    anonymous memory, or "file": a private mapping of a file on disk."""

    def __init__(self, kind, tmp_path):
        self.kind = kind
        fd, flags = -1, _mmap.MAP_PRIVATE | _mmap.MAP_ANONYMOUS
        if kind == "shared":
            flags = _mmap.MAP_SHARED | _mmap.MAP_ANONYMOUS
        elif kind == "file":
            # page-sized writes keep ext4's page cache in order-0 folios, as mmemu's is: one
            # large write makes large folios, which Linux maps whole when they fit the VMA
            fd = os.open(tmp_path / "live.bin", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
            for off in range(0, len(FILE_DATA), PG):
                os.write(fd, FILE_DATA[off:off + PG])
            flags = _mmap.MAP_PRIVATE
        a = libc.mmap(ADDR, NPAGES * PG, 3, flags | MAP_FIXED_NOREPLACE, fd, 0)
        if fd >= 0:
            os.close(fd)
        if a != ADDR:
            pytest.fail(f"could not map the live region at {ADDR:#x}")
        assert libc.madvise(ADDR, NPAGES * PG, MADV_NOHUGEPAGE) == 0

    def write(self, page, n, byte):
        ctypes.memset(ADDR + page * PG, byte, n * PG)

    def read(self, page, n):
        return ctypes.string_at(ADDR + page * PG, n * PG)

    def madvise(self, page, n, advice):
        assert libc.madvise(ADDR + page * PG, n * PG, advice) == 0

    def mprotect(self, page, n, prot):
        assert libc.mprotect(ADDR + page * PG, n * PG, prot) == 0

    def move(self, page, n):
        """mremap(MAYMOVE|FIXED) of n pages to ADDR2."""
        assert libc.mremap(ADDR + page * PG, n * PG, n * PG, 3, ADDR2) == ADDR2
        ctypes.memset(ADDR2, 0x7E, 1)               # and write the first moved page

    def snapshot(self):
        out = {"main": _smaps_fields("/proc/self/smaps", ADDR),
               "moved": _smaps_fields("/proc/self/smaps", ADDR2)}
        with open("/proc/self/pagemap", "rb") as f:
            f.seek(ADDR // PG * 8)
            raw = f.read(8 * NPAGES)
        out["pagemap"] = _pagemap_flags(struct.unpack(f"{NPAGES}Q", raw))
        return out

    def close(self):
        libc.munmap(ADDR, NPAGES * PG)
        libc.munmap(ADDR2, NPAGES * PG)


class Emulated:
    """The same region in a process of an emulated machine."""

    def __init__(self, proc):
        self.p = proc

    @classmethod
    def spawn(cls, m, kind):
        p = m.spawn()
        if kind == "file":
            f = m.create_file("/live.bin", data=FILE_DATA)
            a = p.mmap(ADDR, NPAGES * PG, 3, mmemu.MAP_PRIVATE | mmemu.MAP_FIXED, file=f)
        else:
            share = mmemu.MAP_SHARED if kind == "shared" else mmemu.MAP_PRIVATE
            a = p.mmap(ADDR, NPAGES * PG, 3, share | mmemu.MAP_ANONYMOUS | mmemu.MAP_FIXED)
        assert a == ADDR
        p.madvise(ADDR, NPAGES * PG, MADV_NOHUGEPAGE)     # as the live region is advised
        return cls(p)

    def write(self, page, n, byte):
        self.p.write(ADDR + page * PG, bytes([byte]) * (n * PG))

    def read(self, page, n):
        return self.p.read(ADDR + page * PG, n * PG)

    def madvise(self, page, n, advice):
        assert self.p.madvise(ADDR + page * PG, n * PG, advice) == 0

    def mprotect(self, page, n, prot):
        assert self.p.mprotect(ADDR + page * PG, n * PG, prot) == 0

    def move(self, page, n):
        assert self.p.mremap(ADDR + page * PG, n * PG, n * PG, 3, ADDR2) == ADDR2
        self.p.write(ADDR2, b"\x7e")

    def snapshot(self):
        def fields(addr):
            s = [e for e in self.p.smaps() if e["start"] == addr]
            if not s:
                return None
            out = {k: s[0][k] for k in FIELDS}
            out["range"] = f"{s[0]['start']:x}-{s[0]['end']:x}"
            out["VmFlags"] = s[0]["VmFlags"]
            return out
        return {"main": fields(ADDR), "moved": fields(ADDR2),
                "pagemap": _pagemap_flags(int(x) for x in self.p.pagemap(ADDR, NPAGES))}


# A scenario: steps before the fork (parent), steps in the child, steps in the parent
# after the child is gone. Each step is (method, args).
SCENARIOS = {
    "cow_after_fork": dict(
        kind="private",
        before=[("write", (0, 8, 0x11)), ("read", (8, 4))],
        child=[("write", (0, 2, 0x22)), ("madvise", (2, 2, 4))],        # 4 = MADV_DONTNEED
        after=[("write", (4, 1, 0x33)), ("write", (0, 1, 0x44))],
    ),
    "mprotect_roundtrip": dict(
        kind="private",
        before=[("write", (0, 6, 0x55))],
        child=[("mprotect", (0, 16, 1)), ("mprotect", (0, 16, 3)), ("write", (1, 1, 0x66))],
        after=[("mprotect", (0, 16, 1)), ("mprotect", (0, 16, 3)), ("write", (2, 1, 0x77))],
    ),
    "zero_pages_and_wipe": dict(
        kind="private",
        before=[("read", (0, 4)), ("write", (4, 4, 0x12)), ("madvise", (12, 4, 18))],  # WIPEONFORK
        child=[("read", (12, 4)), ("write", (0, 1, 0x13))],
        after=[("write", (5, 1, 0x14))],
    ),
    "shared_anonymous": dict(
        kind="shared",
        before=[("write", (0, 4, 0x21)), ("read", (4, 4))],
        child=[("write", (8, 2, 0x22)), ("read", (0, 12))],
        after=[("write", (12, 1, 0x23))],
    ),
    "private_file": dict(
        kind="file",
        before=[("read", (0, 16)), ("write", (0, 3, 0x31))],
        child=[("write", (5, 2, 0x32)), ("madvise", (6, 1, 4))],       # DONTNEED re-reads the file
        after=[("write", (1, 1, 0x33)), ("write", (10, 1, 0x34))],
    ),
    "guard_regions": dict(
        kind="private",
        before=[("write", (0, 16, 0x51)), ("madvise", (2, 2, 102))],          # GUARD_INSTALL
        child=[("write", (5, 1, 0x52)), ("madvise", (0, 8, 4)), ("read", (4, 2))],
        after=[("madvise", (2, 1, 103)), ("write", (2, 1, 0x53)), ("madvise", (9, 1, 102))],
    ),
    "mremap_after_fork": dict(
        kind="private",
        before=[("write", (0, 12, 0x41))],
        child=[("move", (2, 4)), ("write", (8, 1, 0x42))],
        after=[("write", (3, 1, 0x43))],
    ),
}


def _run(region, steps):
    for name, args in steps:
        getattr(region, name)(*args)


def live_scenario(sc, tmp_path):
    """Run on the real kernel; returns the snapshots [parent@fork, child@fork,
    child after its steps, parent while the child lives, parent after it exits]."""
    live = Live(sc["kind"], tmp_path)
    try:
        _run(live, sc["before"])
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        pid = os.fork()
        if pid == 0:                                      # the child
            try:
                os.close(r1)
                os.close(w2)
                snaps = [live.snapshot()]
                os.write(w1, b"1")
                os.read(r2, 1)                            # the parent took its snapshot
                _run(live, sc["child"])
                snaps.append(live.snapshot())
                os.write(w1, json.dumps(snaps).encode() + b"\n")
                os.read(r2, 1)
            finally:
                os._exit(0)
        os.close(w1)
        os.close(r2)
        assert os.read(r1, 1) == b"1"
        parent_at_fork = live.snapshot()
        os.write(w2, b"g")
        buf = b""
        while not buf.endswith(b"\n"):
            buf += os.read(r1, 65536)
        child = json.loads(buf)
        parent_during = live.snapshot()
        os.write(w2, b"x")
        os.waitpid(pid, 0)
        _run(live, sc["after"])
        parent_after = live.snapshot()
        return [parent_at_fork, child[0], child[1], parent_during, parent_after]
    finally:
        live.close()


def emulated_scenario(sc):
    m = mmemu.Machine("64M")
    parent = Emulated.spawn(m, sc["kind"])
    _run(parent, sc["before"])
    child = Emulated(parent.p.fork())
    snaps = [parent.snapshot(), child.snapshot()]
    _run(child, sc["child"])
    snaps += [child.snapshot(), parent.snapshot()]
    child.p.exit()
    _run(parent, sc["after"])
    snaps.append(parent.snapshot())
    m.check()
    return snaps


@pytest.fixture(scope="module")
def live_results(tmp_path_factory):
    if not os.path.exists("/proc/self/pagemap"):
        pytest.fail("these tests need a Linux host with /proc")
    return {name: live_scenario(sc, tmp_path_factory.mktemp(name)) for name, sc in SCENARIOS.items()}


def comparable(snap, kind, cow):
    """What must be equal. Referenced is left out: smaps counts a page as referenced when
    its PTE is young *or* the folio is PageReferenced/young, and the host's LRU aging sets
    those folio bits on its own schedule (seen once under load: a page the child never
    touched reported referenced), so only the PTE part is deterministic. File pages: the
    page cache's clean/dirty state depends on writeback, which mmemu does not model, so
    they are compared as Shared and Private totals. COW designs: page-level statistics are
    theirs (a shared table shows the child the parent's entries for every VMA in the span,
    counted per the accounting mode, and a table the child never touched stays shared), so
    only what no design redefines -- each VMA's range and flags -- is compared for them;
    their data is compared with classic fork by the differential tests."""
    if cow:
        return {key: None if snap[key] is None else
                {"range": snap[key]["range"], "VmFlags": snap[key]["VmFlags"]}
                for key in ("main", "moved")}
    out = {"pagemap": snap["pagemap"]}
    for key in ("main", "moved"):
        v = snap[key]
        if v is not None:
            v = dict(v)
            if kind == "file":
                v["Shared"] = v.pop("Shared_Clean") + v.pop("Shared_Dirty")
                v["Private"] = v.pop("Private_Clean") + v.pop("Private_Dirty")
            v.pop("Referenced")
        out[key] = v
    return out


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_smaps_and_pagemap_match_the_live_kernel(name, live_results, fork_design):
    """Classic fork is what the live kernel does, so classic must match it field by field
    (Referenced aside, see comparable). The COW page-table designs must match it in the VMA
    layout at every snapshot; their page statistics are theirs (see comparable)."""
    kind = SCENARIOS[name]["kind"]
    cow = fork_design != "classic"
    live = live_results[name]
    emu = emulated_scenario(SCENARIOS[name])
    labels = ["parent at fork", "child at fork", "child after its steps",
              "parent while the child lives", "parent after the child exits"]
    for label, a, b in zip(labels, live, emu):
        a, b = comparable(a, kind, cow), comparable(b, kind, cow)
        assert a == b, f"{name}: {label}: live {a} != emulated {b}"


def random_scenario(seed):
    """A random but legal scenario (private anonymous, shared anonymous or private file
    region, by seed): only accesses the current protections and guard markers allow (an
    illegal one would kill the live test process), so both sides must agree on every
    number afterwards."""
    import random
    rng = random.Random(seed)
    kind = ["private", "shared", "file"][seed % 3]
    prot = [3] * NPAGES
    guard = [False] * NPAGES
    mapped = [True] * NPAGES

    def phase(n):
        steps = []
        for _ in range(n):
            first = rng.randrange(NPAGES)
            cnt = rng.randint(1, min(4, NPAGES - first))
            pages = range(first, first + cnt)
            op = rng.choice(["write", "write", "read", "dontneed", "mprotect", "guard", "unguard",
                             "move"])
            if not all(mapped[i] for i in pages):
                continue                   # keep every step legal: no holes in its range
            if (op == "move" and kind == "private" and prot[first] == 3 and not guard[first]
                    and all(prot[i] == prot[first] for i in pages)):
                # mremap(MAYMOVE|FIXED) of the pages to ADDR2 (replacing what was there)
                steps.append(("move", (first, cnt)))
                for i in pages:
                    mapped[i] = False
            elif op == "write" and all(prot[i] & 2 and not guard[i] for i in pages):
                steps.append(("write", (first, cnt, rng.randrange(1, 256))))
            elif op == "read" and all(prot[i] & 1 and not guard[i] for i in pages):
                steps.append(("read", (first, cnt)))
            elif op == "dontneed":
                steps.append(("madvise", (first, cnt, 4)))
            elif op == "mprotect":
                new = rng.choice([1, 3])
                steps.append(("mprotect", (first, cnt, new)))
                for i in pages:
                    prot[i] = new
            elif op == "guard":
                steps.append(("madvise", (first, cnt, 102)))
                for i in pages:
                    guard[i] = True
            elif op == "unguard":
                steps.append(("madvise", (first, cnt, 103)))
                for i in pages:
                    guard[i] = False
        return steps

    before = phase(12)
    saved = (list(prot), list(guard), list(mapped))
    child = phase(8)
    prot[:], guard[:], mapped[:] = saved       # the parent's view is its own after the fork
    after = phase(8)
    return dict(kind=kind, before=before, child=child, after=after)


RANDOM_SEEDS = list(range(12))


@pytest.fixture(scope="module")
def random_live_results(tmp_path_factory):
    return {s: live_scenario(random_scenario(s), tmp_path_factory.mktemp(f"r{s}")) for s in RANDOM_SEEDS}


@pytest.mark.parametrize("seed", RANDOM_SEEDS)
def test_random_scenarios_match_the_live_kernel(seed, random_live_results, fork_design):
    """Random legal step sequences around a fork, on the live kernel and on mmemu."""
    sc = random_scenario(seed)
    cow = fork_design != "classic"
    live = random_live_results[seed]
    emu = emulated_scenario(sc)
    for label, a, b in zip(["parent at fork", "child at fork", "child after its steps",
                            "parent while the child lives", "parent after the child exits"],
                           live, emu):
        a, b = comparable(a, sc["kind"], cow), comparable(b, sc["kind"], cow)
        assert a == b, f"seed {seed}: {label}: live {a} != emulated {b}\nsteps {sc}"
