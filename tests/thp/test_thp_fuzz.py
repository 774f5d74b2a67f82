"""The stateful fuzzer of tests/properties/test_fuzz.py (three fork designs in lockstep
with the reference model, which has no page tables) on machines whose anonymous faults map
transparent huge pages: THP mode "always" from the start, switched at random between
always / madvise / never, with MADV_HUGEPAGE / NOHUGEPAGE over the 2 MiB-aligned area. The
bytes, the layout and the statistics must agree as before, ``m.check()`` passes after
every step, and at the end every machine is back to its starting free memory but for the
huge zero page, which stays once allocated. The file gets 2 MiB writes (PMD-sized page-cache
folios) and whole-span mappings in the same area, so file PMDs meet every rule too."""
import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck
from hypothesis.stateful import rule

import mmemu
from conftest import fuzz_settings
from mmemu import MAP_FIXED, MAP_PRIVATE, MAP_SHARED, Madv
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
        self.mmap_big_file(0, 0, 1, False, 3, 1, True)     # a file PMD from the start
        assert all(m.vmstat()["nr_file_pmdmapped"] == 1 for m in self.machines)

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

    @rule(k=st.integers(0, 2))
    def big_file_write(self, k):
        """One write of an aligned 2 MiB of the file: a PMD-sized page-cache folio where
        nothing of it is cached yet (ext4's large folios), single pages elsewhere."""
        data = bytes(((i >> 12) * 3 + k) & 0xFF for i in range(0, PMD, 256)) * 256
        expected = self.mfile.write(k * PMD, data)
        got = [outcome(m.write_file, f, k * PMD, data) for m, f in zip(self.machines, self.files)]
        assert got == [("ok", expected)] * 3, got

    @rule(i=st.integers(0, 1000), first=st.integers(0, 3), n=st.integers(1, 4),
          shared=st.booleans(), prot=st.sampled_from([1, 3]), foff=st.integers(0, 2),
          fill=st.booleans())
    def mmap_big_file(self, i, first, n, shared, prot, foff, fill):
        """The file over whole aligned 2 MiB spans (after a 2 MiB write at its offset if
        fill), each span read once: its PMD-sized folios map by PMDs."""
        if fill:
            self.big_file_write(foff)
        ref, ps = self._proc(i)
        addr, n = BIG + first * PMD, min(n, 4 - first)
        flags = MAP_FIXED | (MAP_SHARED if shared else MAP_PRIVATE)
        expected = ref.mmap(addr, n * PMD, prot, shared, True, False, self.mfile, foff * PMD)
        got = [outcome(p.mmap, addr, n * PMD, prot, flags, file=f, offset=foff * PMD)
               for p, f in zip(ps, self.files)]
        assert got == [expected] * 3, got
        for k in range(n):
            self._same(ref.read(addr + k * PMD + 8, 8), ps, "read", addr + k * PMD + 8, 8)

    def teardown(self):
        # the huge zero page stays allocated once a read fault made it
        self.free0 = [free - (2048 if m.phys.huge_zero_pfn >= 0 else 0)
                      for m, free in zip(self.machines, self.free0)]
        super().teardown()


TestThpFuzz = ThpFuzz.TestCase
TestThpFuzz.settings = SETTINGS
