"""mremap(2) policy, after mm/mremap.c (do_mremap and the vma_remap_struct helpers).

Argument checks follow check_mremap_params and check_prep_vma with Linux's errnos, in
Linux's order: errors found before anything changes leave the machine untouched; a
MREMAP_FIXED destination is unmapped then (mremap_to), as in Linux, so running out of
memory after that leaves the destination unmapped. The page-table work is the Cython kernel
``_core.mremap`` (move_page_tables); the frames a move needs are counted first, so a
move that cannot get them fails with ENOMEM before the source changes.

Left out: rlimits (may_expand_vm, mlock_future_ok), commit accounting (VM_ACCOUNT
charges), mseal, hugetlb, userfaultfd.
"""
from __future__ import annotations

import errno

from ._core import cow_pte as _cow_pte
from ._core import mremap as _mremap
from .args import U64, page_align, ulong
from .errors import MMError, einval, enomem
from .flags import MremapFlags, VmFlags
from .memory import break_cow_pte_range
from .mmap import do_munmap, do_vmi_munmap, mm_populate
from .reserve import top_up
from .vma import PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, TASK_SIZE

_KNOWN = int(MremapFlags.MAYMOVE | MremapFlags.FIXED | MremapFlags.DONTUNMAP)


def efault(msg: str) -> MMError:
    return MMError(errno.EFAULT, msg)


def do_mremap(mm, addr, old_len, new_len, flags=0, new_addr=0) -> int:
    """do_mremap: returns the (possibly new) address of the mapping."""
    addr, old_len, new_len, new_addr = ulong(addr), ulong(old_len), ulong(new_len), ulong(new_addr)
    flags = ulong(flags)
    implies_new = bool(flags & (MremapFlags.FIXED | MremapFlags.DONTUNMAP))

    # check_mremap_params
    if flags & ~_KNOWN:
        raise einval("unknown MREMAP_* flags")
    if addr & (PAGE_SIZE - 1):
        raise einval("old address not page aligned")
    if not (page_align(new_len) & U64):
        raise einval("new length is 0")
    if implies_new:
        if new_addr & (PAGE_SIZE - 1):
            raise einval("new address not page aligned")
        if not flags & MremapFlags.MAYMOVE:
            raise einval("MREMAP_FIXED/MREMAP_DONTUNMAP without MREMAP_MAYMOVE")
        if flags & MremapFlags.DONTUNMAP and old_len != new_len:
            raise einval("MREMAP_DONTUNMAP cannot resize")
        # the range checks come before the VMA lookup (found by mmemu.oracle on 6.18:
        # an overlapping move of an unmapped range is EINVAL, not EFAULT)
        a_old, a_new = page_align(old_len) & U64, page_align(new_len) & U64
        if a_new > TASK_SIZE or new_addr > TASK_SIZE - a_new:
            raise einval("new range beyond TASK_SIZE")
        if ((addr + a_old) & U64) > new_addr and ((new_addr + a_new) & U64) > addr:
            raise einval("old and new ranges overlap")
        if mm.map_count + 2 >= mm.machine.max_map_count - 3:
            raise enomem("a move could exceed max_map_count")
    old_len = page_align(old_len) & U64      # PAGE_ALIGN wraps on an unsigned long
    new_len = page_align(new_len) & U64
    if mm.vma_at(addr) is None:
        raise efault("no mapping at the old address")
    r = _Remap(mm, addr, old_len, new_len, flags, new_addr)
    return r.mremap_to() if implies_new else r.mremap_at()


class _Remap:
    """vma_remap_struct: the state threaded through one mremap."""

    def __init__(self, mm, addr, old_len, new_len, flags, new_addr):
        self.mm = mm
        self.addr = addr
        self.old_len = old_len
        self.new_len = new_len
        self.flags = flags
        self.new_addr = new_addr
        self.delta = abs(new_len - old_len)
        self.vma = self.mm.vma_at(addr)

    # ---------------------------------------------------------------- helpers
    def _overlaps(self) -> bool:
        """The kernel's test, in 64-bit unsigned arithmetic (the sums may wrap)."""
        return (((self.addr + self.old_len) & U64) > self.new_addr
                and ((self.new_addr + self.new_len) & U64) > self.addr)

    def _shrink(self) -> None:
        """shrink_vma: munmap the tail [addr+new_len, addr+old_len)."""
        do_vmi_munmap(self.mm, self.addr + self.new_len, self.old_len - self.new_len)
        self.vma = self.mm.vma_at(self.addr)
        if self.vma is None:
            raise efault("mapping vanished")

    def _remap_is_valid(self) -> None:
        """check_prep_vma for a move or an expansion: EINVAL/EFAULT before anything changes
        (a shrink may cross the end of the VMA: only its new length must fit)."""
        vma = self.vma
        if self.old_len == 0 and not vma.flags & (VmFlags.SHARED | VmFlags.MAYSHARE):
            raise einval("old_len 0 duplicates only shared mappings")
        if self.flags & MremapFlags.DONTUNMAP and vma.flags & (VmFlags.DONTEXPAND | VmFlags.PFNMAP):
            raise einval("MREMAP_DONTUNMAP on a VM_DONTEXPAND/VM_PFNMAP mapping")
        old_len = min(self.old_len, self.new_len)
        if old_len > vma.end - self.addr:
            raise efault("old range crosses the end of the mapping")
        if self.new_len == old_len:
            return
        pgoff = vma.pgoff + ((self.addr - vma.start) >> PAGE_SHIFT)
        if pgoff + (self.new_len >> PAGE_SHIFT) > U64 >> PAGE_SHIFT:
            raise einval("file offset overflows")
        if vma.flags & (VmFlags.DONTEXPAND | VmFlags.PFNMAP):
            raise efault("cannot grow a VM_DONTEXPAND/VM_PFNMAP mapping")

    def _set_new_addr(self) -> None:
        """vrm_set_new_addr: get_unmapped_area with MAP_FIXED, a hint, or neither."""
        mm = self.mm
        length = self.new_len
        if self.flags & MremapFlags.FIXED:
            if self.new_addr > TASK_SIZE - length:
                raise enomem("range beyond TASK_SIZE")
            return
        hint = self.new_addr if self.flags & MremapFlags.DONTUNMAP else 0
        if length > TASK_SIZE:
            raise enomem("length too large")
        if hint and hint <= TASK_SIZE - length and not mm.overlapping(hint, hint + length):
            return
        shared = bool(self.vma.flags & VmFlags.MAYSHARE)
        align = PMD_SIZE if (length % PMD_SIZE == 0 and not shared and self.vma.backing is None) else 0
        a = mm.get_unmapped_area(length, align)
        if a is None:
            raise enomem("no free range of that size")
        self.new_addr = a

    # ---------------------------------------------------------------- entry points
    def mremap_to(self) -> int:
        """check_prep_vma, then mremap_to: MREMAP_FIXED or MREMAP_DONTUNMAP, a move to
        new_addr. A MREMAP_FIXED destination is unmapped once the arguments are known to be
        valid (6.18 checks them first, checked on the development kernel): a failure after
        that (ENOMEM) leaves it unmapped, as in Linux."""
        if self.new_len > TASK_SIZE or self.new_addr > TASK_SIZE - self.new_len:
            raise einval("new range beyond TASK_SIZE")
        if self._overlaps():
            raise einval("old and new ranges overlap")
        self._remap_is_valid()
        if self.flags & MremapFlags.FIXED:
            do_vmi_munmap(self.mm, self.new_addr, self.new_len)
            self.vma = self.mm.vma_at(self.addr)
            if self.vma is None:
                raise efault("mapping vanished")
        if self.new_len < self.old_len:
            self._shrink()
            self.old_len = self.new_len
            self.delta = 0
        self._set_new_addr()
        return self._move_vma()

    def mremap_at(self) -> int:
        """mremap_at: resize in place, moving only if it must and may."""
        if self.new_len == self.old_len:
            return self.addr
        if self.new_len < self.old_len:
            self._shrink()
            return self.addr
        # expand_vma
        self._remap_is_valid()
        if self._can_expand_in_place():
            self._expand_in_place()
            return self.addr
        if not self.flags & MremapFlags.MAYMOVE:
            raise enomem("cannot grow in place and MREMAP_MAYMOVE not given")
        self._set_new_addr()
        return self._move_vma()

    # ---------------------------------------------------------------- expand in place
    def _can_expand_in_place(self) -> bool:
        """vrm_can_expand_in_place + vma_expandable."""
        vma = self.vma
        if vma.end - self.addr != self.old_len:
            return False
        end = vma.end + self.delta
        if end > TASK_SIZE:
            return False
        return not self.mm.overlapping(vma.end, end)

    def _expand_in_place(self) -> None:
        """expand_vma_in_place: vma_merge_extend (grow, then merge with the next VMA)."""
        mm, vma = self.mm, self.vma
        vma.end += self.delta
        mm.try_merge_around(vma)
        npages = self.delta >> PAGE_SHIFT
        mm.vm_stat_account(vma.flags, npages)
        mm.update_hiwater_vm()
        if vma.flags & VmFlags.LOCKED:
            mm.locked_vm += npages
            mm_populate(mm, self.addr + self.old_len, self.addr + self.new_len, ignore_errors=True)

    # ---------------------------------------------------------------- move
    def _realign(self, vma_old, vma_new):
        """try_realign_addr: start the walk at the PMD boundary below both addresses when
        they are mutually aligned, the move reaches the next boundary, and nothing is
        mapped between the boundary and either VMA's start."""
        mask = ~(PMD_SIZE - 1)
        old, new = self.addr, self.new_addr
        old_align = old & (PMD_SIZE - 1)
        if self.old_len < PMD_SIZE - old_align or old_align == 0:
            return old, new
        if old_align != new & (PMD_SIZE - 1):
            return old, new
        for v, a in ((vma_old, old), (vma_new, new)):
            if v is None or v.start != a or self.mm.overlapping(a & mask, a):
                return old, new
        return old & mask, new & mask

    def _move_vma(self) -> int:
        """move_vma: copy_vma + move_page_tables, then unmap the source (or, with
        MREMAP_DONTUNMAP, leave it mapped and empty)."""
        mm, vma = self.mm, self.vma
        if mm.map_count >= mm.machine.max_map_count - 3:
            raise enomem("a move could exceed max_map_count")
        addr, old_len, new_len, new_addr = self.addr, self.old_len, self.new_len, self.new_addr
        old_end = addr + old_len
        # frames for private copies of COW-shared source tables and for the destination
        # tables (move_page_tables never frees on the way): all or nothing
        # (the destination's spans too: a neighbour there may share its table)
        need = 0
        if old_len:
            need = (_mremap.count_move_tables(mm.core, addr, new_addr, old_end)
                    + _cow_pte.break_count(mm.core, addr, old_end, False)
                    + _cow_pte.break_count(mm.core, new_addr, new_addr + old_len, False))
        top_up(mm.machine.phys, need, "mremap")
        if old_len:
            break_cow_pte_range(mm, addr, old_end)
            break_cow_pte_range(mm, new_addr, new_addr + old_len)

        # copy_vma: an unfaulted anonymous VMA takes the pgoff of its new place
        pgoff = vma.pgoff + ((addr - vma.start) >> PAGE_SHIFT)
        if vma.backing is None and vma.anon_vma is None:
            pgoff = new_addr >> PAGE_SHIFT
        flags = vma.flags
        new_vma = vma.copy(start=new_addr, end=new_addr + new_len, pgoff=pgoff)
        mm.insert(new_vma)
        new_vma = mm.try_merge_around(new_vma)      # vma_merge_new_range
        if old_len:
            vma_old = mm.vma_at(addr)
            start, nstart = self._realign(vma_old, new_vma)
            done = _mremap.move_range(mm.core, start, nstart, old_end)[0]
            if done < old_end - start:      # cannot happen: the frames were counted above
                raise RuntimeError("move_page_tables ran out of frames after the pre-count")

        hiwater_vm = mm.hiwater_vm
        npages = new_len >> PAGE_SHIFT
        mm.vm_stat_account(flags, npages)
        if flags & VmFlags.LOCKED:
            mm.locked_vm += npages
        if self.flags & MremapFlags.DONTUNMAP:
            # dontunmap_complete
            src = mm.vma_at(addr)
            # (VM_ACCOUNT stays since "mm/mremap: correctly account old mapping after
            # MREMAP_DONTUNMAP remap", in 6.18 stable; checked on the development kernel)
            src.set_flags(src.flags & ~(VmFlags.LOCKED | VmFlags.LOCKONFAULT))
            if src is not new_vma and src.start == addr and src.end == old_end:
                src.anon_vma = None         # unlink_anon_vmas
        elif old_len:
            do_munmap(mm, addr, old_end)
        mm.hiwater_vm = hiwater_vm
        if flags & VmFlags.LOCKED and new_len > old_len:
            mm_populate(mm, new_addr + old_len, new_addr + new_len, ignore_errors=True)
        return new_addr
