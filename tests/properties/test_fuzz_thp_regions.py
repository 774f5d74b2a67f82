"""The stateful fuzzer of test_fuzz.py (three fork designs in lockstep with the reference
model) with huge-page-eligible regions, in the kernel's default THP mode here (``madvise``):
2 MiB-aligned private mappings advised MADV_HUGEPAGE in the 8 MiB area, so write faults map
THPs (do_huge_pmd_anonymous_page), reads the huge zero page, forks copy huge PMDs
(copy_huge_pmd), writes after a fork split them (do_huge_pmd_wp_page), and the inherited
rules' partial munmap / mprotect / madvise and mremap split or move them. MADV_HUGEPAGE /
NOHUGEPAGE also land at random (page granularity: VMA splits that cut a huge PMD). The
model knows only the advice (a VMA flag: smaps VmFlags ``hg`` / ``nh`` must be where it
has them); the bytes, errnos and signals must agree with it as before, and ``m.check()``
passes after every step.

A negative control breaks the THP fork path on purpose (copy_huge_pmd leaving the folio
PageAnonExclusive, so a later write reuses the shared huge page: the missing COW) through
a test-only wrapper of Process.fork, and the fuzzer must catch it."""
import os

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, Phase
from hypothesis.stateful import invariant, rule

import mmemu
from conftest import fuzz_settings
from mmemu import Madv
from mmemu._core.constants import PG_ANON_EXCLUSIVE
from mmemu._core.huge_memory import huge_pmd_head
from mmemu.check import InvariantError
from properties.test_fuzz import BIG, PMD, STEPS, Fuzz

pytestmark = pytest.mark.one_design
PG = 4096
SETTINGS = fuzz_settings(4, "MMEMU_FUZZ_EXAMPLES", "MMEMU_FUZZ_STEPS", stateful_step_count=STEPS,
                         suppress_health_check=[HealthCheck.too_slow])
THP_ADVICE = {"hugepage": Madv.HUGEPAGE, "nohugepage": Madv.NOHUGEPAGE}


class ThpRegionFuzz(Fuzz):
    def __init__(self):
        super().__init__()
        assert all(m.thp == "madvise" for m in self.machines)
        self.mmap_huge(0, 0, 4, 3)          # a huge-page-eligible start, two THPs written
        self.touch_big(0, [3, 700], True)

    def _advise(self, i, addr, length, advice):
        ref, ps = self._proc(i)
        self._same(ref.madvise(addr, length, advice), ps, "madvise", addr, length,
                   THP_ADVICE[advice])

    @rule(i=Fuzz.pick, first=st.integers(0, 3), n=st.integers(1, 4),
          prot=st.sampled_from([1, 3, 3]))
    def mmap_huge(self, i, first, n, prot):
        """A 2 MiB-aligned private mapping advised MADV_HUGEPAGE."""
        n = min(n, 4 - first)
        self.mmap_big(i, first, n, False, prot)
        self._advise(i, BIG + first * PMD, n * PMD, "hugepage")

    @rule(i=Fuzz.pick, first=st.integers(0, 4 * 512 - 1),
          n=st.sampled_from([1, 16, 511, 512, 1024, 2048]),
          advice=st.sampled_from(sorted(THP_ADVICE)))
    def thp_advice_big(self, i, first, n, advice):
        self._advise(i, BIG + first * PG, n * PG, advice)

    @rule(i=Fuzz.pick, r=Fuzz.region, first=Fuzz.page, n=Fuzz.count, snap=st.booleans(),
          advice=st.sampled_from(sorted(THP_ADVICE)))
    def thp_advice(self, i, r, first, n, snap, advice):
        ref, _ = self._proc(i)
        addr, n = self._range(ref, r, first, n, snap)
        self._advise(i, addr, n * PG, advice)

    @invariant()
    def thp_advice_agrees(self):
        """smaps VmFlags hg / nh are where the model has MADV_HUGEPAGE / NOHUGEPAGE."""
        for ref, ps in self.procs:
            for v in ps[0].smaps():
                want = ("hg" in v["VmFlags"], "nh" in v["VmFlags"])
                for a in range(v["start"], v["end"], PG):
                    pg = ref.pages[a]
                    assert (pg.hugepage, pg.nohugepage) == want, (hex(a), v["VmFlags"], pg)

    def teardown(self):
        # the huge zero page stays allocated once a read fault made it
        self.free0 = [free - (2048 if m.phys.huge_zero_pfn >= 0 else 0)
                      for m, free in zip(self.machines, self.free0)]
        super().teardown()


TestThpRegionFuzz = ThpRegionFuzz.TestCase
TestThpRegionFuzz.settings = SETTINGS


def test_the_fuzzer_reaches_the_thp_paths():
    """The rules above make, share, split and move THPs in every design, and the model
    agrees on every byte: a fault maps a THP (thp_fault_alloc, AnonHugePages), a fork
    copies it (copy_huge_pmd), a write after the fork splits the writer's PMD
    (thp_split_pmd), a partial munmap splits another, an aligned mremap moves one."""
    f = ThpRegionFuzz()
    for m in f.machines:
        assert m.vmstat()["thp_fault_alloc"] == 2
    f.fork(0, False)
    f.touch_big(1, [5, 1030], True)                 # the child: 2 splits, one a THP of its own
    f.range_big(0, 700, 1, "munmap")                # the parent's second THP: a partial unmap
    f.mremap_big(0, 0, 0, 1, 2, 0, 0, "fixed", True)    # the first THP: move_huge_pmd
    f.compare_contents(0)
    f.compare_contents(1)
    for m in f.machines:
        vm = m.vmstat()
        assert vm["thp_fault_alloc"] == 3 and vm["thp_split_pmd"] == 2, vm
    huge = [sum(v["AnonHugePages"] for v in p.smaps()) for p in f.procs[0][1]]
    assert huge == [2048] * 3                       # the moved THP, still one PMD
    f.layout_agrees()
    f.memory_matches_model()
    f.statistics_agree()
    f.thp_advice_agrees()
    f.invariants_hold()
    f.teardown()


def _fork_leaving_thps_exclusive(monkeypatch):
    """Test-only breakage: after every fork the parent's huge folios are marked
    PageAnonExclusive again, as if copy_huge_pmd's folio_try_dup_anon_rmap_pmd had not
    cleared it: the next write to either side reuses the shared THP in place."""
    real = mmemu.Process.fork

    def fork(self, *a, **kw):
        child = real(self, *a, **kw)
        phys = self.machine.phys
        for k in range(4):
            head = huge_pmd_head(self.mm.core, BIG + k * PMD)
            if head >= 0 and head != phys.huge_zero_pfn:
                phys._debug_poke("flags", head, int(phys.flags[head]) | PG_ANON_EXCLUSIVE)
        return child
    monkeypatch.setattr(mmemu.Process, "fork", fork)


def test_negative_control_a_fixed_sequence_catches_the_missing_cow(monkeypatch):
    """With the fork path broken, a child's write to a THP it shares shows in the parent:
    the model (which copies on write) and the machines disagree on the parent's bytes."""
    _fork_leaving_thps_exclusive(monkeypatch)
    f = ThpRegionFuzz()
    f.fork(0, False)
    f.touch_big(1, [9], True)                       # the child writes into the shared THP
    with pytest.raises(AssertionError, match="read: model"):
        f.touch_big(0, [9], False)                  # the parent reads the child's bytes


class _WithoutChecker(ThpRegionFuzz):
    """(the data comparisons alone: m.check() would see the exclusive shared folio first)"""

    @invariant()
    def invariants_hold(self):
        pass

    def teardown(self):
        pass


@pytest.mark.long
@pytest.mark.parametrize("fuzzer", ["with_checker", "data_only"])
def test_negative_control_the_random_fuzzer_catches_the_missing_cow(monkeypatch, fuzzer):
    """The random fuzzer finds the broken fork path by itself within its first examples:
    through m.check() (PageAnonExclusive pages mapped more than once) or the bytes (the
    model's memory differs), whichever comes first, and through the bytes alone when the
    checker is left out, which takes more examples (run when a budget is asked for:
    MMEMU_FUZZ_EXAMPLES)."""
    if fuzzer == "data_only" and "MMEMU_FUZZ_EXAMPLES" not in os.environ:
        pytest.skip("data-only negative control: ~15 examples, run with MMEMU_FUZZ_EXAMPLES")
    _fork_leaving_thps_exclusive(monkeypatch)
    run = (ThpRegionFuzz if fuzzer == "with_checker" else _WithoutChecker).TestCase
    run.settings = fuzz_settings(60, stateful_step_count=STEPS,
                                 suppress_health_check=[HealthCheck.too_slow],
                                 report_multiple_bugs=False, phases=[Phase.generate])
    with pytest.raises(AssertionError) as exc:
        run().runTest()
    # the checker's InvariantError names the folio; the data comparisons the address
    if isinstance(exc.value, InvariantError):
        assert fuzzer == "with_checker"
        assert "PageAnonExclusive pages mapped more than once" in str(exc.value)
    else:
        assert "0x7e00" in str(exc.value)           # a page of the THP area (BIG)
