"""VMAs (vm_area_struct) and the protection bits they imply.

A VMA is plain data; the operations that change the VMA set (split, merge, insert) live
in mm.py next to the counters they must keep in step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ._core.constants import BIT_ACCESSED, BIT_NX, BIT_PRESENT, BIT_PROTNONE, BIT_RW, BIT_USER
from ._core.constants import PAGE_SHIFT, PAGE_SIZE, PMD_SIZE  # noqa: F401  (the geometry, from here)
from .flags import VmFlags

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


def vm_get_page_prot(vm_flags: int) -> int:
    """vm_get_page_prot: the PTE protection bits a VMA's new entries get."""
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
        self.page_prot = vm_get_page_prot(self.flags)

    def set_flags(self, flags: int) -> None:
        self.flags = int(flags)
        self.page_prot = vm_get_page_prot(self.flags)

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
        v.page_prot = vm_get_page_prot(v.flags)
        return v

    def __repr__(self) -> str:
        return f"VMA({self.start:#x}-{self.end:#x} {VmFlags(self.flags)!r} pgoff={self.pgoff})"
