"""The transparent-huge-page policy, after mm/huge_memory.c and include/linux/huge_mm.h.

The mechanism (huge PMDs, their faults, fork, splits) is the Cython core's
(mmemu._core.huge_memory); here: the system-wide mode of
/sys/kernel/mm/transparent_hugepage/enabled (``Machine(thp=...)``, ``m.sysfs``), which VMAs
may get a PMD-sized THP (thp_vma_allowable_order) or map a PMD-sized page-cache folio by a
PMD (pmd_mappable: do_set_pmd's vma_thp_disabled) and smaps' THPeligible.
Left out: the defrag, shmem_enabled and use_zero_page files (defrag is moot without
compaction; the huge zero page is always used), mTHP sizes, the prctl PR_SET_THP_DISABLE,
khugepaged (MADV_COLLAPSE: mmemu.khugepaged).
"""
from __future__ import annotations

from collections.abc import MutableMapping

from .flags import VmFlags
from .vma import PMD_SIZE

THP_MODES = ("always", "madvise", "never")
ENABLED = "kernel/mm/transparent_hugepage/enabled"

# vma_is_special_huge / the VM_NO_KHUGEPAGED-like flags no THP fault maps
# (plain ints: the test runs on every access, and IntFlag arithmetic is slow)
_NO_THP = int(VmFlags.SHARED | VmFlags.IO | VmFlags.PFNMAP | VmFlags.MIXEDMAP | VmFlags.HUGETLB
              | VmFlags.NOHUGEPAGE)
_HUGEPAGE = int(VmFlags.HUGEPAGE)


def thp_mode(value) -> str:
    """A mode written to the enabled file (with or without its newline): ValueError unless
    one of always / madvise / never (the kernel's EINVAL)."""
    if not isinstance(value, str):
        raise TypeError(f"the THP mode must be a str, not {type(value).__name__}")
    mode = value[:-1] if value.endswith("\n") else value
    if mode not in THP_MODES:
        raise ValueError(f"THP mode must be one of {', '.join(THP_MODES)}, not {value!r}")
    return mode


def thp_vma_allowable(machine, vma) -> bool:
    """thp_vma_allowable_order(PMD_ORDER) for a fault: a private anonymous VMA, not
    MADV_NOHUGEPAGE, under mode always, or madvise with MADV_HUGEPAGE."""
    mode = machine._thp        # a plain read: the lock-wrapped property costs more than the test
    if mode == "never" or vma.backing is not None or vma.flags & _NO_THP:
        return False
    return mode == "always" or bool(vma.flags & _HUGEPAGE)


_NO_FILE_PMD = int(VmFlags.NOHUGEPAGE)


def pmd_mappable(machine, vma) -> bool:
    """Whether a fault in vma may map a PMD: thp_vma_allowable for an anonymous VMA; for a
    file VMA do_set_pmd's own test, vma_thp_disabled (MADV_NOHUGEPAGE; the mode does not
    matter: the large folio is in the page cache already)."""
    if vma.backing is None:
        return thp_vma_allowable(machine, vma)
    return not vma.flags & _NO_FILE_PMD


def thp_eligible(machine, vma) -> int:
    """smaps THPeligible: the policy allows a THP and an aligned 2 MiB fits in the VMA."""
    first = (vma.start + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    return int(thp_vma_allowable(machine, vma) and first + PMD_SIZE <= vma.end)


class Sysfs(MutableMapping):
    """The machine's /sys as a mapping of path (below /sys) -> file text; only
    ``kernel/mm/transparent_hugepage/enabled`` exists. Reading it gives the kernel's text
    (``always [madvise] never``); writing a mode changes the policy for every later fault
    (ValueError for anything else, the kernel's EINVAL). Files cannot be added or removed."""

    def __init__(self, machine):
        self._machine = machine

    def __getitem__(self, path):
        if path != ENABLED:
            raise KeyError(path)
        mode = self._machine.thp
        return " ".join(f"[{m}]" if m == mode else m for m in THP_MODES)

    def __setitem__(self, path, value):
        if path != ENABLED:
            raise KeyError(path)
        self._machine.thp = thp_mode(value)

    def __delitem__(self, path):
        raise TypeError("sysfs files cannot be removed")

    def __iter__(self):
        return iter((ENABLED,))

    def __len__(self):
        return 1

    def __repr__(self):
        return f"<Sysfs {ENABLED}={self[ENABLED]!r}>"
