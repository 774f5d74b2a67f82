"""Initial address-space layouts for Machine.spawn().

``None`` (the default): an empty address space with the program break set at
DEFAULT_BRK, so brk() works.

``"typical"``: a small dynamically linked C program as Linux 6.18 lays it out with ASLR
off (``setarch -R``; verified on Linux 6.18 with a 20-line C program): the PIE
executable at 0x555555554000 (r--p, r-xp, r--p, relro r--p, rw-p), its brk heap, libc
and ld.so as r--p/r-xp/r--p/r--p/rw-p groups with their anonymous bss next to them near
0x7ffff7xxx000, vvar/vdso, and a 132 KiB [stack] below 0x7ffffffff000. Files are not
modelled here, so the image mappings are private anonymous VMAs carrying the file's name
(maps shows the name with offset 0); pgoff holds the file page offset so that the
pieces of one file do not merge. A few pages of each mapping are touched as the loader
and libc start-up touch them: written pages in the writable and relro mappings (they
get an anon_vma, so fork copies their page tables as it copies a real program's),
read pages elsewhere. Status then shows VmExe 4 kB, VmLib 1528 kB, VmStk 132 kB,
VmData 224 kB, VmSize 2476 kB, as Linux does for that program; VmRSS is lower because
the program's file pages are zero-page reads here.

With 1 GiB of private anonymous memory mapped and written, a classic fork child reports
VmPTE 2084 kB, the value Linux 6.18 gives for the same program with ASLR off (with ASLR
on Linux reports 2092-2100 kB: the text, heap, libraries and stack then fall in more
2 MiB and 1 GiB spans).
"""
from __future__ import annotations

from .flags import Prot, VmFlags
from .vma import PAGE_SHIFT, PAGE_SIZE, VMA

DEFAULT_BRK = 0x555555559000        # start_brk of the typical layout (ASLR off)

_R, _W, _X = VmFlags.READ, VmFlags.WRITE, VmFlags.EXEC
_MAY = VmFlags.MAYREAD | VmFlags.MAYWRITE | VmFlags.MAYEXEC

PROG = "/usr/bin/prog"
LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
LD = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"

# (start, end, perms, name, file page offset, pages to write, pages to read)
# "relro" is mapped rw-p, written by the loader, then made read-only (mprotect).
TYPICAL = [
    (0x555555554000, 0x555555555000, "r--", PROG, 0, 0, 1),
    (0x555555555000, 0x555555556000, "r-x", PROG, 1, 0, 1),
    (0x555555556000, 0x555555557000, "r--", PROG, 2, 0, 1),
    (0x555555557000, 0x555555558000, "relro", PROG, 2, 1, 0),
    (0x555555558000, 0x555555559000, "rw-", PROG, 3, 1, 0),
    (0x7FFFF7DD2000, 0x7FFFF7DD5000, "rw-", None, None, 3, 0),
    (0x7FFFF7DD5000, 0x7FFFF7DFB000, "r--", LIBC, 0, 0, 6),
    (0x7FFFF7DFB000, 0x7FFFF7F51000, "r-x", LIBC, 0x26, 0, 40),
    (0x7FFFF7F51000, 0x7FFFF7FA4000, "r--", LIBC, 0x17C, 0, 8),
    (0x7FFFF7FA4000, 0x7FFFF7FA8000, "relro", LIBC, 0x1CF, 4, 0),
    (0x7FFFF7FA8000, 0x7FFFF7FAA000, "rw-", LIBC, 0x1D3, 2, 0),
    (0x7FFFF7FAA000, 0x7FFFF7FB7000, "rw-", None, None, 2, 0),
    (0x7FFFF7FC0000, 0x7FFFF7FC2000, "rw-", None, None, 2, 0),
    (0x7FFFF7FC2000, 0x7FFFF7FC6000, "vvar", "[vvar]", 0, 0, 0),
    (0x7FFFF7FC6000, 0x7FFFF7FC8000, "vvar", "[vvar_vclock]", 0, 0, 0),
    (0x7FFFF7FC8000, 0x7FFFF7FCA000, "vdso", "[vdso]", 0, 0, 2),
    (0x7FFFF7FCA000, 0x7FFFF7FCB000, "r--", LD, 0, 0, 1),
    (0x7FFFF7FCB000, 0x7FFFF7FF1000, "r-x", LD, 1, 0, 20),
    (0x7FFFF7FF1000, 0x7FFFF7FFB000, "r--", LD, 0x27, 0, 4),
    (0x7FFFF7FFB000, 0x7FFFF7FFD000, "relro", LD, 0x31, 2, 0),
    (0x7FFFF7FFD000, 0x7FFFF7FFF000, "rw-", LD, 0x33, 2, 0),
]
STACK = (0x7FFFFFFDE000, 0x7FFFFFFFF000)     # 132 KiB, as after execve
STACK_PAGES_WRITTEN = 3
START_STACK = 0x7FFFFFFFE3A0
HEAP_END = 0x55555557A000                  # glibc's first malloc grows brk by 132 KiB
HEAP_PAGES_WRITTEN = 1
START_CODE, END_CODE = 0x555555555000, 0x5555555551C9


def _flags(perms: str) -> int:
    if perms == "vvar":      # special mappings: vvar is a PFN map, never copied by pages
        return _R | VmFlags.MAYREAD | VmFlags.IO | VmFlags.PFNMAP | VmFlags.DONTEXPAND | VmFlags.DONTDUMP
    if perms == "vdso":
        return _R | _X | _MAY | VmFlags.DONTEXPAND
    f = _MAY
    if perms in ("relro", "rw-"):
        return f | _R | _W | VmFlags.ACCOUNT
    if "r" in perms:
        f |= _R
    if "x" in perms:
        f |= _X
    return f


def _map(proc, start: int, end: int, flags: int, name, pgoff) -> VMA:
    mm = proc.mm
    if pgoff is None:
        pgoff = start >> PAGE_SHIFT
    v = VMA(start, end, flags, pgoff, None, None, name)
    mm.insert(v)
    mm.vm_stat_account(v.flags, v.npages)
    return v


# the layouts spawn() knows, besides None (an empty address space)
LAYOUTS = ("typical",)


def apply_layout(proc, layout) -> None:
    """Set up proc's fresh address space as ``layout`` (None or "typical")."""
    mm = proc.mm
    mm.start_brk = mm.brk = DEFAULT_BRK
    if layout is None:
        return
    if layout != "typical":
        raise ValueError(f"unknown layout {layout!r} (use None or 'typical')")
    touches = []
    relro = []
    for start, end, perms, name, pgoff, nwrite, nread in TYPICAL:
        _map(proc, start, end, _flags(perms), name, pgoff)
        touches.append((start, nwrite, nread))
        if perms == "relro":
            relro.append((start, end))
    s, e = STACK
    _map(proc, s, e, _R | _W | _MAY | VmFlags.GROWSDOWN | VmFlags.ACCOUNT, "[stack]", None)
    mm.start_stack = START_STACK
    mm.start_code, mm.end_code = START_CODE, END_CODE
    if proc.brk(HEAP_END) != HEAP_END:
        raise RuntimeError("typical layout: brk failed")
    mm.update_hiwater_vm()
    # the loader and libc start-up: read the image, write data, bss, relro, heap and stack
    for start, nwrite, nread in touches:
        if nwrite:
            proc.touch(start, nwrite * PAGE_SIZE, write=True)
        if nread:
            proc.touch(start, nread * PAGE_SIZE, write=False)
    proc.touch(DEFAULT_BRK, HEAP_PAGES_WRITTEN * PAGE_SIZE, write=True)
    proc.touch(e - STACK_PAGES_WRITTEN * PAGE_SIZE, STACK_PAGES_WRITTEN * PAGE_SIZE, write=True)
    for start, end in relro:
        proc.mprotect(start, end - start, Prot.READ)
    mm.update_hiwater_rss()
