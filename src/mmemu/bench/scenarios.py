"""The timed mmemu scenarios, one function per hot path.

Each scenario builds its own machine, times `rounds` repetitions of one operation with
`time.perf_counter` and returns a dict: ``times`` (seconds, in round order), ``pages`` (the
pages the operation covers, for per-page figures), ``work`` (vmstat deltas of one round)
and ``must_hold`` (the bytes of page tables, frame metadata and frame data the emulator
had to keep at its peak). The pytest-benchmark suites in ``benchmarks/`` call the same
functions; ``mmemu bench`` runs each in a fresh process so peak host RSS is per scenario.
"""
from __future__ import annotations

import time

import numpy as np

from ..flags import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from ..machine import Machine

PAGE = 4096
SPAN = 2 << 20                     # bytes mapped by one PTE table
RW = PROT_READ | PROT_WRITE
PRIV = MAP_PRIVATE | MAP_ANONYMOUS
METADATA_BYTES = 5 * 4             # refcount, mapcount, flags, pt_share, pt_owner per frame
PG_HASDATA = 1 << 6                # types.pxd


def machine_for(size: int, accounting: str = "deferred") -> Machine:
    """An emulated machine with room for a size-byte process, a child's copies and tables."""
    memory = max(4 << 30, 1 << (3 * size - 1).bit_length())
    return Machine(memory, cow_pte_accounting=accounting)


def populated(size: int, data: bool = False, accounting: str = "deferred"):
    """(machine, process, address): size bytes of private anonymous memory, every page
    written (a write fault each, or a 0x5A byte pattern with data=True)."""
    m = machine_for(size, accounting)
    p = m.spawn()
    a = p.mmap(0, size, RW, PRIV)
    if data:
        chunk = min(size, 64 << 20)
        pattern = np.full(chunk, 0x5A, dtype=np.uint8)
        for off in range(0, size, chunk):
            p.write(a + off, pattern[: min(chunk, size - off)])
    else:
        p.touch(a, size)
    return m, p, a


def must_hold(m: Machine) -> int:
    """Bytes the emulator cannot avoid holding on the host: every page-table frame and data
    frame with data ever handed out (4 KiB each), the metadata of every frame ever handed
    out, and the free-list slots of the frames freed since."""
    (_, hwm), (lwm, n) = m.phys.used_ranges()
    ever = hwm + (n - lwm)
    in_use = n - m.phys.nr_free
    with_data = int(np.count_nonzero(m.phys.flags[:hwm] & PG_HASDATA))
    return (n - lwm) * PAGE + with_data * PAGE + ever * METADATA_BYTES + max(0, ever - in_use) * 8


def _result(times, pages, work, m, **extra):
    return {"times": list(times), "pages": int(pages),
            "work": {k: int(v) for k, v in work.items() if v and not k.startswith("nr_")},
            "must_hold": must_hold(m), **extra}


def _clock(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def fork(size: int, design: str = "classic", rounds: int = 10):
    """fork() of a process with size bytes populated; the child exits between rounds (not
    timed). One untimed warm-up fork first, as `mmemu fork-table` does."""
    accounting = "eager" if design == "eager" else "deferred"
    cow = design != "classic"
    m, p, a = populated(size, accounting=accounting)
    p.fork(cow_pgtable=cow).exit()
    times, work, hold = [], None, 0
    for _ in range(rounds):
        ev = m.vmstat()
        t = time.perf_counter()
        c = p.fork(cow_pgtable=cow)
        times.append(time.perf_counter() - t)
        if work is None:
            work = m.vmstat() - ev
            hold = must_hold(m)
        c.exit()
    r = _result(times, size // PAGE, work, m)
    r["must_hold"] = max(hold, r["must_hold"])
    r["child_pgtables_kb"] = work.get("pgtable_alloc", 0) * 4
    return r


def touch(size: int, rounds: int = 5, write: bool = True):
    """First-touch faults: a fresh mapping, then one write fault (do_anonymous_page) per
    page -- or with write=False one read fault mapping the shared zero page per page."""
    m = machine_for(size)
    times, work = [], None
    for _ in range(rounds):
        p = m.spawn()
        a = p.mmap(0, size, RW, PRIV)
        ev = m.vmstat()
        times.append(_clock(lambda: p.touch(a, size, write=write)))
        work = work or (m.vmstat() - ev)
        p.exit()
    return _result(times, size // PAGE, work, m)


def zero_read(size: int, rounds: int = 5):
    return touch(size, rounds, write=False)


def cow_data(size: int, rounds: int = 4, design: str = "classic"):
    """COW breaks with data: the parent filled every page, forks; the child writes every
    page (one wp_page_copy of 4 KiB each). Round 0 is cold (its copies land on host memory
    never touched before); later rounds are warm (they reuse the frames the previous child
    freed). Only the child's writes are timed."""
    accounting = "eager" if design == "eager" else "deferred"
    cow = design != "classic"
    m, p, a = populated(size, data=True, accounting=accounting)
    times, work, hold = [], None, 0
    for _ in range(rounds):
        c = p.fork(cow_pgtable=cow)
        ev = m.vmstat()
        times.append(_clock(lambda: c.touch(a, size)))
        if work is None:
            work = m.vmstat() - ev
            hold = must_hold(m)
        c.exit()
    r = _result(times, size // PAGE, work, m)
    r["must_hold"] = max(hold, r["must_hold"])
    return r


def fork_write(size: int, design: str = "classic", rounds: int = 3):
    """The fork-then-write workload: fork, then the child writes every page of a region the
    parent filled with data (fork and the child's writes timed together; warm rounds)."""
    accounting = "eager" if design == "eager" else "deferred"
    cow = design != "classic"
    m, p, a = populated(size, data=True, accounting=accounting)
    p.fork(cow_pgtable=cow).exit()
    times, work = [], None
    for _ in range(rounds):
        ev = m.vmstat()
        t = time.perf_counter()
        c = p.fork(cow_pgtable=cow)
        c.touch(a, size)
        times.append(time.perf_counter() - t)
        work = work or (m.vmstat() - ev)
        c.exit()
    return _result(times, size // PAGE, work, m)


def break_cow_pte(size: int, design: str = "deferred", rounds: int = 5):
    """break_cow_pte: after a COW page-table fork, the child writes one page in every 2 MiB
    span, so every shared PTE table is copied once (plus one COW page copy each)."""
    m, p, a = populated(size, accounting=design)
    times, work = [], None
    spans = range(a, a + size, SPAN)
    for _ in range(rounds):
        c = p.fork(cow_pgtable=True)
        ev = m.vmstat()

        def write_each_span():
            for s in spans:
                c.touch(s, PAGE)
        times.append(_clock(write_each_span))
        work = work or (m.vmstat() - ev)
        c.exit()
    return _result(times, size // SPAN, work, m)


def munmap(size: int, rounds: int = 5):
    """munmap of a whole populated region (zap_page_range + free_pgtables)."""
    m = machine_for(size)
    p = m.spawn()
    times, work, hold = [], None, 0
    for _ in range(rounds):
        a = p.mmap(0, size, RW, PRIV)
        p.touch(a, size)
        hold = max(hold, must_hold(m))
        ev = m.vmstat()
        times.append(_clock(lambda: p.munmap(a, size)))
        work = work or (m.vmstat() - ev)
    r = _result(times, size // PAGE, work, m)
    r["must_hold"] = hold
    return r


def exit_(size: int, rounds: int = 5):
    """exit of a process with size bytes populated (exit_mmap)."""
    m = machine_for(size)
    times, work, hold = [], None, 0
    for _ in range(rounds):
        p = m.spawn()
        a = p.mmap(0, size, RW, PRIV)
        p.touch(a, size)
        hold = max(hold, must_hold(m))
        ev = m.vmstat()
        times.append(_clock(p.exit))
        work = work or (m.vmstat() - ev)
    r = _result(times, size // PAGE, work, m)
    r["must_hold"] = hold
    return r


def read(size: int, rounds: int = 5):
    """Process.read of a whole populated region: one page-table walk per page and a copy
    of its bytes into the result."""
    m, p, a = populated(size, data=True)
    times = []
    for _ in range(rounds):
        times.append(_clock(lambda: p.read(a, size)))
    ev = m.vmstat()
    out = p.read(a, size)
    assert out[:1] == b"\x5a" and out[-1:] == b"\x5a"
    return _result(times, size // PAGE, m.vmstat() - ev, m)


SCENARIOS = {
    "fork": fork,
    "touch": touch,
    "zero_read": zero_read,
    "cow_data": cow_data,
    "fork_write": fork_write,
    "break_cow_pte": break_cow_pte,
    "munmap": munmap,
    "exit": exit_,
    "read": read,
}
