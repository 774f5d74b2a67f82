"""mprotect(2) over an mm, after mm/mprotect.c (do_mprotect_pkey, mprotect_fixup).

Not atomic over holes, like Linux: the VMAs before a hole keep their new protection and
the call fails with ENOMEM. The PTE work is the Cython kernel ``_core.zap.protect``
(change_protection). Left out: protection keys, mseal.
"""
from __future__ import annotations

import errno

from ._core import zap as _zap
from .args import page_align, ulong, uint
from .errors import MMError, einval, enomem
from .flags import Prot, VmFlags
from .memory import break_cow_pte_range, reserve_cow_pte_breaks
from .mmap import calc_vm_prot_bits, mm_populate
from .vma import PAGE_SIZE, VM_ACCESS_FLAGS, VMA

_PROT_VALID = Prot.READ | Prot.WRITE | Prot.EXEC | Prot.SEM


def do_mprotect_pkey(mm, addr, length, prot) -> int:
    """do_mprotect_pkey without a key: returns 0 or raises MMError (EINVAL, ENOMEM, EACCES)."""
    addr, length = ulong(addr), ulong(length)
    prot = uint(prot)
    grows = prot & (Prot.GROWSDOWN | Prot.GROWSUP)
    prot &= ~(Prot.GROWSDOWN | Prot.GROWSUP)
    if grows == (Prot.GROWSDOWN | Prot.GROWSUP):
        raise einval("PROT_GROWSDOWN and PROT_GROWSUP")
    if addr & (PAGE_SIZE - 1):
        raise einval("address not page aligned")
    if length == 0:
        return 0
    length = page_align(length)
    end = addr + length
    if end <= addr or end > (1 << 64):
        raise enomem("range wraps")
    if prot & ~_PROT_VALID:
        raise einval("unknown prot bits")
    vma = mm.find_vma(addr)
    if vma is None or vma.start >= end:
        raise enomem("no mapping in range")
    if grows & Prot.GROWSDOWN:
        addr = vma.start
        if not (vma.flags & VmFlags.GROWSDOWN):
            raise einval("PROT_GROWSDOWN on a mapping that does not grow down")
    elif vma.start > addr:
        raise enomem("no mapping at address")
    if grows & Prot.GROWSUP:
        raise einval("PROT_GROWSUP: no VM_GROWSUP mappings on x86-64")
    reserve_cow_pte_breaks(mm, addr, end)
    nstart = addr
    while nstart < end:
        vma = mm.find_vma(nstart)
        if vma is None or vma.start >= end:
            break
        if vma.start > nstart:
            raise enomem("hole in range (earlier mappings were changed)")
        newflags = calc_vm_prot_bits(prot) | (vma.flags & ~VM_ACCESS_FLAGS)
        if (newflags & ~(newflags >> 4)) & VM_ACCESS_FLAGS:
            raise MMError(errno.EACCES, "protection not allowed by the mapping")
        tmp = min(vma.end, end)
        mprotect_fixup(mm, vma, nstart, tmp, newflags)
        nstart = tmp
    if nstart < end:
        raise enomem("range extends past the last mapping")
    return 0


def mprotect_fixup(mm, vma: VMA, start: int, end: int, newflags: int) -> None:
    """mprotect_fixup: commit accounting flags, split/merge, recount, change_protection;
    a locked private mapping that becomes writable is populated (COW-broken) at once."""
    oldflags = vma.flags
    if newflags == oldflags:
        return
    if newflags & VmFlags.WRITE:
        if not (oldflags & (VmFlags.ACCOUNT | VmFlags.WRITE | VmFlags.SHARED | VmFlags.NORESERVE)):
            newflags |= VmFlags.ACCOUNT
    elif (oldflags & VmFlags.ACCOUNT) and vma.is_anonymous and vma.anon_vma is None:
        newflags &= ~VmFlags.ACCOUNT
    vma = mm.vma_modify(vma, start, end)
    npages = vma.npages
    vma.set_flags(newflags)
    mm.vm_stat_account(oldflags, -npages)
    mm.vm_stat_account(newflags, npages)
    if newflags & VmFlags.SHARED:
        try_writable = False      # shmem: no write-notify, RW comes with vm_page_prot
    else:
        try_writable = bool(newflags & VmFlags.WRITE)
    break_cow_pte_range(mm, vma.start, vma.end)
    _zap.protect(mm.core, vma.start, vma.end, vma.page_prot, try_writable, bool(newflags & VmFlags.SHARED))
    start, end = vma.start, vma.end
    mm.try_merge_around(vma)
    if ((newflags & VmFlags.LOCKED) and (newflags & VmFlags.WRITE) and not (oldflags & VmFlags.WRITE)
            and not (newflags & VmFlags.SHARED)):
        mm_populate(mm, start, end, ignore_errors=True)
