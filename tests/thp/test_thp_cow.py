"""The THP variants of tools/testing/selftests/mm/cow.c that apply to mmemu (no vmsplice,
no GUP pins, no swap of THPs): "Basic COW after fork()" and "... with mprotect()
optimization" on a PMD-mapped THP, a PTE-mapped THP, a single PTE of a THP, a partially
mremap()'ed THP and a partially shared THP (do_run_with_thp's THP_RUN_PMD, _PTE,
_SINGLE_PTE, _PARTIAL_MREMAP, _PARTIAL_SHARED). The child takes a copy of the memory, the
parent then writes 0xff over it (after an mprotect(PROT_READ) / mprotect(RW) round trip
in the second test), and the child must still read its copy; the parent reads its writes.
Run in every fork design."""
import pytest

import mmemu
from conftest import PG, PRIV, RW

THP = 2 << 20
A = 0x300000000000


def prepare(m, variant):
    """do_run_with_thp: (process, mem, size) after the variant's setup."""
    p = m.spawn()
    mem = p.mmap(A, THP, RW, PRIV | mmemu.MAP_FIXED)
    p.madvise(mem, THP, mmemu.MADV_HUGEPAGE)
    p.write(mem, bytes(THP))                        # memset(mem, 0, thpsize): a THP
    assert next(e for e in p.smaps() if e["start"] == mem)["AnonHugePages"] == 2048
    size = THP
    if variant in ("pte", "single_pte"):
        p.mprotect(mem + PG, PG, mmemu.PROT_READ)
        p.mprotect(mem + PG, PG, RW)
    if variant == "single_pte":
        p.madvise(mem + PG, THP - PG, mmemu.MADV_DONTNEED)
        size = PG
    elif variant == "partial_mremap":
        half = THP // 2
        tmp = p.mmap(0, half, mmemu.PROT_NONE, PRIV)
        assert p.mremap(mem + half, half, half, mmemu.MREMAP_MAYMOVE | mmemu.MREMAP_FIXED, tmp) == tmp
        size = half
    elif variant == "partial_shared":
        p.madvise(mem + PG, THP - PG, mmemu.MADV_DONTFORK)
        p.fork().exit()
        p.madvise(mem + PG, THP - PG, mmemu.MADV_DOFORK)
    return p, mem, size


@pytest.mark.parametrize("do_mprotect", [False, True], ids=["basic", "mprotect"])
@pytest.mark.parametrize("variant", ["pmd", "pte", "single_pte", "partial_mremap", "partial_shared"])
def test_cow_in_parent(variant, do_mprotect, fork_design):
    m = mmemu.Machine("256M")
    p, mem, size = prepare(m, variant)
    p.write(mem, bytes(range(256)) * (size // 256))
    child = p.fork()
    old = child.read(mem, size)                     # child_memcmp_fn: its copy
    if do_mprotect:
        p.mprotect(mem, size, mmemu.PROT_READ)
        p.mprotect(mem, size, RW)
    p.write(mem, b"\xff" * size)
    assert child.read(mem, size) == old, "the parent's write leaked into the child"
    assert p.read(mem, size) == b"\xff" * size
    m.check()
    child.exit()
    assert p.read(mem, size) == b"\xff" * size
    m.check()
    p.exit()
    m.check()
    assert m.meminfo()["AnonPages"] == 0 and m.meminfo()["AnonHugePages"] == 0
