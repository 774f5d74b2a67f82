"""VMA merging: selftests/mm merge.c, LTP vma01, SCENARIOS 28 (SEMANTICS 1.3, R9.3)."""
from __future__ import annotations

import pytest

from mmemu import MAP_FIXED, MAP_NORESERVE, MREMAP_FIXED, MREMAP_MAYMOVE, PROT_EXEC, PROT_NONE, PROT_READ
from conftest import PG, PRIV, RW

RWX = RW | PROT_EXEC


@pytest.fixture
def carveout(p):
    """merge.c FIXTURE_SETUP: a 30-page PROT_NONE region to map over."""
    return p.mmap(0x40000000, 30 * PG, PROT_NONE, PRIV | MAP_FIXED)


def vma_range(p, addr):
    v = p.mm.vma_at(addr)
    return (v.start, v.end)


@pytest.mark.parametrize("case", ["left", "right"])
def test_mprotect_unfaulted_left_right(m, p, carveout, case):
    ptr = p.mmap(carveout + PG, 10 * PG, RW, PRIV | MAP_FIXED | MAP_NORESERVE)
    if case == "left":
        p.mprotect(ptr, 5 * PG, PROT_READ)
        p.write(ptr + 5 * PG, b"x")
        p.mprotect(ptr + 5 * PG, 5 * PG, PROT_READ)
    else:
        p.mprotect(ptr + 5 * PG, 5 * PG, PROT_READ)
        p.write(ptr, b"x")
        p.mprotect(ptr, 5 * PG, PROT_READ)
    assert vma_range(p, ptr) == (ptr, ptr + 10 * PG)


def test_mprotect_unfaulted_both(m, p, carveout):
    ptr = p.mmap(carveout + 2 * PG, 9 * PG, RW, PRIV | MAP_FIXED | MAP_NORESERVE)
    p.mprotect(ptr, 3 * PG, PROT_READ)
    p.mprotect(ptr + 6 * PG, 3 * PG, PROT_READ)
    p.write(ptr + 3 * PG, b"x")
    p.mprotect(ptr + 3 * PG, 3 * PG, PROT_READ)
    assert vma_range(p, ptr) == (ptr, ptr + 9 * PG)


def test_mprotect_faulted_left_unfaulted_right(m, p, carveout):
    ptr = p.mmap(carveout + 2 * PG, 9 * PG, RW, PRIV | MAP_FIXED | MAP_NORESERVE)
    p.mprotect(ptr + 6 * PG, 3 * PG, PROT_READ)
    p.write(ptr, b"x")
    p.mprotect(ptr, 3 * PG, PROT_READ)
    p.mprotect(ptr + 3 * PG, 3 * PG, PROT_READ)
    assert vma_range(p, ptr) == (ptr, ptr + 9 * PG)


def test_mprotect_unfaulted_left_faulted_right(m, p, carveout):
    ptr = p.mmap(carveout + 2 * PG, 9 * PG, RW, PRIV | MAP_FIXED | MAP_NORESERVE)
    p.mprotect(ptr, 3 * PG, PROT_READ)
    p.write(ptr + 3 * PG, b"x")
    p.mprotect(ptr + 6 * PG, 3 * PG, PROT_READ)
    p.mprotect(ptr + 3 * PG, 3 * PG, PROT_READ)
    assert vma_range(p, ptr) == (ptr, ptr + 9 * PG)


def test_forked_target_vma(m, p, carveout):
    """merge.c forked_target_vma; SCENARIOS 28."""
    ptr = p.mmap(carveout + PG, 5 * PG, RW, PRIV | MAP_FIXED)
    p.write(ptr, b"x")
    c = p.fork()
    for i in range(5):
        c.write(ptr + i * PG, b"x")
    c.mmap(ptr + 5 * PG, 5 * PG, RW, PRIV | MAP_FIXED)
    assert vma_range(c, ptr) == (ptr, ptr + 5 * PG)


def test_forked_source_vma(m, p, carveout):
    """merge.c forked_source_vma: mprotect the forked VMA to match a neighbour; no merge."""
    ptr = p.mmap(carveout + PG, 5 * PG, RW, PRIV | MAP_FIXED | MAP_NORESERVE)
    p.write(ptr, b"x")
    c = p.fork()
    for i in range(5):
        c.write(ptr + i * PG, b"x")
    ptr2 = c.mmap(carveout + 6 * PG, 5 * PG, RWX, PRIV | MAP_FIXED | MAP_NORESERVE)
    assert vma_range(c, ptr2) == (ptr2, ptr2 + 5 * PG)
    c.mprotect(ptr, 5 * PG, RWX)
    assert vma_range(c, ptr2) == (ptr2, ptr2 + 5 * PG)


def test_ltp_vma01(m, p):
    """LTP vma01: after fork the child's VMA does not merge with a new neighbour; in the
    parent (whose anon_vma chain is singular) the same mmap merges."""
    u = p.mmap(0, 3 * PG, RW, PRIV)
    p.munmap(u + 2 * PG, PG)
    p.write(u, b"x")
    c = p.fork()
    c.mmap(u + 2 * PG, PG, RW, PRIV | MAP_FIXED)
    assert vma_range(c, u) == (u, u + 2 * PG) and vma_range(c, u + 2 * PG) == (u + 2 * PG, u + 3 * PG)
    p.mmap(u + 2 * PG, PG, RW, PRIV | MAP_FIXED)
    assert vma_range(p, u) == (u, u + 3 * PG)


def _mv(p, addr, n, to):
    return p.mremap(addr, n * PG, n * PG, MREMAP_MAYMOVE | MREMAP_FIXED, to)


def test_mremap_unfaulted_to_faulted(m, p, carveout):
    ptr = p.mmap(carveout + PG, 5 * PG, RW, PRIV | MAP_FIXED)
    ptr2 = p.mmap(carveout + 7 * PG, 5 * PG, RW, PRIV | MAP_FIXED)
    ptr2 = _mv(p, ptr2, 5, ptr2 + 1000 * PG)
    p.write(ptr, b"x")
    _mv(p, ptr2, 5, ptr + 5 * PG)
    assert vma_range(p, ptr) == (ptr, ptr + 10 * PG)


def test_mremap_unfaulted_behind_faulted(m, p, carveout):
    ptr = p.mmap(carveout + 6 * PG, 5 * PG, RW, PRIV | MAP_FIXED)
    ptr2 = p.mmap(carveout + 14 * PG, 5 * PG, RW, PRIV | MAP_FIXED)
    ptr2 = _mv(p, ptr2, 5, ptr2 + 1000 * PG)
    p.write(ptr, b"x")
    ptr2 = _mv(p, ptr2, 5, carveout + PG)
    assert vma_range(p, ptr2) == (ptr2, ptr2 + 10 * PG)


def test_mremap_unfaulted_between_faulted(m, p, carveout):
    ptr = p.mmap(carveout + PG, 5 * PG, RW, PRIV | MAP_FIXED)
    ptr2 = p.mmap(carveout + 7 * PG, 5 * PG, RW, PRIV | MAP_FIXED)
    ptr3 = p.mmap(carveout + 14 * PG, 5 * PG, RW, PRIV | MAP_FIXED)
    ptr3 = _mv(p, ptr3, 5, ptr3 + 2000 * PG)
    ptr2 = _mv(p, ptr2, 5, ptr2 + 1000 * PG)
    p.write(ptr, b"x")
    p.write(ptr3, b"x")
    ptr3 = _mv(p, ptr3, 5, ptr + 10 * PG)
    _mv(p, ptr2, 5, ptr + 5 * PG)
    assert vma_range(p, ptr) == (ptr, ptr + 10 * PG)
    assert vma_range(p, ptr3) == (ptr3, ptr3 + 5 * PG)


def test_mremap_unfaulted_between_faulted_unfaulted(m, p, carveout):
    ptr = p.mmap(carveout + PG, 5 * PG, RW, PRIV | MAP_FIXED)
    ptr2 = p.mmap(carveout + 7 * PG, 5 * PG, RW, PRIV | MAP_FIXED)
    ptr3 = p.mmap(carveout + 14 * PG, 5 * PG, RW, PRIV | MAP_FIXED)
    ptr3 = _mv(p, ptr3, 5, ptr3 + 2000 * PG)
    ptr2 = _mv(p, ptr2, 5, ptr2 + 1000 * PG)
    p.write(ptr, b"x")
    _mv(p, ptr3, 5, ptr + 10 * PG)
    _mv(p, ptr2, 5, ptr + 5 * PG)
    assert vma_range(p, ptr) == (ptr, ptr + 15 * PG)


def test_mremap_unfaulted_between_correctly_placed_faulted(m, p, carveout):
    ptr = p.mmap(carveout + PG, 15 * PG, RW, PRIV | MAP_FIXED)
    p.write(ptr, b"x")
    p.munmap(ptr + 5 * PG, 5 * PG)
    ptr2 = p.mmap(carveout + 20 * PG, 5 * PG, RW, PRIV | MAP_FIXED)
    _mv(p, ptr2, 5, ptr + 5 * PG)
    assert vma_range(p, ptr) == (ptr, ptr + 15 * PG)


def test_mremap_correct_placed_faulted(m, p, carveout):
    ptr = p.mmap(carveout + PG, 15 * PG, RW, PRIV | MAP_FIXED)
    p.write(ptr, b"x")
    ptr3 = _mv(p, ptr + 10 * PG, 5, ptr + 10 * PG + 2000 * PG)
    ptr2 = _mv(p, ptr + 5 * PG, 5, ptr + 5 * PG + 1000 * PG)
    _mv(p, ptr2, 5, ptr + 5 * PG)
    assert vma_range(p, ptr) == (ptr, ptr + 10 * PG)
    ptr = _mv(p, ptr, 5, ptr + 1000 * PG)
    ptr = _mv(p, ptr, 5, carveout + PG)
    assert vma_range(p, ptr) == (ptr, ptr + 10 * PG)
    assert vma_range(p, ptr3) == (ptr3, ptr3 + 5 * PG)
