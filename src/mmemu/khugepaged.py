"""MADV_COLLAPSE (mm/khugepaged.c: madvise_collapse, madvise_collapse_errno): collapse the
PTE-mapped 2 MiB blocks of a private anonymous range into huge PMDs, whatever the THP mode.

The mechanism (scan, allocation, copy) is mmemu._core.khugepaged's. A COW-shared PTE table
is broken before its block is scanned, as the COW page-table series (v3-v5: "mm/khugepaged:
Break COW PTE before scanning pte") does in hpage_collapse_scan_pmd; mmemu does it under
every profile (v1/v2 had no hook: collapsing a table another mm still maps would corrupt it).
Left out: khugepaged (the background scanner) and its max_ptes_* limits, file and shmem
collapse (EINVAL here; 6.18 collapses shmem unless shmem_enabled is deny, and read-only
executable file mappings with CONFIG_READ_ONLY_THP_FOR_FS), PR_SET_THP_DISABLE; the
swap-in goes through the fault path, so it counts pgfault where 6.18's direct do_swap_page
does not.
"""
from __future__ import annotations

import errno

from ._core import khugepaged as _k
from ._core.khugepaged import scan_result as S
from .errors import BusError, MMError, SegmentationFault, einval
from .flags import VmFlags
from .memory import break_cow_pte_range, handle_mm_fault_range
from .vma import PAGE_SIZE, PMD_SIZE

# thp_vma_allowable_order(TVA_FORCED_COLLAPSE): flags no collapse maps
_NO_COLLAPSE = VmFlags.SHARED | VmFlags.IO | VmFlags.PFNMAP | VmFlags.MIXEDMAP \
    | VmFlags.HUGETLB | VmFlags.NOHUGEPAGE
# results after which madvise_collapse goes on with the next block
_CONTINUE = frozenset({S.SCAN_PMD_NULL, S.SCAN_PTE_NON_PRESENT, S.SCAN_PAGE_NULL,
                       S.SCAN_PAGE_COUNT})


def madvise_collapse_errno(result: int) -> int:
    """madvise_collapse_errno: ENOMEM for a failed allocation, EAGAIN for references
    that may go away, EINVAL for anything intrinsic to the range."""
    if result == S.SCAN_ALLOC_HUGE_PAGE_FAIL:
        return errno.ENOMEM
    if result == S.SCAN_PAGE_COUNT:
        return errno.EAGAIN
    return errno.EINVAL


def _collapse_allowed(vma) -> bool:
    """thp_vma_allowable_order(vma, TVA_FORCED_COLLAPSE, PMD_ORDER) for MADV_COLLAPSE: any
    THP mode; a private anonymous VMA with an anon_vma, not MADV_NOHUGEPAGE, in which an
    aligned 2 MiB fits (thp_vma_suitable_order at its end)."""
    if vma.backing is not None or vma.flags & _NO_COLLAPSE or vma.anon_vma is None:
        return False
    return vma.end >= PMD_SIZE and (vma.end - PMD_SIZE) & ~(PMD_SIZE - 1) >= vma.start


def _swapin(mm, vma, addrs) -> bool:
    """__collapse_huge_page_swapin: do_swap_page (a read fault) at each address; False if
    one fails (a guard marker, no memory)."""
    for a in addrs:
        try:
            handle_mm_fault_range(mm, vma, a, a + PAGE_SIZE, False)
        except (MMError, BusError, SegmentationFault):
            return False
    return True


def collapse_block(mm, vma, addr: int) -> int:
    """hpage_collapse_scan_pmd + collapse_huge_page for the 2 MiB block at addr: the scan
    result."""
    break_cow_pte_range(mm, addr, addr + PMD_SIZE)
    result, unmapped = _k.hpage_collapse_scan_pmd(mm.core, addr)
    if result != S.SCAN_SUCCEED:
        return result
    head = _k.alloc_charge_folio(mm.core)
    if head < 0:
        return S.SCAN_ALLOC_HUGE_PAGE_FAIL
    if unmapped and not _swapin(mm, vma, unmapped):
        _k.folio_put(mm.core, head)
        return S.SCAN_FAIL
    return _k.collapse_huge_page(mm.core, vma, addr, head)


def madvise_collapse(mm, vma, start: int, end: int) -> None:
    """madvise_collapse for [start, end) inside one VMA: every whole aligned 2 MiB block
    collapsed or already huge, else MMError with madvise_collapse_errno of the last
    failure (a range holding no whole block but crossing no 2 MiB boundary is done)."""
    if not _collapse_allowed(vma):
        raise einval("MADV_COLLAPSE: the mapping cannot hold a transparent huge page")
    hstart = (start + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    hend = end & ~(PMD_SIZE - 1)
    thps, last = 0, S.SCAN_FAIL
    for addr in range(hstart, hend, PMD_SIZE):
        result = collapse_block(mm, vma, addr)
        if result in (S.SCAN_SUCCEED, S.SCAN_PMD_MAPPED):
            thps += 1
            continue
        last = result
        if result not in _CONTINUE:
            break
    if hend < hstart or thps != (hend - hstart) // PMD_SIZE:
        raise MMError(madvise_collapse_errno(last), f"MADV_COLLAPSE failed (scan result {last})")
