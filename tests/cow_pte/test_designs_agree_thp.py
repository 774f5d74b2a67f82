"""The lockstep design-vs-design fuzzer (test_designs_agree.py: classic fork, COW page
tables with deferred and with eager accounting) with huge-page-eligible regions in THP
``madvise`` mode: 8 MiB of 2 MiB-aligned private memory advised MADV_HUGEPAGE, mapped again,
faulted (do_huge_pmd_anonymous_page, the huge zero page), forked (every design copies a huge
PMD as copy_huge_pmd does: the series shares PTE tables only), written after a fork
(do_huge_pmd_wp_page), partly unmapped, protected, advised and moved (__split_huge_pmd,
move_huge_pmd). Every result, errno, signal and byte, the layout and the AnonHugePages of
every VMA must be the same in the three designs, and each machine's checker passes after
every step."""
import hypothesis.strategies as st
import pytest
from hypothesis.stateful import invariant, rule

from conftest import fuzz_settings
from mmemu import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, Madv
from test_designs_agree import PG, DesignsAgree, outcome

pytestmark = pytest.mark.one_design

HUGE = 0x7E0000000000           # 2 MiB-aligned, away from the base window
PMD = 2 << 20
SPANS = 4
OPS = {"munmap": None, "mprotect": None, "dontneed": Madv.DONTNEED, "free": Madv.FREE,
       "hugepage": Madv.HUGEPAGE, "nohugepage": Madv.NOHUGEPAGE, "dontfork": Madv.DONTFORK,
       "wipeonfork": Madv.WIPEONFORK, "populate_write": Madv.POPULATE_WRITE}
# the pages every step reads in each design: PMD boundaries and their neighbours, and a
# sample inside each span
SAMPLE = sorted({k * 512 + d for k in range(SPANS) for d in (0, 1, 9, 255, 510, 511)})


class ThpDesignsAgree(DesignsAgree):
    def __init__(self):
        super().__init__()
        assert all(m.thp == "madvise" for m in self.machines)
        self.mmap_huge(0, 0, SPANS, True)
        self.touch_huge(0, [5, 600], True)

    hpage = st.integers(0, SPANS * 512 - 1)

    @rule(i=DesignsAgree.pick, first=st.integers(0, SPANS - 1), n=st.integers(1, SPANS),
          advise=st.booleans())
    def mmap_huge(self, i, first, n, advise):
        n = min(n, SPANS - first)
        self._all(i, "mmap", HUGE + first * PMD, n * PMD, 3,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
        if advise:
            self._all(i, "madvise", HUGE + first * PMD, n * PMD, Madv.HUGEPAGE)

    @rule(i=DesignsAgree.pick, pages=st.lists(hpage, min_size=1, max_size=6), write=st.booleans())
    def touch_huge(self, i, pages, write):
        for k in pages:
            addr = HUGE + k * PG + (k % 7) * 8
            if write:
                self._all(i, "write", addr, k.to_bytes(4, "little"))
            else:
                self._all(i, "read", addr, 8)

    @rule(i=DesignsAgree.pick, first=hpage,
          n=st.sampled_from([1, 16, 511, 512, 1024]) | st.integers(1, 40),
          op=st.sampled_from(sorted(OPS)))
    def range_huge(self, i, first, n, op):
        addr, length = HUGE + first * PG, n * PG
        if op == "munmap":
            self._all(i, "munmap", addr, length)
        elif op == "mprotect":
            self._all(i, "mprotect", addr, length, 1)
        else:
            self._all(i, "madvise", addr, length, OPS[op])

    @rule(i=DesignsAgree.pick, src=st.integers(0, SPANS - 1), soff=st.sampled_from([0, 0, 1, 256]),
          n=st.integers(1, 2), dst=st.integers(0, SPANS - 1), doff=st.sampled_from([0, 0, 1, 256]),
          how=st.sampled_from(["in-place", "maymove", "fixed", "dontunmap"]))
    def mremap_huge(self, i, src, soff, n, dst, doff, how):
        addr, old = HUGE + src * PMD + soff * PG, n * PMD
        to = HUGE + dst * PMD + doff * PG
        if how == "in-place":
            self._all(i, "mremap", addr, old, old + PMD)
        elif how == "maymove":
            self._all(i, "mremap", addr, old, old + PMD, 1)
        elif how == "fixed":
            self._all(i, "mremap", addr, old, old, 3, to)
        else:
            self._all(i, "mremap", addr, old, old, 7, to)

    @invariant()
    def same_huge_view(self):
        for ps in self.procs:
            reads = [[outcome(p.read, HUGE + k * PG, 16) for k in SAMPLE] for p in ps]
            assert reads[0] == reads[1] == reads[2]
            huge = [[(v["start"], v["AnonHugePages"], v["THPeligible"]) for v in p.smaps()
                     if HUGE <= v["start"] < HUGE + SPANS * PMD] for p in ps]
            assert huge[0] == huge[1] == huge[2], huge


TestThpDesignsAgree = ThpDesignsAgree.TestCase
SETTINGS = fuzz_settings(4, "MMEMU_FUZZ_EXAMPLES", stateful_step_count=30)
TestThpDesignsAgree.settings = SETTINGS
