"""The fault path and the COW page-table breaks over an mm, after mm/memory.c and
arch/x86/mm/fault.c.

break_cow_pte_range and reserve_cow_pte_breaks are the Python side of the COW page-table
series' break_cow_pte (every path that changes PTEs first gives the mm private copies of
the shared tables it touches); handle_mm_fault_range runs the Cython fault kernel over a
range of one VMA; do_user_addr_fault is the MMU's view of a user access (access_error,
then a fault per page).
"""
from __future__ import annotations

from ._core import cow_pte as _cow_pte
from ._core import fault as _fault
from ._core.constants import FAULT_OOM, FAULT_SIGBUS, FAULT_SIGSEGV
from .errors import BusError, SegmentationFault, enomem
from .flags import VmFlags
from .huge_memory import pmd_mappable
from .reserve import top_up
from .vma import VM_ACCESS_FLAGS, VMA, AnonVma

# access_error's tests on every access, as plain ints (IntFlag arithmetic is slow)
_VM_WRITE = int(VmFlags.WRITE)
_VM_ACCESS = int(VM_ACCESS_FLAGS)


def break_cow_pte_range(mm, start: int, end: int) -> None:
    """break_cow_pte over [start, end): give mm private copies of any COW-shared PTE tables
    covering the range. MMError(ENOMEM), with nothing changed, if the copies do not fit in
    free memory."""
    if not _cow_pte.unshare_range(mm.core, start, end):
        raise enomem("no free frame for a private copy of a shared page table")


def reserve_cow_pte_breaks(mm, start: int, end: int, unmap: bool = False) -> None:
    """Before a syscall changes anything: reserve the frames that breaking the COW-shared
    page tables of [start, end) needs, or MMError(ENOMEM) (so the call is all or nothing).
    unmap: the range is being unmapped (a table wholly inside it is dropped, not copied)."""
    need = _cow_pte.break_count(mm.core, start, end, unmap)
    top_up(mm.machine.phys, need, "breaking the shared page tables of the range")


def handle_mm_fault_range(mm, vma: VMA, start: int, end: int, write: bool, buf=None,
                          mode: int = 0) -> None:
    """handle_mm_fault for every page of [start, end) inside vma, and the access itself:
    mode 0 only faults, 1 reads into buf, 2 writes buf. A VMA that gets its first anonymous
    page gets an anon_vma (anon_vma_prepare). Raises MMError(ENOMEM) (VM_FAULT_OOM),
    BusError (VM_FAULT_SIGBUS) or SegmentationFault (a guard marker), at the faulting byte."""
    rc, fail, anon = _fault.access(mm.core, vma, start, end, write, buf, mode,
                                   pmd_mappable(mm.machine, vma))
    fail = max(fail, start)     # the kernel gives the faulting byte (cr2), not its page
    if anon and vma.anon_vma is None:
        vma.anon_vma = AnonVma()
    if rc == FAULT_OOM:
        raise enomem(f"out of emulated memory at {fail:#x}")
    if rc == FAULT_SIGBUS:
        raise BusError(fail)
    if rc == FAULT_SIGSEGV:
        raise SegmentationFault(fail, "SEGV_MAPERR", "guard region")


def do_user_addr_fault(mm, addr: int, length: int, write: bool, buf, mode: int) -> None:
    """The MMU and do_user_addr_fault over [addr, addr+length): find_vma, access_error
    (SIGSEGV with SEGV_MAPERR outside every VMA, SEGV_ACCERR where the VMA refuses the
    access), then handle_mm_fault_range. Left out: stack expansion (VM_GROWSDOWN)."""
    end = addr + length
    pos = addr
    off = 0
    while pos < end:
        vma = mm.find_vma(pos)
        if vma is None or vma.start > pos:
            raise SegmentationFault(pos, "SEGV_MAPERR")
        if write:
            if not (vma.flags & _VM_WRITE):
                raise SegmentationFault(pos, "SEGV_ACCERR")
        elif not (vma.flags & _VM_ACCESS):
            raise SegmentationFault(pos, "SEGV_ACCERR")
        stop = min(end, vma.end)
        part = None if buf is None else buf[off:off + (stop - pos)]
        handle_mm_fault_range(mm, vma, pos, stop, write, part, mode)
        off += stop - pos
        pos = stop
