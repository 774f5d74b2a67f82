"""The stateful fuzzer of tests/properties/test_fuzz.py (three fork designs in lockstep
with the reference model, which has no page tables) on machines whose anonymous faults map
transparent huge pages: THP mode "always" from the start, switched at random between
always / madvise / never, with MADV_HUGEPAGE / NOHUGEPAGE over the 2 MiB-aligned area. The
bytes, the layout and the statistics must agree as before, ``m.check()`` passes after
every step, and at the end every machine is back to its starting free memory but for the
huge zero page, which stays once allocated."""
import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck
from hypothesis.stateful import rule

import mmemu
from conftest import fuzz_settings
from mmemu import Madv
from properties.test_fuzz import BIG, PMD, STEPS, Fuzz, outcome

pytestmark = pytest.mark.one_design
SETTINGS = fuzz_settings(40, "MMEMU_FUZZ_EXAMPLES", "MMEMU_FUZZ_STEPS", stateful_step_count=STEPS,
                         suppress_health_check=[HealthCheck.too_slow])


class ThpFuzz(Fuzz):
    def __init__(self):
        kw = mmemu.Machine.__init__.__kwdefaults__
        old = dict(kw)
        kw["thp"] = "always"
        try:
            super().__init__()
        finally:
            kw.clear()
            kw.update(old)
        assert all(m.thp == "always" for m in self.machines)

    @rule(mode=st.sampled_from(["always", "madvise", "never"]))
    def thp_mode(self, mode):
        for m in self.machines:
            m.sysfs["kernel/mm/transparent_hugepage/enabled"] = mode

    @rule(i=st.integers(0, 1000), first=st.integers(0, 3), n=st.integers(1, 4), huge=st.booleans())
    def hugepage_advice(self, i, first, n, huge):
        _, ps = self._proc(i)
        got = [outcome(p.madvise, BIG + first * PMD, min(n, 4 - first) * PMD,
                       Madv.HUGEPAGE if huge else Madv.NOHUGEPAGE) for p in ps]
        assert got[0] == got[1] == got[2], got

    def teardown(self):
        # the huge zero page stays allocated once a read fault made it
        self.free0 = [free - (2048 if m.phys.huge_zero_pfn >= 0 else 0)
                      for m, free in zip(self.machines, self.free0)]
        super().teardown()


TestThpFuzz = ThpFuzz.TestCase
TestThpFuzz.settings = SETTINGS
