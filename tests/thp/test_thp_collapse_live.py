"""MADV_COLLAPSE against the live kernel (6.18, THP in madvise mode here: MADV_COLLAPSE
works in any mode): each scenario runs in tests/thp/thp_scenario.c and on an emulated
machine, and after every step the errno, the changes of VmPTE, RssAnon and the thp_*
counters (thp_collapse_alloc among them), and the region's VMAs (Rss, AnonHugePages,
THPeligible) and pagemap must be the kernel's. The THP parts of
tools/testing/selftests/mm/khugepaged.c that apply to MADV_COLLAPSE are here as
scenarios: collapse_full, collapse_empty, collapse_single_pte_entry (and max_ptes_none,
which MADV_COLLAPSE ignores), collapse_single_pte_entry_compound, collapse_fork and
collapse_max_ptes_shared (a COW-shared range, no limit for MADV_COLLAPSE),
collapse_fork_compound and collapse_full_of_compound (a PTE-mapped THP),
madvise_collapse_existing_thps, and the guard-region and read-only cases; swap-ins
(collapse_swapin_single_pte, max_ptes_swap) need swap, which this machine lacks:
tests/thp/test_thp_collapse.py has them emulated."""
import pytest

from live_thp import agree, assert_steps_agree, live_unavailable

pytestmark = pytest.mark.one_design
_why = live_unavailable()
live = pytest.mark.skipif(bool(_why), reason=_why or "live kernel available")

M = 1 << 20
HUGE, NOHUGE, DONTNEED, GUARD_INSTALL = 14, 15, 4, 102

SCENARIOS = {
    # collapse_full / collapse_single_pte_entry: PTE-mapped pages in an un-advised VMA (THP
    # madvise mode: the faults gave 4 KiB pages); the table becomes the deposited one
    "full": [("map", 0, 8 * M, 0), ("w", 0), ("w", 0x5000), ("w", 2 * M + 0x1000),
             ("collapse", 0, 4 * M)],
    # collapse_empty and the ranges: no anon_vma yet, no whole block, no block crossing,
    # a none PMD entry (fatal: the next block is not scanned), a block then a none one
    "errors": [("map", 0, 8 * M, 0), ("collapse", 0, 2 * M), ("w", 0),
               ("collapse", 0x1000, 0x1000), ("collapse", 0x1000, 2 * M - 0x1000),
               ("collapse", 2 * M, 2 * M), ("collapse", 0, 4 * M)],
    "none_block_first": [("map", 0, 8 * M, 0), ("w", 4 * M), ("collapse", 2 * M, 4 * M),
                         ("collapse", 4 * M, 2 * M)],
    # no PMD table at all for the first block (its PUD entry is none): SCAN_PMD_NULL goes on
    # to the next block, which collapses (the VMA crosses a 1 GiB line: outside the region
    # both sides list, RssAnon and the counters say it)
    "pmd_table_missing_first": [("map", 1024 * M - 2 * M, 4 * M, 0), ("w", 1024 * M),
                                ("collapse", 1024 * M - 2 * M, 4 * M)],
    "nohugepage": [("map", 0, 4 * M, NOHUGE), ("w", 0), ("collapse", 0, 2 * M)],
    # madvise_collapse_existing_thps: a huge PMD (and the huge zero PMD) counts as done
    "existing": [("map", 0, 4 * M, 0), ("w", 0), ("w", 2 * M), ("collapse", 2 * M, 2 * M),
                 ("collapse", 0, 4 * M), ("map", 64 * M, 4 * M, HUGE), ("r", 64 * M),
                 ("collapse", 64 * M, 2 * M)],
    # collapse_fork: the pages are COW-shared and read-only in the parent; 6.18 needs no
    # writable PTE for MADV_COLLAPSE
    "after_fork": [("map", 0, 4 * M, 0), ("w", 0), ("w", 0x1000), ("fork",),
                   ("collapse", 0, 2 * M), ("w", 0x2000), ("collapse", 0, 2 * M), ("reap",)],
    # collapse_compound_extreme / collapse_fork_compound: a PTE-mapped THP is copied into a
    # new one; the old one goes without a deferred split (one rmap batch), or stays PMD-mapped
    # in the child
    "pte_mapped_thp": [("map", 0, 4 * M, HUGE), ("w", 0), ("prot", 0x1000, 0x1000, 1),
                       ("prot", 0x1000, 0x1000, 3), ("collapse", 0, 2 * M)],
    "pte_mapped_thp_fork": [("map", 0, 4 * M, HUGE), ("w", 0), ("fork",),
                            ("prot", 0x1000, 0x1000, 1), ("prot", 0x1000, 0x1000, 3),
                            ("collapse", 0, 2 * M), ("reap",)],
    "mremapped_halves": [("map", 0, 4 * M, HUGE), ("w", 0), ("remap", M, M, 256 * M),
                         ("remap", 256 * M, M, M), ("collapse", 0, 2 * M)],
    # only zero-page PTEs: a read fault makes no anon_vma, EINVAL before any allocation
    "zero_pages": [("map", 0, 4 * M, 0), ("r", 0), ("collapse", 0, 2 * M), ("w", 0x1000),
                   ("collapse", 0, 2 * M)],
    # an empty table (DONTNEED) in a VMA with an anon_vma: a zero-filled THP
    "empty_table": [("map", 0, 4 * M, 0), ("w", 0), ("madv", 0, 0x1000, DONTNEED),
                    ("collapse", 0, 2 * M)],
    # collapse_single_pte_entry_compound: one PTE of a split THP left, the rest zapped
    "single_pte_compound": [("map", 0, 4 * M, HUGE), ("w", 0), ("madv", 0x1000, 2 * M - 0x1000, DONTNEED),
                            ("collapse", 0, 2 * M)],
    # the collapsed THP and its deposited table afterwards: fork, COW, partial munmap,
    # mremap, exit
    "after_collapse": [("map", 0, 8 * M, 0), ("w", 0), ("w", 2 * M + 0x3000), ("collapse", 0, 4 * M),
                       ("fork",), ("w", 0x1000), ("remap", 2 * M, 2 * M, 256 * M),
                       ("unmap", 256 * M + 0x1000, 0x1000), ("reap",), ("unmap", 256 * M, 2 * M)],
    # a guard marker: allocated, then the swap-in fails (SCAN_FAIL, EINVAL)
    "guard_marker": [("map", 0, 4 * M, 0), ("w", 0), ("madv", 0x1000, 0x1000, GUARD_INSTALL),
                     ("collapse", 0, 2 * M)],
    # a read-only VMA: collapsed into a read-only huge PMD
    "read_only": [("map", 0, 4 * M, 0), ("w", 0), ("prot", 0, 2 * M, 1), ("collapse", 0, 2 * M)],
    # PROT_NONE: collapsed into a PROT_NONE huge PMD, made accessible again
    "prot_none": [("map", 0, 4 * M, 0), ("w", 0), ("prot", 0, 2 * M, 0), ("collapse", 0, 2 * M),
                  ("prot", 0, 2 * M, 3), ("w", 0x5000)],
    # two VMAs around a hole: both collapsed, then ENOMEM for the hole
    "hole": [("map", 0, 2 * M, 0), ("map", 4 * M, 2 * M, 0), ("w", 0), ("w", 4 * M),
             ("collapse", 0, 6 * M)],
}


@live
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_collapse_scenario_matches_the_kernel(name):
    assert_steps_agree(SCENARIOS[name])


@live
def test_full_collapse_numbers():
    """The kernel here and mmemu: two blocks collapsed, VmPTE unchanged (the tables are
    deposited), RssAnon up to 4096 kB, thp_collapse_alloc +2."""
    live_steps, emu_steps = agree(SCENARIOS["full"])
    for side in (live_steps, emu_steps):
        last = side[-1]
        assert (last["errno"], last["VmPTE"], last["RssAnon"], last["thp_collapse_alloc"]) \
            == (0, 0, 4096 - 12, 2)
        assert last["vmas"] == [(0, 8 * M, 4096, 4096, 0)]
