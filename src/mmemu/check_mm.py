"""check_mm (kernel/fork.c, called from __mmdrop): the lines the kernel prints about an mm
torn down with counters left over, in its formats.

The mm pointer is printed as %p does (a hashed id, 16 hex digits); mmemu hashes the mm's id.
Leaves out: the Comm/Pid suffix of later kernels, MM_SWAPENTS' swap cache subtleties.
"""
from __future__ import annotations

from typing import List

# resident_page_types[] (kernel/fork.c), in MM_* order
RESIDENT_PAGE_TYPES = ("MM_FILEPAGES", "MM_ANONPAGES", "MM_SWAPENTS", "MM_SHMEMPAGES")


def mm_ptr(mm) -> str:
    """%p of an mm: a stable 32-bit hash of its id, printed as 16 hex digits."""
    h = (mm.core.id * 0x9E3779B1) & 0xFFFFFFFF
    return f"{h:016x}"


def check_mm(mm) -> List[str]:
    """check_mm: "BUG: Bad rss-counter state" per non-zero rss counter and "BUG: non-zero
    pgtables_bytes on freeing mm" for page-table bytes still accounted."""
    lines = []
    for i, name in enumerate(RESIDENT_PAGE_TYPES):
        x = int(mm.core.rss[i])
        if x:
            lines.append(f"BUG: Bad rss-counter state mm:{mm_ptr(mm)} type:{name} val:{x}")
    if mm.core.pgtables_bytes:
        lines.append(f"BUG: non-zero pgtables_bytes on freeing mm: {int(mm.core.pgtables_bytes)}")
    return lines
