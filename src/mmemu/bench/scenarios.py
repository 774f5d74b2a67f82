"""The timed mmemu scenarios, one class per hot path.

A scenario builds its machine when constructed (untimed); each round calls ``setup()``
(untimed: it also cleans up the previous round) and then ``op()``, the timed operation.
``measure()`` drives the rounds with ``time.perf_counter`` and returns a dict: ``times``
(seconds, in round order), ``pages`` (pages the operation covers), ``work`` (vmstat deltas
of the first round) and ``must_hold`` (bytes of page tables, frame metadata and frame data
the emulator had to keep at its peak). The pytest-benchmark suites in ``benchmarks/``
drive the same classes with ``benchmark.pedantic(s.op, setup=s.setup)``; ``mmemu bench``
runs each in a fresh process so its peak host RSS is its own.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from .._core.constants import PAGE_SIZE as PAGE, PG_HASDATA, PMD_SIZE as SPAN  # SPAN: one PTE table's bytes
from ..flags import MADV_DONTNEED, MADV_HUGEPAGE, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from ..compare import DESIGNS
from ..machine import Machine

RW = PROT_READ | PROT_WRITE
PRIV = MAP_PRIVATE | MAP_ANONYMOUS
METADATA_BYTES = 5 * 4             # refcount, mapcount, flags, pt_share, pt_owner per frame


def machine_for(size: int, accounting: str = "deferred", version=None) -> Machine:
    """An emulated machine with room for a size-byte process, a child's copies and tables
    (`version`: a published version of the COW PTE series, mmemu.profiles)."""
    memory = max(4 << 30, 1 << (3 * size - 1).bit_length())
    return Machine(memory, cow_pte_accounting=accounting, cow_pgtable=False, cow_pte_version=version)


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


class Scenario:
    """Base: subclasses set up self.m in __init__ and define op (and setup if needed)."""
    rounds = 5
    unit = "page"           # what `pages` counts

    def __init__(self, size: int, design: str = None):
        self.size, self.design = size, design
        self.pages = size // PAGE
        # classic, deferred / eager (PTE tables), cow-pmd-* / cow-pud-* (whole tables)
        _, self.accounting, self.cow = DESIGNS[design or "classic"]

    def setup(self):
        pass

    def op(self):
        raise NotImplementedError

    def finish(self):
        self.setup()        # the last round's leftovers

    def measure(self, rounds: int = None) -> dict:
        times, work, hold = [], None, 0
        for i in range(rounds or self.rounds):
            self.setup()
            ev = self.m.vmstat() if i == 0 else None
            t = time.perf_counter()
            self.op()
            times.append(time.perf_counter() - t)
            if i == 0:
                work = self.m.vmstat() - ev
                hold = must_hold(self.m)
        self.finish()
        out = {"times": times, "pages": self.pages, "unit": self.unit,
               "work": {k: int(v) for k, v in work.items() if v and not k.startswith("nr_")},
               "must_hold": max(hold, must_hold(self.m))}
        out["child_pgtables_kb"] = out["work"].get("pgtable_alloc", 0) * 4
        return out


class Fork(Scenario):
    """fork() of a process with size bytes populated (copy_page_range, or sharing PTE
    tables with COW page tables); the child exits in the next setup. One untimed warm-up
    fork first, as `mmemu fork-table` does."""
    rounds = 10

    def __init__(self, size, design="classic"):
        super().__init__(size, design)
        self.m, self.p, self.a = populated(size, accounting=self.accounting)
        self.p.fork(cow_pgtable=self.cow).exit()
        self.child = None

    def setup(self):
        if self.child is not None:
            self.child.exit()
            self.child = None

    def op(self):
        self.child = self.p.fork(cow_pgtable=self.cow)


class Touch(Scenario):
    """First-touch faults over a fresh mapping: one write fault (do_anonymous_page) per page,
    or with write=False one read fault mapping the shared zero page per page."""
    write = True

    def __init__(self, size, design=None):
        super().__init__(size, design)
        self.m = machine_for(size)
        self.p = None

    def setup(self):
        if self.p is not None:
            self.p.exit()
        self.p = self.m.spawn()
        self.a = self.p.mmap(0, self.size, RW, PRIV)

    def op(self):
        self.p.touch(self.a, self.size, write=self.write)


class ZeroRead(Touch):
    write = False


class CowData(Scenario):
    """COW breaks with data: the parent filled every page and forks (untimed); the child
    writes every page (timed: one wp_page_copy of 4 KiB each). Round 0 is cold (its copies
    land on host memory never touched before); later rounds are warm (they reuse the
    frames the previous child freed)."""
    rounds = 4

    def __init__(self, size, design="classic"):
        super().__init__(size, design or "classic")
        self.m, self.p, self.a = populated(size, data=True, accounting=self.accounting)
        self.child = None

    def setup(self):
        if self.child is not None:
            self.child.exit()
        self.child = self.p.fork(cow_pgtable=self.cow)

    def op(self):
        self.child.touch(self.a, self.size)

    def finish(self):
        self.child.exit()
        self.child = None


class ForkWrite(Fork):
    """The fork-then-write workload: fork, then the child writes every page of a region the
    parent filled with data, timed together (warm rounds)."""
    rounds = 3

    def __init__(self, size, design="classic"):
        Scenario.__init__(self, size, design)
        self.m, self.p, self.a = populated(size, data=True, accounting=self.accounting)
        self.p.fork(cow_pgtable=self.cow).exit()
        self.child = None

    def op(self):
        self.child = self.p.fork(cow_pgtable=self.cow)
        self.child.touch(self.a, self.size)


class BreakCowPte(Scenario):
    """break_cow_pte: after a COW page-table fork (untimed), the child writes one page in
    every 2 MiB span (timed), so every shared PTE table is copied once (after a whole-table
    COW fork, every shared PMD / PUD table on the way too)."""
    unit = "table"

    def __init__(self, size, design="deferred"):
        super().__init__(size, design or "deferred")
        self.m, self.p, self.a = populated(size, accounting=self.accounting)
        self.pages = size // SPAN
        self.child = None

    def setup(self):
        if self.child is not None:
            self.child.exit()
        self.child = self.p.fork(cow_pgtable=self.cow)

    def op(self):
        self.write_each_span(0)

    def write_each_span(self, page):
        c = self.child
        for s in range(self.a + page * PAGE, self.a + self.size, SPAN):
            c.touch(s, PAGE)

    def finish(self):
        self.child.exit()
        self.child = None


class CowRewrite(BreakCowPte):
    """The write after the breaks: after a COW fork and one write per 2 MiB span by the
    child (untimed: every shared table is broken), the child writes a second page in
    every span (timed: a COW fault in a private table, whatever the design)."""

    def setup(self):
        super().setup()
        self.write_each_span(0)

    def op(self):
        self.write_each_span(1)


class Munmap(Scenario):
    """munmap of a whole populated region (zap_page_range + free_pgtables)."""

    def __init__(self, size, design=None):
        super().__init__(size, design)
        self.m = machine_for(size)
        self.p = self.m.spawn()
        self.a = None

    def setup(self):
        if self.a is not None:
            self.p.munmap(self.a, self.size)
        self.a = self.p.mmap(0, self.size, RW, PRIV)
        self.p.touch(self.a, self.size)

    def op(self):
        self.p.munmap(self.a, self.size)
        self.a = None


class Exit(Scenario):
    """exit of a process with size bytes populated (exit_mmap)."""

    def __init__(self, size, design=None):
        super().__init__(size, design)
        self.m = machine_for(size)

    def setup(self):
        self.p = self.m.spawn()
        a = self.p.mmap(0, self.size, RW, PRIV)
        self.p.touch(a, self.size)

    def op(self):
        self.p.exit()

    def finish(self):
        pass


class Read(Scenario):
    """Process.read of a whole region the process filled: one page-table walk per page
    and a copy of its bytes into the result."""

    def __init__(self, size, design=None):
        super().__init__(size, design)
        self.m, self.p, self.a = populated(size, data=True)
        self.out = None

    def setup(self):
        self.out = None

    def op(self):
        self.out = self.p.read(self.a, self.size)


class TwoMachines(Scenario):
    """Two machines, two threads: each machine's parent holds size bytes of random data;
    a cycle on one machine is fork, the child writes its own random array over the region
    (a COW copy of every page, then the data), MADV_DONTNEED of the region, exit. Each
    round times the two cycles one after the other in this thread (``serial``) and each in
    its own thread at once (``times``), alternating which goes first; the kernels drop the
    GIL and each machine has its own lock, so on two free cores the threads take about
    half as long."""
    rounds = 5

    def __init__(self, size, design=None):
        super().__init__(size, design)
        rng = np.random.default_rng(2)
        self.worlds = []
        for _ in range(2):
            m = machine_for(size)
            p = m.spawn()
            a = p.mmap(0, size, RW, PRIV)
            p.write(a, rng.integers(0, 256, size, dtype=np.uint8))
            self.worlds.append((m, p, a, rng.integers(0, 256, size, dtype=np.uint8)))
        self.m = self.worlds[0][0]
        self.pages = 2 * size // PAGE
        for w in self.worlds:               # warm: the children's frames exist on the host
            self.cycle(w)

    def cycle(self, world):
        m, p, a, data = world
        c = p.fork()
        c.write(a, data)
        c.madvise(a, self.size, MADV_DONTNEED)
        c.exit()

    def serially(self) -> float:
        t = time.perf_counter()
        for w in self.worlds:
            self.cycle(w)
        return time.perf_counter() - t

    def in_parallel(self) -> float:
        errors = []

        def run(w):
            try:
                self.cycle(w)
            except BaseException as e:  # noqa: BLE001 (re-raised in the caller)
                errors.append(e)
        threads = [threading.Thread(target=run, args=(w,)) for w in self.worlds]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - t
        if errors:
            raise errors[0]
        return elapsed

    def measure(self, rounds: int = None) -> dict:
        serial, parallel = [], []
        ev = self.m.vmstat()
        work = None
        for i in range(rounds or self.rounds):
            if i % 2:
                parallel.append(self.in_parallel())
                serial.append(self.serially())
            else:
                serial.append(self.serially())
                if work is None:
                    work = self.m.vmstat() - ev
                parallel.append(self.in_parallel())
        return {"times": parallel, "serial": serial, "pages": self.pages, "unit": "page",
                "work": {k: int(v) for k, v in work.items() if v and not k.startswith("nr_")},
                "must_hold": sum(must_hold(w[0]) for w in self.worlds), "child_pgtables_kb": 0}


class ThpTouch(Touch):
    """First touch of a MADV_HUGEPAGE mapping: one write per page, a THP fault
    (do_huge_pmd_anonymous_page) per 2 MiB, plain stores for the rest."""

    def setup(self):
        super().setup()
        self.p.madvise(self.a, self.size, MADV_HUGEPAGE)


class ThpFork(Fork):
    """fork() of size bytes of THP-backed memory (copy_huge_pmd per 2 MiB); the child
    exits in the next setup."""

    def __init__(self, size, design="classic"):
        Scenario.__init__(self, size, design)
        self.m = machine_for(size, self.accounting)
        self.p = self.m.spawn()
        self.a = self.p.mmap(0, size + SPAN, RW, PRIV)
        self.a += (-self.a) % SPAN
        self.p.madvise(self.a, size, MADV_HUGEPAGE)
        self.p.touch(self.a, size)
        self.p.fork(cow_pgtable=self.cow).exit()
        self.child = None


class ThpSplit(Scenario):
    """Splitting every huge PMD of size bytes of THP-backed memory: an mprotect of one
    page in each 2 MiB (a VMA split and __split_huge_pmd each)."""
    rounds = 3

    def __init__(self, size, design=None):
        super().__init__(size, design)
        self.m = machine_for(size)
        self.p = None

    def setup(self):
        if self.p is not None:
            self.p.exit()
        self.p = self.m.spawn()
        self.a = self.p.mmap(0, self.size + SPAN, RW, PRIV)
        self.a += (-self.a) % SPAN
        self.p.madvise(self.a, self.size, MADV_HUGEPAGE)
        self.p.touch(self.a, self.size)

    def op(self):
        for a in range(self.a, self.a + self.size, SPAN):
            self.p.mprotect(a, PAGE, PROT_READ)


SCENARIOS = {
    "fork": Fork,
    "touch": Touch,
    "zero_read": ZeroRead,
    "cow_data": CowData,
    "fork_write": ForkWrite,
    "break_cow_pte": BreakCowPte,
    "cow_rewrite": CowRewrite,
    "munmap": Munmap,
    "exit": Exit,
    "read": Read,
    "two_machines": TwoMachines,
    "thp_touch": ThpTouch,
    "thp_fork": ThpFork,
    "thp_split": ThpSplit,
}


def run(op: str, size: int, design: str = None, rounds: int = None) -> dict:
    """Build and measure one scenario."""
    cls = SCENARIOS[op]
    s = cls(size, design) if design else cls(size)
    return s.measure(rounds)
