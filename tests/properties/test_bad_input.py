"""Hostile arguments: any integer a C program could pass (the kernel sees unsigned longs)
gets a Linux errno or a signal, never a Python error or a crash; an EINVAL/EEXIST/EFAULT
refusal changes nothing; the invariants hold throughout."""
import hypothesis.strategies as st
from hypothesis import given

import mmemu
from conftest import PG, PRIV, RW, fuzz_settings, snapshot
from mmemu import MADV_DONTNEED, MADV_DONTFORK, MAP_FIXED, MAP_SHARED, MREMAP_MAYMOVE

A = 0x7F0000000000
INTS = st.one_of(
    st.sampled_from([0, 1, PG - 1, PG, A, A + 1, A + 8 * PG, 2**47, 2**63, 2**64 - PG, 2**64 - 1]),
    st.integers(min_value=-(2**64), max_value=2**65),
    st.integers(min_value=-2 * PG, max_value=64 * PG),
)
OUTCOMES = (mmemu.MMError, mmemu.SegmentationFault, mmemu.BusError)
NO_CHANGE = {22, 17, 14}          # EINVAL, EEXIST, EFAULT: refused before any change ...
# ... except after MREMAP_FIXED: 6.18 validates the source (check_prep_vma) before mremap_to
# unmaps the destination, but its overlap test is unsigned, so an old_len that wraps around
# misses a destination on the source itself: that is unmapped, then the source lookup fails
# with EFAULT (tests/syscalls/test_mremap.py compares both with the live kernel)
PARTIAL = {"mremap_fixed"}
SETTINGS = fuzz_settings(300, "MMEMU_FUZZ_EXAMPLES")    # derandomized unless a budget is asked for


def machine():
    m = mmemu.Machine("64M")
    p = m.spawn()
    p.mmap(A, 8 * PG, RW, PRIV | MAP_FIXED)
    p.write(A, b"data" * 1024)
    p.mmap(A + 16 * PG, 4 * PG, RW, MAP_SHARED | mmemu.MAP_ANONYMOUS | MAP_FIXED)
    return m, p


CALLS = {
    "mmap": lambda p, x, y: p.mmap(x, y, RW, PRIV),
    "mmap_fixed": lambda p, x, y: p.mmap(x, y, RW, PRIV | MAP_FIXED),
    "munmap": lambda p, x, y: p.munmap(x, y),
    "mprotect": lambda p, x, y: p.mprotect(x, y, 1),
    "madvise": lambda p, x, y: p.madvise(x, y, MADV_DONTNEED),
    "madvise_flags": lambda p, x, y: p.madvise(x, y, MADV_DONTFORK),
    "mremap": lambda p, x, y: p.mremap(x, PG, y, MREMAP_MAYMOVE),
    "mremap_fixed": lambda p, x, y: p.mremap(A, x, PG, 3, y),
    "write": lambda p, x, y: p.write(x, b"z" * (y % 9000)),
    "touch": lambda p, x, y: p.touch(x, y % (64 * PG)),
    "brk": lambda p, x, y: p.brk(x),
}


@SETTINGS
@given(call=st.sampled_from(sorted(CALLS)), x=INTS, y=INTS)
def test_any_integer_arguments(call, x, y):
    m, p = machine()
    before = snapshot(m)
    try:
        CALLS[call](p, x, y)
    except OUTCOMES as e:
        if isinstance(e, mmemu.MMError) and e.errno in NO_CHANGE and call not in PARTIAL:
            assert snapshot(m) == before, f"{call}({x}, {y}) failed with {e} but changed state"
    m.check()
