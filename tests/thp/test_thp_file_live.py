"""File-backed PMD mappings against the live kernel (6.18, ext4, THP in madvise mode): one
buffered write(2) that covers an aligned 2 MiB of a file gives the page cache a PMD-size
folio (ext4 large folios); a read fault in a mapping of it whose VMA covers the aligned
2 MiB with a matching file offset maps it with one huge PMD (do_set_pmd: FilePmdMapped
2048 kB, no PTE table, thp_file_mapped +1); 4 KiB writes give small folios, mapped by
PTEs. Each scenario runs in tests/thp/thp_scenario.c (on O_TMPFILEs in live_thp.FILE_DIR)
and on an emulated machine, and after every step the errno, the changes of VmPTE, RssAnon,
RssFile, the thp_* counters with nr_file_hugepages and nr_file_pmdmapped, and the region's
VMAs (Rss, AnonHugePages, THPeligible, FilePmdMapped) and pagemap must be the kernel's.

What 6.18 does here, as the scenarios show it: a file PMD is never split into PTEs (a
partial munmap, mprotect, MADV_DONTNEED, an unaligned mremap, a truncate inside it, or a
write fault on a read-only one zaps the whole PMD: thp_split_pmd +1, RssFile -2048) and the
next fault maps again; a folio that ends at EOF is not mapped by fault-around when the
fault needs a new PTE table (finish_fault maps it: by PMD, or all of it by PTEs where it
fits the VMA, one page table and EOF, else one page: truncate_1m's folio stays PMD-size,
nr_file_hugepages does not drop, and reaches past the new EOF); PTE fault-around maps a
large folio whole when it fits the VMA and one page table and ends before the file's last
page, else the 16-page window; THPeligible stays 0 (madvise mode, no MADV_HUGEPAGE, yet
the PMD); MADV_COLLAPSE of an ext4 file range open for writing is EINVAL.
"""
import subprocess

import pytest

from live_thp import FILE_DIR, assert_steps_agree, live_unavailable, run_live

pytestmark = pytest.mark.one_design     # compared in classic fork

M = 1 << 20
R, RW = 1, 3
HUGE, NOHUGE, DONTNEED = 14, 15, 4


def _why_not() -> str:
    """Why the file scenarios cannot run live here ('' if they can): the live side's
    reasons, or a FILE_DIR without PMD-size page-cache folios (probed: a 2 MiB file
    written at once, mapped and read must show FilePmdMapped 2048 kB)."""
    why = live_unavailable()
    if why:
        return why
    try:
        last = run_live([("file", 0, 2 * M, "one"), ("fmap", 0, 2 * M, R, 0, 0, 0), ("r", 0)])[-1]
    except (OSError, subprocess.SubprocessError) as e:
        return f"the file probe failed in {FILE_DIR}: {e}"
    if last["vmas"] != [(0, 2 * M, 2048, 0, 0, 2048)]:
        return f"{FILE_DIR} gives no PMD-mapped large folios (probe: {last['vmas']})"
    return ""


_why = _why_not()
live = pytest.mark.skipif(bool(_why), reason=_why or "live kernel available")


def one(size=2 * M, k=0):
    """File k of size bytes, written by one write(2)."""
    return ("file", k, size, "one")


def pages(size=2 * M, k=0):
    """File k of size bytes, written 4 KiB at a time."""
    return ("file", k, size, "pages")


def fmap(off, length, prot=R, shared=0, k=0, file_off=0):
    return ("fmap", off, length, prot, shared, k, file_off)


PMD = [one(), fmap(0, 2 * M), ("r", 0)]

SCENARIOS = {
    # the measurement: one PMD, VmPTE +8 (PUD and PMD tables), no PTE table
    "one_write_pmd": [one(), fmap(0, 2 * M), ("r", 0x3000), ("r", M)],
    "page_writes_ptes": [pages(), fmap(0, 2 * M), ("r", 0x3000), ("r", M)],
    "eight_mib_whole": [one(8 * M), fmap(0, 8 * M), ("r", 0), ("r", 2 * M + 0x5000), ("r", 6 * M),
                        ("r", 4 * M)],
    "eight_mib_at_offset": [one(8 * M), fmap(0, 4 * M, file_off=2 * M), ("r", 0), ("r", 2 * M + 0x1000),
                            fmap(64 * M, 2 * M, file_off=6 * M), ("r", 64 * M)],
    # a second 2 MiB write past EOF makes a second PMD-size folio
    "append": [one(), ("fwrite", 0, 2 * M, 2 * M), fmap(0, 4 * M), ("r", 2 * M), ("r", 0)],
    # only an aligned 2 MiB a write covers whole and finds uncached becomes one folio (the
    # rest gets smaller folios here, read only where a 16-page window sees the same pages)
    "write_unaligned_start": [one(0), ("fwrite", 0, 0x1000, 4 * M - 0x1000), fmap(0, 4 * M),
                              ("r", 2 * M), ("r", 0x5000)],
    "write_over_a_cached_page": [one(0), ("fwrite", 0, 0x5000, 0x1000), ("fwrite", 0, 0, 4 * M),
                                 fmap(0, 4 * M), ("r", 2 * M), ("r", 0x8000)],
    "rewrite_of_small_folios": [pages(), ("fwrite", 0, 0, 4 * M), fmap(0, 4 * M), ("r", 2 * M),
                                ("r", 0x8000), ("r", M)],
    # file offset 4096 in an aligned VMA; a VMA one page off; a VMA of half a block
    "file_offset_misaligned": [one(4 * M), fmap(0, 2 * M, file_off=0x1000), ("r", 0), ("r", M)],
    "vma_misaligned": [one(4 * M), fmap(0x1000, 4 * M - 0x1000), ("r", 0x1000), ("r", 2 * M),
                       fmap(64 * M + M, M, file_off=M), ("r", 64 * M + M)],
    # no PMD: the folios mapped whole by PTEs (the first by fault-around, the one that ends
    # at EOF by finish_fault); MADV_HUGEPAGE afterwards changes nothing mapped
    "nohugepage": [one(4 * M), fmap(0, 4 * M), ("madv", 0, 4 * M, NOHUGE), ("r", 0x5000),
                   ("r", 2 * M + 0x5000), ("madv", 0, 4 * M, HUGE), ("r", M)],
    # a write to a private PMD: the PMD zapped (not split to PTEs), one page copied; a read
    # then maps the rest of the folio (all but the copied page) or the window (EOF folio)
    "private_rw_read_then_write": [one(4 * M), fmap(0, 4 * M, RW), ("r", 0), ("r", 2 * M),
                                   ("w", 0x1000), ("w", 2 * M + 0x1000), ("r", M), ("r", 3 * M),
                                   ("w", 3 * M)],
    "private_rw_write_first": [one(), fmap(0, 2 * M, RW), ("w", 0x1000), ("r", M)],
    # do_shared_fault maps the PMD writable; a write to a read-only shared PMD zaps it and
    # maps it again (thp_split_pmd and thp_file_mapped +1)
    "shared_rw_write_first": [one(), fmap(0, 2 * M, RW, 1), ("w", 0x1000), ("w", M),
                              ("fwrite", 0, 0x1000, 0x1000)],
    "shared_rw_read_then_write": [one(), fmap(0, 2 * M, RW, 1), ("r", 0), ("w", 0x1000), ("r", M),
                                  ("w", M)],
    # fork does not copy file PMDs (the child faults them); the parent's stay
    "fork_read_only": PMD + [("fork",), ("r", 0x1000), ("reap",)],
    "fork_reap_then_write": [one(), fmap(0, 2 * M, RW), ("r", 0), ("fork",), ("reap",), ("w", 0x1000)],
    "fork_shared": [one(), fmap(0, 2 * M, RW, 1), ("w", 0), ("fork",), ("w", 0x1000), ("reap",),
                    ("w", 0x2000)],
    "partial_munmap": [one(4 * M), fmap(0, 4 * M), ("r", 0), ("r", 2 * M), ("unmap", 0x1000, 0x1000),
                       ("unmap", 2 * M + 0x1000, 0x1000), ("r", 0x5000), ("r", 2 * M + 0x5000),
                       ("r", M), ("r", 3 * M)],
    "partial_mprotect": [one(), fmap(0, 2 * M, RW), ("r", 0), ("prot", 0x1000, 0x1000, R), ("r", 0x5000),
                         ("prot", 0, 2 * M, RW), ("r", M)],
    "dontneed": PMD + [("madv", 0x1000, 0x1000, DONTNEED), ("r", 0x1000), ("madv", 0, 2 * M, DONTNEED),
                       ("r", M)],
    "whole_munmap": [one(4 * M), fmap(0, 4 * M), ("r", 0), ("r", 2 * M), ("unmap", 0, 2 * M),
                     ("unmap", 2 * M, 2 * M)],
    "mremap_aligned": PMD + [("remap", 0, 2 * M, 256 * M), ("r", 256 * M + 0x1000)],
    "mremap_unaligned": PMD + [("remap", 0, 2 * M, 256 * M + 0x1000), ("r", 256 * M + 0x1000),
                               ("r", 256 * M + M)],
    # truncate inside a mapped folio: the PMD zapped; the reads inside EOF map one page each
    "truncate_1m": PMD + [("trunc", 0, M), ("r", 0x1000), ("r", 0x80000)],
    "truncate_0": PMD + [("trunc", 0, 0), ("fwrite", 0, 0, 2 * M), ("r", 0)],
    # MADV_COLLAPSE of small folios, of a PMD-mapped folio, of a PTE-mapped PMD-size folio
    "collapse": [pages(), fmap(0, 2 * M), ("r", 0), ("collapse", 0, 2 * M), ("r", M),
                 one(k=1), fmap(64 * M, 2 * M, k=1), ("r", 64 * M), ("collapse", 64 * M, 2 * M),
                 one(k=2), fmap(128 * M, 2 * M, k=2), ("madv", 128 * M, 2 * M, NOHUGE), ("r", 128 * M),
                 ("madv", 128 * M, 2 * M, HUGE), ("collapse", 128 * M, 2 * M)],
}


@live
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_file_scenario_matches_the_kernel(name):
    assert_steps_agree(SCENARIOS[name])
