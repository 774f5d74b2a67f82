"""VMAs (vm_area_struct) and the protection bits they imply.

A VMA is plain data; the operations that change the VMA set (split, merge, insert) live
in mm.py next to the counters they must keep in step.
"""
from __future__ import annotations

import functools
import operator
from dataclasses import dataclass, field
from typing import Optional

from ._core.constants import BIT_ACCESSED, BIT_NX, BIT_PRESENT, BIT_PROTNONE, BIT_RW, BIT_USER
from ._core.constants import PAGE_SHIFT, PAGE_SIZE, PMD_SIZE  # noqa: F401  (the geometry, from here)
from .flags import VmFlags
from .state import bad, is_int, refuse_undeclared, show

TASK_SIZE = 0x7FFFFFFFF000          # x86-64 4-level TASK_SIZE_MAX
MMAP_MIN_ADDR = 0x10000             # vm.mmap_min_addr default (65536)
MMAP_BASE = 0x7FFFF7FFF000          # mmap_base with ASLR off: TASK_SIZE - (8 MiB stack rlimit + gap), page aligned

# x86 PTE bits used in vm_page_prot
_P, _RW, _US, _A = 1 << BIT_PRESENT, 1 << BIT_RW, 1 << BIT_USER, 1 << BIT_ACCESSED
_PROTNONE, _NX = 1 << BIT_PROTNONE, 1 << BIT_NX
PAGE_NONE = _PROTNONE | _A
PAGE_READONLY = _P | _US | _A | _NX
PAGE_READONLY_EXEC = _P | _US | _A
PAGE_COPY = PAGE_READONLY
PAGE_COPY_EXEC = PAGE_READONLY_EXEC
PAGE_SHARED = _P | _RW | _US | _A | _NX
PAGE_SHARED_EXEC = _P | _RW | _US | _A

# arch/x86/mm/pgprot.c protection_map, indexed by VM_READ|VM_WRITE|VM_EXEC|VM_SHARED
PROTECTION_MAP = [
    PAGE_NONE, PAGE_READONLY, PAGE_COPY, PAGE_COPY,
    PAGE_READONLY_EXEC, PAGE_READONLY_EXEC, PAGE_COPY_EXEC, PAGE_COPY_EXEC,
    PAGE_NONE, PAGE_READONLY, PAGE_SHARED, PAGE_SHARED,
    PAGE_READONLY_EXEC, PAGE_READONLY_EXEC, PAGE_SHARED_EXEC, PAGE_SHARED_EXEC,
]

VM_ACCESS_FLAGS = VmFlags.READ | VmFlags.WRITE | VmFlags.EXEC
VM_STACK = VmFlags.GROWSDOWN
# flags that do not stop two VMAs from merging (VM_IGNORE_MERGE); the sticky ones survive
# a merge on the merged VMA (VM_STICKY). VM_SOFTDIRTY is never set: the modelled kernel,
# like the development machines' 6.18, is built without CONFIG_MEM_SOFT_DIRTY.
VM_IGNORE_MERGE = VmFlags.SOFTDIRTY | VmFlags.MAYBE_GUARD
VM_STICKY = VmFlags.SOFTDIRTY | VmFlags.MAYBE_GUARD
VM_KNOWN = functools.reduce(operator.or_, (int(f) for f in VmFlags), 0)   # every VM_* bit mmemu names


def vm_get_page_prot(vm_flags: int) -> int:
    """vm_get_page_prot: the PTE protection bits a VMA's new entries get."""
    return PROTECTION_MAP[vm_flags & 0xF]


_SHARED_WRITE = int(VmFlags.SHARED | VmFlags.WRITE)


def vma_set_page_prot(vm_flags: int, backing) -> int:
    """vma_set_page_prot: vm_get_page_prot, without the write bit where
    vma_wants_writenotify says so: a shared writable mapping of a file whose vm_ops have a
    page_mkwrite (a disk file, as ext4's; not tmpfs or shmem), so the first write to each
    page faults (wp_page_shared) and dirties it."""
    if vm_flags & _SHARED_WRITE == _SHARED_WRITE and backing is not None \
            and not getattr(backing, "swapbacked", True):
        return PROTECTION_MAP[vm_flags & 0x7]
    return PROTECTION_MAP[vm_flags & 0xF]


class AnonVma:
    """An anon_vma. Identity matters: VMAs merge only with a compatible anon_vma.

    ``forked`` marks a VMA whose anon_vma chain was cloned at fork (not singular), the
    reason forked anon VMAs do not merge with new neighbours.
    """

    __slots__ = ("forked",)

    def __init__(self, forked: bool = False):
        self.forked = forked


@dataclass(eq=False)
class VMA:
    """One vm_area_struct: [start, end), VM_* flags, backing object and offset."""

    start: int
    end: int
    flags: int
    pgoff: int = 0                      # in pages
    backing: Optional[object] = None    # File / shmem object with a page cache, or None (anon)
    anon_vma: Optional[AnonVma] = None
    name: Optional[str] = None          # "[heap]", "[stack]", ... for /proc/PID/maps
    page_prot: int = field(init=False)

    def __post_init__(self):
        self.flags = int(self.flags)        # plain int: IntFlag arithmetic is slow on hot paths
        self.page_prot = vma_set_page_prot(self.flags, self.backing)

    def set_flags(self, flags: int) -> None:
        self.flags = int(flags)
        self.page_prot = vma_set_page_prot(self.flags, self.backing)

    @property
    def npages(self) -> int:
        return (self.end - self.start) >> PAGE_SHIFT

    @property
    def is_anonymous(self) -> bool:
        """vma_is_anonymous: no vm_ops (private anonymous memory)."""
        return self.backing is None

    @property
    def shared(self) -> bool:
        return bool(self.flags & VmFlags.SHARED)

    @property
    def mayshare(self) -> bool:
        return bool(self.flags & VmFlags.MAYSHARE)

    def copy(self, **changes) -> "VMA":
        v = VMA(self.start, self.end, self.flags, self.pgoff, self.backing, self.anon_vma, self.name)
        for k, val in changes.items():
            setattr(v, k, val)
        v.page_prot = vma_set_page_prot(v.flags, v.backing)
        return v

    def __repr__(self) -> str:
        return f"VMA({self.start:#x}-{self.end:#x} {VmFlags(self.flags)!r} pgoff={self.pgoff})"

    # ---- snapshots (mmemu.snapshot) ----
    def dump_state(self, refs, where) -> list:
        """[start, end, flags, pgoff, backing, anon_vma, name, page_prot], the backing
        object and the anon_vma as indexes of refs (mmemu.state.SaveRefs), None if none."""
        refuse_undeclared(self, f"a VMA of {where}")
        b = None if self.backing is None else refs.backing_index(self.backing, where)
        a = None if self.anon_vma is None else refs.anon_vma_index(self.anon_vma)
        return [self.start, self.end, self.flags, self.pgoff, b, a, self.name, self.page_prot]

    @classmethod
    def from_state(cls, rec, refs, where, after=0) -> "VMA":
        """The VMA dump_state gave, checked: page-aligned, above ``after`` (the end of the
        VMA before it) and at most TASK_SIZE, known VM_* bits only, a shared mapping only
        of a file or shmem object, the page protection its flags (and backing) give. Its backing
        object's ``users`` is not changed (the caller counts the VMAs mapping it)."""
        if not isinstance(rec, list) or len(rec) != 8:
            raise bad(f"{where}: a VMA record must be a list of 8")
        start, end, flags, pgoff, bi, ai, name, prot = rec
        if not all(is_int(x) for x in (start, end, flags, pgoff, prot)):
            raise bad(f"{where}: VMA fields must be integers")
        if not (after <= start < end <= TASK_SIZE) or (start | end) & (PAGE_SIZE - 1):
            raise bad(f"{where}: bad or overlapping VMA {start:#x}-{end:#x}")
        if not (0 <= pgoff < 1 << 52 and 0 <= flags < 1 << 64 and 0 <= prot < 1 << 64):
            raise bad(f"{where}: VMA {start:#x}-{end:#x} has a field out of range")
        if flags & ~VM_KNOWN:
            raise bad(f"{where}: VMA {start:#x}-{end:#x} has unknown flags {flags & ~VM_KNOWN:#x}")
        if name is not None and not isinstance(name, str):
            raise bad(f"{where}: VMA name must be a string, not {show(name)}")
        backing = None if bi is None else refs.backing(bi, where)
        if flags & (VmFlags.SHARED | VmFlags.MAYSHARE) and backing is None:
            raise bad(f"{where}: shared VMA {start:#x}-{end:#x} without a file or shmem object")
        if prot != vma_set_page_prot(flags, backing):
            raise bad(f"{where}: VMA {start:#x}-{end:#x}: page protection {prot:#x}, its flags "
                      f"give {vma_set_page_prot(flags, backing):#x}")
        av = None if ai is None else refs.anon_vma(ai, where)
        return cls(start, end, flags, pgoff, backing, av, name)
