"""Syscall arguments as the kernel sees them: C integer types and page rounding.

Only integers are arguments (int, bool, numpy integers, IntFlag: anything with
__index__); a str, float, None or bytes raises TypeError before anything changes.
"""
from __future__ import annotations

import operator

from .errors import SnapshotError

from .vma import PAGE_SIZE

U64 = (1 << 64) - 1      # ULONG_MAX
U32 = (1 << 32) - 1      # UINT_MAX


def ulong(x) -> int:
    """An integer syscall argument as the unsigned long the kernel sees."""
    return operator.index(x) & U64


def uint(x) -> int:
    """An int syscall argument (prot, flags) as the kernel's unsigned int."""
    return operator.index(x) & U32


# fork's cow_pgtable argument: the highest page-table level shared copy-on-write at fork
# (mmemu's own values beyond True: "pmd" and "pud" are whole-table COW, cow_pgtable.pyx)
COW_PGTABLE_LEVELS = {"pte": 1, "pmd": 2, "pud": 3}


def cow_pgtable_level(value) -> int:
    """A cow_pgtable argument as a sharing level: None or False 0 (classic copy), True or
    "pte" 1 (PTE tables, the COW page table series), "pmd" 2 and "pud" 3 (PMD / PUD tables
    and everything under them); an int 0-3 is a level itself (PR_SET_COW_PGTABLE's arg2).
    TypeError for another type, ValueError for another string or int."""
    if value is None or isinstance(value, bool):
        return int(bool(value))
    if type(value) is int:
        if not 0 <= value <= 3:
            raise ValueError(f"cow_pgtable level {value}: use 0 (classic) to 3 (PUD tables)")
        return value
    if isinstance(value, str):
        if value not in COW_PGTABLE_LEVELS:
            raise ValueError(f"cow_pgtable {value!r}: use False, True, 'pte', 'pmd' or 'pud'")
        return COW_PGTABLE_LEVELS[value]
    raise TypeError(f"cow_pgtable must be a bool or one of 'pte', 'pmd', 'pud', "
                    f"not {type(value).__name__}")


def cow_pgtable_state(level: int):
    """A sharing level as a snapshot stores it: a bool for 0 and 1 (as before whole-table
    COW), the int for 2 and 3."""
    return bool(level) if level <= 1 else int(level)


def load_cow_pgtable(value, where: str) -> int:
    """cow_pgtable_state's value back as a level; SnapshotError naming `where` if not one."""
    if isinstance(value, bool) or (isinstance(value, int) and value in (2, 3)):
        return int(value)
    raise SnapshotError(f"bad snapshot: {where}: cow_pgtable {value!r} is not a sharing level")


def page_align(n: int) -> int:
    """PAGE_ALIGN without the wrap at 2**64 (callers that need it mask with U64)."""
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
