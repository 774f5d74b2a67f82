"""Linux flag values (x86-64 uapi) as enum.IntFlag, plus module-level aliases.

Values are those of include/uapi/asm-generic/mman-common.h, mman.h, linux/sched.h and
include/linux/mm.h, so numbers read from Linux code or strace mean the same here.
"""
from __future__ import annotations

import enum

from ._core import constants as _c


class Prot(enum.IntFlag):
    """PROT_* for mmap and mprotect."""

    NONE = 0x0
    READ = 0x1
    WRITE = 0x2
    EXEC = 0x4
    SEM = 0x8
    GROWSDOWN = 0x01000000
    GROWSUP = 0x02000000


class MapFlags(enum.IntFlag):
    """MAP_* for mmap."""

    SHARED = 0x01
    PRIVATE = 0x02
    SHARED_VALIDATE = 0x03
    TYPE = 0x0F
    FIXED = 0x10
    ANONYMOUS = 0x20
    GROWSDOWN = 0x0100
    DENYWRITE = 0x0800
    EXECUTABLE = 0x1000
    MAYBE_GUARD = 0x800         # the VMA may hold guard-region markers (Linux 6.18)
    LOCKED = 0x2000
    NORESERVE = 0x4000
    POPULATE = 0x8000
    NONBLOCK = 0x10000
    STACK = 0x20000
    HUGETLB = 0x40000
    SYNC = 0x80000
    FIXED_NOREPLACE = 0x100000
    UNINITIALIZED = 0x4000000


class Madv(enum.IntEnum):
    """MADV_* advice values for madvise."""

    NORMAL = 0
    RANDOM = 1
    SEQUENTIAL = 2
    WILLNEED = 3
    DONTNEED = 4
    FREE = 8
    REMOVE = 9
    DONTFORK = 10
    DOFORK = 11
    MERGEABLE = 12
    UNMERGEABLE = 13
    HUGEPAGE = 14
    NOHUGEPAGE = 15
    DONTDUMP = 16
    DODUMP = 17
    WIPEONFORK = 18
    KEEPONFORK = 19
    COLD = 20
    PAGEOUT = 21
    POPULATE_READ = 22
    POPULATE_WRITE = 23
    DONTNEED_LOCKED = 24
    COLLAPSE = 25
    HWPOISON = 100
    SOFT_OFFLINE = 101
    GUARD_INSTALL = 102
    GUARD_REMOVE = 103


class MremapFlags(enum.IntFlag):
    """MREMAP_* for mremap (include/uapi/linux/mman.h)."""

    MAYMOVE = 1
    FIXED = 2
    DONTUNMAP = 4


class CloneFlags(enum.IntFlag):
    """CLONE_* for clone3 (linux/sched.h)."""

    VM = 0x00000100
    FS = 0x00000200
    FILES = 0x00000400
    SIGHAND = 0x00000800
    PIDFD = 0x00001000
    PTRACE = 0x00002000
    VFORK = 0x00004000
    PARENT = 0x00008000
    THREAD = 0x00010000
    NEWNS = 0x00020000
    SYSVSEM = 0x00040000
    SETTLS = 0x00080000
    PARENT_SETTID = 0x00100000
    CHILD_CLEARTID = 0x00200000
    DETACHED = 0x00400000
    UNTRACED = 0x00800000
    CHILD_SETTID = 0x01000000
    NEWCGROUP = 0x02000000
    NEWUTS = 0x04000000
    NEWIPC = 0x08000000
    NEWUSER = 0x10000000
    NEWPID = 0x20000000
    NEWNET = 0x40000000
    IO = 0x80000000
    CLEAR_SIGHAND = 0x100000000
    INTO_CGROUP = 0x200000000
    # The COW page table series proposed an opt-in; it never merged, so the value is
    # mmemu's own: the next free clone3 flag bit.
    COW_PGTABLE = 0x400000000
    # Whole-table COW (mmemu's own design, cow_pgtable.pyx): share PMD or PUD tables at fork;
    # mmemu's own bits, the next free ones. At most one of the two.
    COW_PGTABLE_PMD = 0x800000000
    COW_PGTABLE_PUD = 0x1000000000


class VmFlags(enum.IntFlag):
    """VM_* bits of vm_area_struct.vm_flags (include/linux/mm.h); the ones the Cython core
    reads are defined there (types.pxd)."""

    NONE = 0
    READ = _c.VM_READ
    WRITE = _c.VM_WRITE
    EXEC = _c.VM_EXEC
    SHARED = _c.VM_SHARED
    MAYREAD = _c.VM_MAYREAD
    MAYWRITE = _c.VM_MAYWRITE
    MAYEXEC = _c.VM_MAYEXEC
    MAYSHARE = _c.VM_MAYSHARE
    GROWSDOWN = _c.VM_GROWSDOWN
    PFNMAP = 0x400
    MAYBE_GUARD = 0x800         # the VMA may hold guard-region markers (Linux 6.18)
    LOCKED = 0x2000
    IO = 0x4000
    SEQ_READ = 0x8000
    RAND_READ = 0x10000
    DONTCOPY = 0x20000
    DONTEXPAND = 0x40000
    LOCKONFAULT = 0x80000
    ACCOUNT = 0x100000
    NORESERVE = 0x200000
    HUGETLB = 0x400000
    SYNC = 0x800000
    WIPEONFORK = 0x2000000
    DONTDUMP = 0x4000000
    SOFTDIRTY = 0x8000000
    MIXEDMAP = 0x10000000
    HUGEPAGE = 0x20000000
    NOHUGEPAGE = 0x40000000
    MERGEABLE = 0x80000000


# module-level names as C code spells them
PROT_NONE = Prot.NONE
PROT_READ = Prot.READ
PROT_WRITE = Prot.WRITE
PROT_EXEC = Prot.EXEC
PROT_SEM = Prot.SEM
PROT_GROWSDOWN = Prot.GROWSDOWN
PROT_GROWSUP = Prot.GROWSUP

MAP_SHARED = MapFlags.SHARED
MAP_PRIVATE = MapFlags.PRIVATE
MAP_SHARED_VALIDATE = MapFlags.SHARED_VALIDATE
MAP_TYPE = MapFlags.TYPE
MAP_FIXED = MapFlags.FIXED
MAP_ANONYMOUS = MapFlags.ANONYMOUS
MAP_ANON = MapFlags.ANONYMOUS
MAP_GROWSDOWN = MapFlags.GROWSDOWN
MAP_DENYWRITE = MapFlags.DENYWRITE
MAP_EXECUTABLE = MapFlags.EXECUTABLE
MAP_LOCKED = MapFlags.LOCKED
MAP_NORESERVE = MapFlags.NORESERVE
MAP_POPULATE = MapFlags.POPULATE
MAP_NONBLOCK = MapFlags.NONBLOCK
MAP_STACK = MapFlags.STACK
MAP_HUGETLB = MapFlags.HUGETLB
MAP_SYNC = MapFlags.SYNC
MAP_FIXED_NOREPLACE = MapFlags.FIXED_NOREPLACE
MAP_UNINITIALIZED = MapFlags.UNINITIALIZED

MADV_NORMAL = Madv.NORMAL
MADV_RANDOM = Madv.RANDOM
MADV_SEQUENTIAL = Madv.SEQUENTIAL
MADV_WILLNEED = Madv.WILLNEED
MADV_DONTNEED = Madv.DONTNEED
MADV_FREE = Madv.FREE
MADV_REMOVE = Madv.REMOVE
MADV_DONTFORK = Madv.DONTFORK
MADV_DOFORK = Madv.DOFORK
MADV_MERGEABLE = Madv.MERGEABLE
MADV_UNMERGEABLE = Madv.UNMERGEABLE
MADV_HUGEPAGE = Madv.HUGEPAGE
MADV_NOHUGEPAGE = Madv.NOHUGEPAGE
MADV_DONTDUMP = Madv.DONTDUMP
MADV_DODUMP = Madv.DODUMP
MADV_WIPEONFORK = Madv.WIPEONFORK
MADV_KEEPONFORK = Madv.KEEPONFORK
MADV_COLD = Madv.COLD
MADV_PAGEOUT = Madv.PAGEOUT
MADV_POPULATE_READ = Madv.POPULATE_READ
MADV_POPULATE_WRITE = Madv.POPULATE_WRITE
MADV_DONTNEED_LOCKED = Madv.DONTNEED_LOCKED
MADV_COLLAPSE = Madv.COLLAPSE
MADV_GUARD_INSTALL = Madv.GUARD_INSTALL
MADV_GUARD_REMOVE = Madv.GUARD_REMOVE

MREMAP_MAYMOVE = MremapFlags.MAYMOVE
MREMAP_FIXED = MremapFlags.FIXED
MREMAP_DONTUNMAP = MremapFlags.DONTUNMAP

CLONE_VM = CloneFlags.VM
CLONE_VFORK = CloneFlags.VFORK
CLONE_THREAD = CloneFlags.THREAD
CLONE_SIGHAND = CloneFlags.SIGHAND
CLONE_CLEAR_SIGHAND = CloneFlags.CLEAR_SIGHAND
CLONE_INTO_CGROUP = CloneFlags.INTO_CGROUP
CLONE_COW_PGTABLE = CloneFlags.COW_PGTABLE
CLONE_COW_PGTABLE_PMD = CloneFlags.COW_PGTABLE_PMD
CLONE_COW_PGTABLE_PUD = CloneFlags.COW_PGTABLE_PUD

# prctl options of the COW page table series (v4 "mm: Allow user to control COW PTE via
# prctl"); not in mainline, so the numbers are mmemu's own, after PR_GET_AUXV (0x41...).
PR_SET_COW_PTE = 0x434F5750     # "COWP"
PR_GET_COW_PTE = 0x434F5751
# mmemu's own: the sharing level of later forks, arg2 0 (classic), 1 (PTE tables), 2 (PMD
# tables), 3 (PUD tables); PR_SET_COW_PTE 1 is level 1, PR_GET_COW_PTE says whether any is set
PR_SET_COW_PGTABLE = 0x434F5752
PR_GET_COW_PGTABLE = 0x434F5753

PROT_NAMES = [n for n in globals() if n.startswith("PROT_")]
MAP_NAMES = [n for n in globals() if n.startswith("MAP_")]
MADV_NAMES = [n for n in globals() if n.startswith("MADV_")]
CLONE_NAMES = [n for n in globals() if n.startswith("CLONE_")]
PR_NAMES = ["PR_SET_COW_PTE", "PR_GET_COW_PTE", "PR_SET_COW_PGTABLE", "PR_GET_COW_PGTABLE"]
MREMAP_NAMES = [n for n in globals() if n.startswith("MREMAP_")]

__all__ = (["Prot", "MapFlags", "Madv", "CloneFlags", "VmFlags", "MremapFlags"]
           + PROT_NAMES + MAP_NAMES + MADV_NAMES + CLONE_NAMES + PR_NAMES + MREMAP_NAMES)
