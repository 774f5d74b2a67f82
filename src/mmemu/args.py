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

from .vma import PAGE_SIZE

U64 = (1 << 64) - 1      # ULONG_MAX
U32 = (1 << 32) - 1      # UINT_MAX

#: The values ``Process.fork(cow_pgtable=...)`` accepts. None: the process's own setting
#: (``Machine(cow_pgtable=...)`` or ``prctl(PR_SET_COW_PTE)``); True: share the PTE tables
#: copy-on-write; False: a classic fork whatever the setting. A mechanism that shares other
#: levels appends its value here (e.g. ``"pmd"``).
COW_PGTABLE_MODES: tuple = (None, False, True)

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


def cow_pgtable_mode(value: Optional[Any]) -> Any:
    """``fork(cow_pgtable=...)``: one of COW_PGTABLE_MODES (TypeError / ValueError else)."""
    return check_choice("cow_pgtable", value, COW_PGTABLE_MODES)
