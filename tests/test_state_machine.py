"""Random syscalls on mmemu and on the reference model; every byte and signal must agree,
and the invariant checker must pass after every step."""
import errno

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import mmemu
from mmemu import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED, Madv
from reference import PG, RefProcess

BASE = 0x7F0000000000 - 16 * PG      # the area straddles a 2 MiB (PMD) boundary
NPAGES = 48
PROTS = st.sampled_from([0, 1, 2, 3, 5, 7])
ADVICE = {"dontneed": Madv.DONTNEED, "dontfork": Madv.DONTFORK, "dofork": Madv.DOFORK,
          "wipeonfork": Madv.WIPEONFORK, "keeponfork": Madv.KEEPONFORK}


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
        self.m = mmemu.Machine("64M")
        p, r = self.m.spawn(), RefProcess()
        self.procs = [(p, r)]
        # start from a populated area: half private, a quarter shared, a quarter private RO
        layout = [(0, 24, 3, False), (24, 12, 3, True), (36, 12, 1, False)]
        for first, n, prot, shared in layout:
            flags = MAP_FIXED | MAP_ANONYMOUS | (MAP_SHARED if shared else MAP_PRIVATE)
            p.mmap(BASE + first * PG, n * PG, 3, flags)
            r.mmap(BASE + first * PG, n, 3, shared)
            for k in range(first, first + n):
                data = bytes([k + 1]) * 64 + bytes(PG - 64)
                p.write(BASE + k * PG, data)
                r.write(BASE + k * PG, data)
            if prot != 3:
                p.mprotect(BASE + first * PG, n * PG, prot)
                r.mprotect(BASE + first * PG, n, prot)

    pick = st.integers(min_value=0, max_value=1000)
    page = st.integers(min_value=0, max_value=NPAGES - 1)
    count = st.integers(min_value=1, max_value=12)

    def _proc(self, i):
        return self.procs[i % len(self.procs)]

    @rule(i=pick, first=page, n=count, prot=PROTS, shared=st.booleans())
    def mmap(self, i, first, n, prot, shared):
        p, r = self._proc(i)
        n = min(n, NPAGES - first)
        flags = MAP_FIXED | MAP_ANONYMOUS | (MAP_SHARED if shared else MAP_PRIVATE)
        assert p.mmap(BASE + first * PG, n * PG, prot, flags) == BASE + first * PG
        r.mmap(BASE + first * PG, n, prot, shared)

    @rule(i=pick, first=page, n=count)
    def munmap(self, i, first, n):
        p, r = self._proc(i)
        assert p.munmap(BASE + first * PG, n * PG) == 0
        r.munmap(BASE + first * PG, n)

    @rule(i=pick, first=page, n=count, prot=PROTS)
    def mprotect(self, i, first, n, prot):
        p, r = self._proc(i)
        assert outcome(p.mprotect, BASE + first * PG, n * PG, prot) == r.mprotect(BASE + first * PG, n, prot)

    @rule(i=pick, first=page, n=count, advice=st.sampled_from(sorted(ADVICE)))
    def madvise(self, i, first, n, advice):
        p, r = self._proc(i)
        got = outcome(p.madvise, BASE + first * PG, n * PG, ADVICE[advice])
        assert got == r.madvise(BASE + first * PG, n, advice)

    @rule(i=pick, off=st.integers(0, NPAGES * PG - 1),
          data=st.one_of(st.binary(min_size=1, max_size=16), st.binary(min_size=1, max_size=3 * PG)))
    def write(self, i, off, data):
        p, r = self._proc(i)
        data = data[: NPAGES * PG - off]
        expected = r.write(BASE + off, data)
        got = outcome(p.write, BASE + off, data)
        assert got == expected

    @rule(i=pick, first=page, n=count)
    def touch(self, i, first, n):
        p, r = self._proc(i)
        n = min(n, NPAGES - first)
        # a write-touch changes no byte: the model only decides whether it faults
        _, err = r.read(BASE + first * PG, n * PG)
        expected = r.write(BASE + first * PG, r.read(BASE + first * PG, n * PG)[0]) if err is None else err
        got = outcome(p.touch, BASE + first * PG, n * PG, True)
        if expected is None or got is None:
            assert got == expected

    @rule(i=pick, off=st.integers(0, NPAGES * PG - 1), n=st.integers(1, 3 * PG))
    def read(self, i, off, n):
        p, r = self._proc(i)
        n = min(n, NPAGES * PG - off)
        data, err = r.read(BASE + off, n)
        if err is None:
            assert p.read(BASE + off, n) == data
        else:
            assert outcome(p.read, BASE + off, n) == err

    @precondition(lambda self: len(self.procs) < 5)
    @rule(i=pick)
    def fork(self, i):
        p, r = self._proc(i)
        self.procs.append((p.fork(), r.fork()))

    @precondition(lambda self: len(self.procs) > 1)
    @rule(i=pick)
    def exit(self, i):
        k = i % len(self.procs)
        p, _ = self.procs.pop(k)
        p.exit()

    @invariant()
    def whole_area_matches(self):
        for p, r in self.procs:
            for pg in range(NPAGES):
                data, err = r.read(BASE + pg * PG, PG)
                if err is None:
                    assert p.read(BASE + pg * PG, PG) == data, f"pid {p.pid} page {pg}"

    @invariant()
    def invariants_hold(self):
        self.m.check()

    def teardown(self):
        for p, _ in self.procs:
            p.exit()
        mi = self.m.meminfo()
        assert mi["MemFree"] == mi["MemTotal"] - 4
        assert mi["PageTables"] == mi["AnonPages"] == mi["Shmem"] == 0
        self.m.check()


TestMMStateMachine = MMStateMachine.TestCase
TestMMStateMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
