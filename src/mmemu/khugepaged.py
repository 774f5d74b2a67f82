"""MADV_COLLAPSE (mm/khugepaged.c: madvise_collapse, madvise_collapse_errno): collapse the
2 MiB blocks of a private anonymous range into huge PMDs, whatever the THP mode, and of a
shared shmem range (MAP_SHARED|MAP_ANONYMOUS, a MAP_SHARED tmpfs file) into PMD-sized shmem
folios, whatever shmem_enabled says (6.18 refuses only "deny").

The mechanism (scan, allocation, copy) is mmemu._core.khugepaged's. A COW-shared PTE table
is broken before its block is scanned, as the COW page-table series (v3-v5: "mm/khugepaged:
Break COW PTE before scanning pte") does in hpage_collapse_scan_pmd; mmemu does it under
every profile (v1/v2 had no hook: collapsing a table another mm still maps would corrupt it).
A shmem block goes as 6.18's hpage_collapse_scan_file / collapse_file /
retract_page_tables / collapse_pte_mapped_thp do it (verified on the live kernel,
tests/thp/test_thp_shmem_live.py): the folio is allocated (thp_collapse_alloc) even for a
block with no page cached (then SCAN_TRUNCATED, EINVAL); every page is unmapped from every
mm (try_to_unmap), copied, and leaves the cache, holes become zeroed pages of the folio
(Shmem grows by them); each mm's empty PTE table for the block is freed (VmPTE), and the
caller's range is mapped by one PMD (thp_file_mapped; the others fault theirs in).
Left out: khugepaged (the background scanner) and its max_ptes_* limits, private mappings
of tmpfs files and read-only executable disk-file mappings (EINVAL here; 6.18 collapses
both, the latter with CONFIG_READ_ONLY_THP_FOR_FS), a shmem block reaching past EOF
(EINVAL here), shmem pages on swap (mmemu does not swap shmem), the non-uniform split of
a shmem folio a truncate or hole cuts (mmemu.file: single pages), PR_SET_THP_DISABLE; the
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
from ._core.constants import HPAGE_PMD_NR
from .file import unmap_mapping_range
from .vma import PAGE_SHIFT, PAGE_SIZE, PMD_SIZE

# thp_vma_allowable_order(TVA_FORCED_COLLAPSE): flags no collapse maps
_NO_COLLAPSE = VmFlags.SHARED | VmFlags.IO | VmFlags.PFNMAP | VmFlags.MIXEDMAP \
    | VmFlags.HUGETLB | VmFlags.NOHUGEPAGE
_NO_COLLAPSE_SHMEM = _NO_COLLAPSE & ~VmFlags.SHARED
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


def _is_shmem(vma) -> bool:
    """A shared mapping of a shmem object (shmem_file, VM_MAYSHARE)."""
    return vma.backing is not None and vma.backing.swapbacked and bool(vma.flags & VmFlags.MAYSHARE)


def _collapse_allowed(vma) -> bool:
    """thp_vma_allowable_order(vma, TVA_FORCED_COLLAPSE, PMD_ORDER) for MADV_COLLAPSE: any
    THP mode; a private anonymous VMA with an anon_vma or a shared shmem one whose file
    offset is aligned with its address, not MADV_NOHUGEPAGE, in which an aligned 2 MiB
    fits (thp_vma_suitable_order at its end)."""
    if vma.backing is None:
        if vma.flags & _NO_COLLAPSE or vma.anon_vma is None:
            return False
    elif not _is_shmem(vma) or vma.flags & _NO_COLLAPSE_SHMEM \
            or ((vma.start >> PAGE_SHIFT) - vma.pgoff) % HPAGE_PMD_NR:
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


def retract_page_tables(machine, obj, idx: int) -> None:
    """retract_page_tables: in every mm, a VMA of obj without an anon_vma that maps the
    512 indexes from idx whole at an aligned address loses its (now empty) PTE table
    there."""
    for proc in machine.processes:
        for v in proc.mm.vmas:
            if v.backing is not obj or v.anon_vma is not None or not v.pgoff <= idx < v.pgoff + v.npages:
                continue
            a = v.start + ((idx - v.pgoff) << PAGE_SHIFT)
            if not a & (PMD_SIZE - 1) and a + PMD_SIZE <= v.end:
                _k.retract_page_table(proc.mm.core, a)


def collapse_file_block(mm, vma, addr: int) -> int:
    """hpage_collapse_scan_file + collapse_file + retract_page_tables, then
    collapse_pte_mapped_thp for the caller, for the shmem block at addr: the scan result."""
    obj, machine = vma.backing, mm.machine
    idx = vma.pgoff + ((addr - vma.start) >> PAGE_SHIFT)
    if idx + HPAGE_PMD_NR > obj.npages:
        return S.SCAN_FAIL
    result = _k.hpage_collapse_scan_file(machine.phys, obj.cache, idx)
    if result == S.SCAN_SUCCEED:
        head = _k.alloc_charge_folio(mm.core)
        if head < 0:
            return S.SCAN_ALLOC_HUGE_PAGE_FAIL
        try:    # try_to_unmap of every page, in every mm
            unmap_mapping_range(machine, obj, idx, idx + HPAGE_PMD_NR, even_cows=False)
        except MMError:
            _k.folio_put(mm.core, head)
            raise
        result = _k.collapse_file(machine.phys, obj.cache, idx, head)
        if result != S.SCAN_SUCCEED:
            return result
        retract_page_tables(machine, obj, idx)
    elif result != S.SCAN_PTE_MAPPED_HUGEPAGE:
        return result
    break_cow_pte_range(mm, addr, addr + PMD_SIZE)
    return _k.collapse_pte_mapped_thp(mm.core, vma, addr)


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
        result = (collapse_file_block if vma.backing is not None else collapse_block)(mm, vma, addr)
        if result in (S.SCAN_SUCCEED, S.SCAN_PMD_MAPPED):
            thps += 1
            continue
        last = result
        if result not in _CONTINUE:
            break
    if hend < hstart or thps != (hend - hstart) // PMD_SIZE:
        raise MMError(madvise_collapse_errno(last), f"MADV_COLLAPSE failed (scan result {last})")
