"""Differential test: the same random syscalls on a classic-fork machine, a COW-page-table
machine with deferred accounting, one with eager accounting, and the reference model.
Every byte read, every error and every signal must agree across all four, and each
machine's invariant checker must pass after every step."""
import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import mmemu
from mmemu import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED, Madv
from reference_model import PG, RefProcess

pytestmark = pytest.mark.one_design      # the machine runs all three designs itself

BASE = 0x7F0000000000 - 16 * PG      # the area straddles a 2 MiB (PMD) boundary
NPAGES = 48
PROTS = st.sampled_from([0, 1, 2, 3, 5, 7])
ADVICE = {"dontneed": Madv.DONTNEED, "dontfork": Madv.DONTFORK, "dofork": Madv.DOFORK,
          "wipeonfork": Madv.WIPEONFORK, "keeponfork": Madv.KEEPONFORK}
DESIGNS = [dict(cow_pgtable=False), dict(cow_pgtable=True, cow_pte_accounting="deferred"),
           dict(cow_pgtable=True, cow_pte_accounting="eager")]


def outcome(fn, *args):
    try:
        fn(*args)
        return None
    except mmemu.MMError as e:
        return e.errno
    except mmemu.SegmentationFault as e:
        return ("SEGV", e.code)


class MMStateMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.machines = [mmemu.Machine("64M", **d) for d in DESIGNS]
        r = RefProcess()
        ps = [m.spawn() for m in self.machines]
        self.procs = [(r, ps)]
        # start from a populated area: half private, a quarter shared, a quarter private RO
        layout = [(0, 24, 3, False), (24, 12, 3, True), (36, 12, 1, False)]
        for first, n, prot, shared in layout:
            flags = MAP_FIXED | MAP_ANONYMOUS | (MAP_SHARED if shared else MAP_PRIVATE)
            r.mmap(BASE + first * PG, n, 3, shared)
            for p in ps:
                p.mmap(BASE + first * PG, n * PG, 3, flags)
            for k in range(first, first + n):
                data = bytes([k + 1]) * 64 + bytes(PG - 64)
                r.write(BASE + k * PG, data)
                for p in ps:
                    p.write(BASE + k * PG, data)
            if prot != 3:
                r.mprotect(BASE + first * PG, n, prot)
                for p in ps:
                    p.mprotect(BASE + first * PG, n * PG, prot)

    pick = st.integers(min_value=0, max_value=1000)
    page = st.integers(min_value=0, max_value=NPAGES - 1)
    count = st.integers(min_value=1, max_value=12)

    def _proc(self, i):
        return self.procs[i % len(self.procs)]

    def _all(self, ps, method, *args):
        return [outcome(getattr(p, method), *args) for p in ps]

    @rule(i=pick, first=page, n=count, prot=PROTS, shared=st.booleans())
    def mmap(self, i, first, n, prot, shared):
        r, ps = self._proc(i)
        n = min(n, NPAGES - first)
        flags = MAP_FIXED | MAP_ANONYMOUS | (MAP_SHARED if shared else MAP_PRIVATE)
        assert [p.mmap(BASE + first * PG, n * PG, prot, flags) for p in ps] == [BASE + first * PG] * 3
        r.mmap(BASE + first * PG, n, prot, shared)

    @rule(i=pick, first=page, n=count)
    def munmap(self, i, first, n):
        r, ps = self._proc(i)
        assert self._all(ps, "munmap", BASE + first * PG, n * PG) == [None] * 3
        r.munmap(BASE + first * PG, n)

    @rule(i=pick, first=page, n=count, prot=PROTS)
    def mprotect(self, i, first, n, prot):
        r, ps = self._proc(i)
        expected = r.mprotect(BASE + first * PG, n, prot)
        assert self._all(ps, "mprotect", BASE + first * PG, n * PG, prot) == [expected] * 3

    @rule(i=pick, first=page, n=count, advice=st.sampled_from(sorted(ADVICE)))
    def madvise(self, i, first, n, advice):
        r, ps = self._proc(i)
        expected = r.madvise(BASE + first * PG, n, advice)
        assert self._all(ps, "madvise", BASE + first * PG, n * PG, ADVICE[advice]) == [expected] * 3

    @rule(i=pick, off=st.integers(0, NPAGES * PG - 1),
          data=st.one_of(st.binary(min_size=1, max_size=16), st.binary(min_size=1, max_size=3 * PG)))
    def write(self, i, off, data):
        r, ps = self._proc(i)
        data = data[: NPAGES * PG - off]
        expected = r.write(BASE + off, data)
        assert self._all(ps, "write", BASE + off, data) == [expected] * 3

    @rule(i=pick, first=page, n=count, write=st.booleans())
    def touch(self, i, first, n, write):
        r, ps = self._proc(i)
        n = min(n, NPAGES - first)
        data, err = r.read(BASE + first * PG, n * PG)
        if write and err is None:
            # a write-touch changes no byte: the model only decides whether it faults
            err = r.write(BASE + first * PG, data)
        got = self._all(ps, "touch", BASE + first * PG, n * PG, write)
        if err is None:
            assert got == [None] * 3
        else:
            assert len(set(map(str, got))) == 1 and got[0] is not None

    @rule(i=pick, off=st.integers(0, NPAGES * PG - 1), n=st.integers(1, 3 * PG))
    def read(self, i, off, n):
        r, ps = self._proc(i)
        n = min(n, NPAGES * PG - off)
        data, err = r.read(BASE + off, n)
        if err is None:
            assert [p.read(BASE + off, n) for p in ps] == [data] * 3
        else:
            assert self._all(ps, "read", BASE + off, n) == [err] * 3

    @precondition(lambda self: len(self.procs) < 5)
    @rule(i=pick)
    def fork(self, i):
        r, ps = self._proc(i)
        self.procs.append((r.fork(), [p.fork() for p in ps]))

    @precondition(lambda self: len(self.procs) > 1)
    @rule(i=pick)
    def exit(self, i):
        k = i % len(self.procs)
        _, ps = self.procs.pop(k)
        for p in ps:
            p.exit()

    @invariant()
    def whole_area_matches(self):
        for r, ps in self.procs:
            for pg in range(NPAGES):
                data, err = r.read(BASE + pg * PG, PG)
                if err is None:
                    for p in ps:
                        assert p.read(BASE + pg * PG, PG) == data, f"pid {p.pid} page {pg}"

    @invariant()
    def invariants_hold(self):
        for m in self.machines:
            m.check()

    @invariant()
    def statistics_every_design_shares(self):
        # AnonPages counts pages mapped at least once: the same in every design
        anon = [m.meminfo()["AnonPages"] for m in self.machines]
        assert anon[0] == anon[1] == anon[2]

    def teardown(self):
        for _, ps in self.procs:
            for p in ps:
                p.exit()
        for m in self.machines:
            mi = m.meminfo()
            assert mi["MemFree"] == mi["MemTotal"] - 4
            assert mi["PageTables"] == mi["AnonPages"] == mi["Shmem"] == 0
            m.check()


TestMMStateMachine = MMStateMachine.TestCase
TestMMStateMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
