"""Syscall arguments as the kernel sees them: C integer types and page rounding.

Only integers are arguments (int, bool, numpy integers, IntFlag: anything with
__index__); a str, float, None or bytes raises TypeError before anything changes.
"""
from __future__ import annotations

import operator

from .vma import PAGE_SIZE

U64 = (1 << 64) - 1      # ULONG_MAX
U32 = (1 << 32) - 1      # UINT_MAX


def ulong(x) -> int:
    """An integer syscall argument as the unsigned long the kernel sees."""
    return operator.index(x) & U64


def uint(x) -> int:
    """An int syscall argument (prot, flags) as the kernel's unsigned int."""
    return operator.index(x) & U32


def page_align(n: int) -> int:
    """PAGE_ALIGN without the wrap at 2**64 (callers that need it mask with U64)."""
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
