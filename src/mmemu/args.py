"""Arguments as the kernel and the API see them: C integer types and page rounding for
syscalls; sizes, booleans and choices for the Python-level parameters.

Only integers are syscall arguments (int, bool, numpy integers, IntFlag: anything with
__index__); a str, float, None or bytes raises TypeError before anything changes.
The Python-level parameters (``Machine(memory=...)``, ``fork(cow_pgtable=...)``, the
command line's ``--size``) are checked here, in one place: a value of the wrong kind
raises TypeError, a value of the right kind outside the accepted set raises ValueError.
"""
from __future__ import annotations

import operator
import os
import re
from typing import Any, Optional, Sequence, Union

import numpy as np

from .errors import SnapshotError

from .vma import PAGE_SIZE

U64 = (1 << 64) - 1      # ULONG_MAX
U32 = (1 << 32) - 1      # UINT_MAX

#: The values ``Process.fork(cow_pgtable=...)`` accepts. None: the process's own setting
#: (``Machine(cow_pgtable=...)`` or ``prctl(PR_SET_COW_PTE)``); True: share the PTE tables
#: copy-on-write; False: a classic fork whatever the setting. A mechanism that shares other
#: levels appends its value here (e.g. ``"pmd"``).
COW_PGTABLE_MODES: tuple = (None, False, True, "pte", "pmd", "pud")

#: The accounting modes of COW-shared page tables (``Machine(cow_pte_accounting=...)``).
COW_PTE_ACCOUNTING: tuple = ("deferred", "eager")

#: Size units: every one binary (a power of 1024), as the kernel's memparse() and
#: ``free -g`` read them. "1G", "1g", "1Gi", "1GB" and "1GiB" all mean 2**30 bytes.
SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50,
              "e": 1 << 60}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgtpe])(?:i?b|i)?|b)?\s*$", re.IGNORECASE)

Size = Union[int, str]
#: What a file name may be (``Machine.save``, ``Machine.load``).
StrPath = Union[str, "os.PathLike[str]"]
#: Bytes a write takes: bytes-like objects and numpy uint8 arrays.
Buffer = Union[bytes, bytearray, memoryview, np.ndarray]


def ulong(x: Any) -> int:
    """An integer syscall argument as the unsigned long the kernel sees."""
    return operator.index(x) & U64


def uint(x: Any) -> int:
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


def parse_size(size: Size) -> int:
    """Bytes from an integer or a size string.

    Parameters
    ----------
    size : int or str
        A number of bytes, or a number with an optional binary unit: ``K``, ``M``, ``G``,
        ``T``, ``P``, ``E``, each optionally followed by ``i``, ``B`` or ``iB`` and in
        either case. Every unit is a power of 1024 (as the kernel's ``memparse`` reads
        them), so ``"1G"``, ``"1Gi"``, ``"1GB"`` and ``"1GiB"`` are all 2**30 bytes.

    Returns
    -------
    int
        The size in bytes.

    Raises
    ------
    TypeError
        If size is neither an integer nor a str (None, a float, bytes, a bool).
    ValueError
        If the string is not a size, or the size is negative.

    Examples
    --------
    >>> parse_size("1GiB") == parse_size("1Gi") == parse_size("1GB") == parse_size("1G") == 1 << 30
    True
    >>> parse_size("1.5K")
    1536
    """
    if isinstance(size, (bool, np.bool_)):
        raise TypeError("a size is an int or a str such as '512M', not a bool")
    if isinstance(size, (int, np.integer)):
        if size < 0:
            raise ValueError(f"a size cannot be negative: {size}")
        return int(size)
    if not isinstance(size, str):
        raise TypeError(f"a size is an int or a str such as '512M', not {type(size).__name__}")
    m = _SIZE_RE.match(size)
    if not m:
        raise ValueError(f"not a size: {size!r} (use e.g. 512M, 32G, 1GiB, 1T)")
    return int(float(m.group(1)) * SIZE_UNITS[(m.group(2) or "").lower()])


def format_size(nbytes: int) -> str:
    """The shortest exact spelling of a byte count with a binary unit: 64M, 1G, 1536K.

    >>> format_size(1 << 30), format_size(64 << 20), format_size(1536 << 10), format_size(100)
    ('1G', '64M', '1536K', '100')
    """
    for unit in "EPTGMK":
        scale = SIZE_UNITS[unit.lower()]
        if nbytes and nbytes % scale == 0:
            return f"{nbytes // scale}{unit}"
    return str(nbytes)


def check_bool(name: str, value: Any) -> bool:
    """A boolean parameter: True or False (a numpy bool too), else TypeError.

    >>> check_bool("cow_pgtable", True)
    True
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, not {value!r}")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """A parameter that takes one of choices (None, bools and strings).

    Booleans are matched as booleans (1 is not True here), strings by value: a str or a
    bool that is not a choice raises ValueError, a value of another type (an int, a float)
    TypeError.

    >>> check_choice("cow_pgtable", None, COW_PGTABLE_MODES) is None
    True
    """
    if value is None and None in choices:
        return None
    if isinstance(value, (bool, np.bool_)) and any(isinstance(c, bool) for c in choices):
        return bool(value)
    if isinstance(value, str) and value in [c for c in choices if isinstance(c, str)]:
        return value
    shown = ", ".join(repr(c) for c in choices)
    if isinstance(value, (str, bool, np.bool_)):
        raise ValueError(f"{name} must be one of {shown}, not {value!r}")
    raise TypeError(f"{name} must be one of {shown}, not {value!r}")


def cow_pgtable_mode(value: Optional[Any]) -> Optional[int]:
    """``fork(cow_pgtable=...)``: None (the process's setting decides) or the sharing level
    of one of COW_PGTABLE_MODES (cow_pgtable_level); TypeError for another type (an int
    level is for prctl's arg2, not the API), ValueError for another string."""
    if value is None:
        return None
    if isinstance(value, np.bool_):
        value = bool(value)
    if not isinstance(value, (bool, str)):
        raise TypeError(f"cow_pgtable must be one of {_modes_shown()}, not {type(value).__name__}")
    if isinstance(value, str) and value not in COW_PGTABLE_LEVELS:
        raise ValueError(f"cow_pgtable must be one of {_modes_shown()}, not {value!r}")
    return cow_pgtable_level(value)


def _modes_shown() -> str:
    """COW_PGTABLE_MODES for an error message (made only when one is raised: fork's cost)."""
    return ", ".join(map(repr, COW_PGTABLE_MODES))
