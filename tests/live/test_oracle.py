"""The live kernel as a test oracle (mmemu.oracle): random syscall sequences run on a real
helper process and on mmemu in lockstep; after every step the bytes, errnos, signals,
region status fields and pagemap bits must agree. CI runs a fixed, derandomized budget
(100 examples of up to 20 steps); MMEMU_ORACLE_EXAMPLES=N runs N fresh random examples. A
divergence is shrunk by Hypothesis and printed as replayable steps."""
import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from conftest import fuzz_settings
from mmemu.oracle import DEPARTURES, Divergence, Oracle
from mmemu.oracle.live import linux_proc_available

pytestmark = pytest.mark.one_design
_why = linux_proc_available()
live = pytest.mark.skipif(bool(_why), reason=_why or "live kernel available")

# CI: 100 derandomized examples; MMEMU_ORACLE_EXAMPLES=N explores N fresh ones
SETTINGS = fuzz_settings(100, "MMEMU_ORACLE_EXAMPLES", stateful_step_count=20,
                         suppress_health_check=list(HealthCheck))
# pages around the region's PMD boundary (page 512) and a second cluster for moves
PAGE = st.integers(500, 540) | st.integers(1010, 1030)
NPG = st.integers(1, 24)
PROT = st.sampled_from([0, 1, 3])
KIND = st.sampled_from(["private", "private", "shared", "file_private", "file_shared"])
ADVICE = st.sampled_from([4, 10, 11, 18, 19, 22, 23])   # DONTNEED DONTFORK DOFORK WIPE/KEEPONFORK POPULATE_*


SEEN = {}      # departures met by name, over the whole run


class OracleMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.o = Oracle()

    def teardown(self):
        for k, n in self.o.departures_seen.items():
            SEEN[k] = SEEN.get(k, 0) + n
        self.o.close()

    def _proc(self, pick):
        alive = self.o.alive()
        return alive[pick % len(alive)]

    @rule(page=PAGE, n=NPG, prot=PROT, kind=KIND, off=st.integers(0, 100), pick=st.integers(0, 3))
    def mmap(self, page, n, prot, kind, off, pick):
        self.o.mmap(page, n, prot, kind, off if kind.startswith("file") else 0, proc=self._proc(pick))

    @rule(page=PAGE, n=NPG, pick=st.integers(0, 3))
    def munmap(self, page, n, pick):
        self.o.munmap(page, n, proc=self._proc(pick))

    @rule(page=PAGE, n=NPG, prot=PROT, pick=st.integers(0, 3))
    def mprotect(self, page, n, prot, pick):
        self.o.mprotect(page, n, prot, proc=self._proc(pick))

    @rule(page=PAGE, n=NPG, advice=ADVICE, pick=st.integers(0, 3))
    def madvise(self, page, n, advice, pick):
        self.o.madvise(page, n, advice, proc=self._proc(pick))

    @rule(page=PAGE, n=NPG, new=NPG, to=st.none() | PAGE, pick=st.integers(0, 3))
    def mremap(self, page, n, new, to, pick):
        self.o.mremap(page, n, n if to is not None else new, to, proc=self._proc(pick))

    @rule(page=PAGE, off=st.integers(0, 4095), n=st.integers(1, 3 * 4096), pick=st.integers(0, 3))
    def read(self, page, off, n, pick):
        self.o.read(page, off, n, proc=self._proc(pick))

    @rule(page=PAGE, off=st.integers(0, 4095), n=st.integers(1, 3 * 4096), byte=st.integers(1, 255),
          pick=st.integers(0, 3))
    def write(self, page, off, n, byte, pick):
        self.o.write(page, off, n, byte, proc=self._proc(pick))

    @precondition(lambda self: len(self.o.alive()) < 3)
    @rule(pick=st.integers(0, 3))
    def fork(self, pick):
        self.o.fork(proc=self._proc(pick))

    @precondition(lambda self: len(self.o.alive()) > 1)
    @rule(pick=st.integers(0, 3))
    def exit(self, pick):
        alive = self.o.alive()[1:]
        self.o.exit(alive[pick % len(alive)])


@live
def test_oracle_random_sequences():
    run = OracleMachine.TestCase
    run.settings = SETTINGS
    run().runTest()
    print(f"oracle: {SETTINGS.max_examples} sequences agree with the kernel; departures met by name: {SEEN}")
    assert set(SEEN) <= set(DEPARTURES)


@live
def test_oracle_fixed_sequence():
    """A hand-written sequence touching every kind of mapping, fork and exit."""
    with Oracle() as o:
        o.mmap(500, 30, 3, "private")
        o.write(500, 100, 9000, 5)
        o.read(510, 7, 20000)
        o.mmap(540, 12, 1, "file_private", 4)
        o.read(540, 0, 14 * 4096)                 # past the VMA: SIGSEGV
        o.mmap(560, 8, 3, "shared")
        o.write(560, 0, 5000, 3)
        o.mprotect(505, 5, 1)
        o.write(504, 0, 3 * 4096, 1)              # stops at the read-only page
        c = o.fork()
        o.write(500, 0, 4096, 7, proc=c)
        o.madvise(500, 3, 4)
        o.mremap(500, 3, 3, 1010)
        o.madvise(511, 4, 18)
        o.mmap(600, 10, 3, "file_shared", 90)
        o.read(600, 0, 10 * 4096)                 # past EOF of the file: SIGBUS
        o.exit(c)
        assert "signals_inferred" in o.departures_seen


def test_divergence_is_replayable():
    d = Divergence("mmap", {"ret": 1}, {"err": 22}, ["mmap(500, 1, 3, 'private', 0, proc=0)"])
    assert "o.mmap(500, 1, 3, 'private', 0, proc=0)" in str(d)
    assert "o = Oracle()" in str(d)


def test_departures_are_named():
    for name, why in DEPARTURES.items():
        assert name.isidentifier() and len(why) > 40
