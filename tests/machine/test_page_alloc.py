"""The page allocator (mm/page_alloc.c): a buddy allocator of orders 0..10 behind
per-cpu-pages lists, its /proc/buddyinfo twin and the checker's view of its free lists.

Every expected buddyinfo below is worked out by hand from the allocator's rules: memory
never handed out (the gap) counts as the largest aligned blocks it holds; data blocks come
from the bottom of memory (the lowest aligned block, split keeping its lowest part), table
blocks from the top; order-0 frees go to the pcp lists, which buddyinfo does not count,
until drain_pages (or a pcp list beyond its high mark) gives them to the buddy lists.
"""
import re

import numpy as np
import pytest

import mmemu
from mmemu._core.physmem import BUDDY_FLAG, MAX_ORDER, ORDER_SHIFT
from conftest import PG, PRIV, RW

pytestmark = pytest.mark.one_design

PG_USED = 1


def ones(*tail):
    """buddyinfo of a machine whose frames 1..1023 are free (one block of each order 0..9,
    the zero page being frame 0), followed by `tail` for order 10."""
    return (1,) * 10 + tail


def mem_free_pages(m):
    return m.meminfo()["MemFree"] // 4


def assert_free_identity(m):
    """MemFree = the blocks buddyinfo counts + the frames on the pcp lists."""
    info = m.buddyinfo()
    assert mem_free_pages(m) == sum(n << o for o, n in enumerate(info)) + m.phys.pcp_pages


def test_new_machine_is_the_gap_as_blocks():
    m = mmemu.Machine("64M")                    # 16384 frames, frame 0 the zero page
    assert m.buddyinfo() == ones(15)            # 1..1023, then 15 blocks of 1024
    assert m.phys.pcp_pages == 0
    assert m.phys.free_lists()["gap"] == (1, 16384)
    assert_free_identity(m)
    small = mmemu.Machine("1M")                 # 256 frames: 1, 2-3, 4-7, ..., 128-255
    assert small.buddyinfo() == (1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0)
    m.check()
    small.check()


def test_str_is_the_kernels_line():
    """Formatted like the live kernel's /proc/buddyinfo (mm/vmstat.c frag_show_print):
    the host's own counts, printed by BuddyInfo, give back the host's line."""
    with open("/proc/buddyinfo") as f:
        lines = f.read().splitlines(keepends=True)
    line = next((ln for ln in lines if re.search(r"zone +Normal ", ln)), lines[0])
    counts = tuple(int(x) for x in line.split()[4:])
    assert len(counts) == MAX_ORDER + 1
    same_zone = re.sub(r"^Node \d+, zone +\S+ ", "Node 0, zone   Normal ", line)
    assert str(mmemu.stats.BuddyInfo(counts)) == same_zone
    assert str(mmemu.Machine("64M").buddyinfo()) == (
        "Node 0, zone   Normal" + "      1" * 10 + "     15 \n")


def test_split_then_free_back_into_the_gap():
    m = mmemu.Machine("64M")
    ph = m.phys
    # order 3, data: the lowest aligned block of 8 is 8-15; 1, 2-3, 4-7 go on the lists
    assert ph._alloc_pages(3) == 8
    assert m.buddyinfo() == (1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 15)
    assert ph._alloc_pages(0) == 1              # the order-0 block
    assert ph._alloc_pages(1) == 2              # the order-1 block
    assert m.buddyinfo() == (0, 0, 1, 0, 1, 1, 1, 1, 1, 1, 15)
    assert_free_identity(m)
    ph._free_pages(8, 3)        # 8-15 touches the gap (16-): it joins it, and so does 4-7
    assert ph.free_lists()["gap"] == (4, 16384)
    assert m.buddyinfo() == (0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 15)
    ph._free_pages(2, 1)        # 2-3 joins the gap too; 1 is still in use
    assert m.buddyinfo() == (0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 15)
    ph._free_pages(1, 0)        # order 0: onto the pcp list, not counted
    assert m.buddyinfo() == (0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 15)
    assert ph.pcp_pages == 1
    assert_free_identity(m)
    ph.drain_pages()
    assert m.buddyinfo() == ones(15) and ph.pcp_pages == 0
    m.check()


def test_order0_frees_merge_with_their_buddies_when_drained():
    m = mmemu.Machine("64M")
    ph = m.phys
    assert [ph._alloc_pages(0) for _ in range(9)] == list(range(1, 10))    # the gap, in order
    for pfn in (5, 6, 7, 8):
        ph._free_pages(pfn, 0)
    assert ph.pcp_pages == 4 and m.buddyinfo() == (0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 15)
    ph.drain_pages()            # coldest first: 5 alone, 6 alone, 7 + 6 = 6-7, 8 alone (9 used)
    lists = ph.free_lists()
    pfns, orders, _ = lists["blocks"]
    assert sorted(zip(pfns.tolist(), orders.tolist())) == [(5, 0), (6, 1), (8, 0)]
    # the gap 10-16383: 10-11, 12-15, 16-31, ..., 512-1023, 15 x 1024
    assert m.buddyinfo() == (2, 2, 1, 0, 1, 1, 1, 1, 1, 1, 15)
    ph._free_pages(4, 0)
    ph.drain_pages()            # 4 + 5 = 4-5, + 6-7 = 4-7 (0-3 is in use)
    pfns, orders, _ = ph.free_lists()["blocks"]
    assert sorted(zip(pfns.tolist(), orders.tolist())) == [(4, 2), (8, 0)]
    assert m.buddyinfo() == (1, 1, 2, 0, 1, 1, 1, 1, 1, 1, 15)
    assert_free_identity(m)
    for pfn in (1, 2, 3, 9):
        ph._free_pages(pfn, 0)
    ph.drain_pages()            # 9 joins the gap, then 8 and 4-7; 3 + 2, 1 alone ... all in the gap
    assert m.buddyinfo() == ones(15)
    m.check()


def test_orders_9_and_10_from_both_ends():
    m = mmemu.Machine("64M")
    ph = m.phys
    assert ph._alloc_pages(9) == 512            # 1-511 go on the lists (orders 0..8)
    assert ph._alloc_pages(10) == 1024
    assert ph._alloc_pages(10, table=True) == 15360     # tables: the top of memory
    assert ph.used_ranges() == ((0, 2048), (15360, 16384))
    assert m.buddyinfo() == (1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 13)
    assert m.meminfo()["MemFree"] == (16384 - 1 - 512 - 2048) * 4
    flags = ph.flags
    assert np.all(flags[512:2048] == PG_USED) and np.all(ph.refcount[15360:] == 1)
    assert_free_identity(m)
    ph._free_pages(1024, 10)
    ph._free_pages(512, 9)
    ph._free_pages(15360, 10)
    assert m.buddyinfo() == ones(15)
    m.check()


def test_a_block_that_held_data_is_zeroed():
    m = mmemu.Machine("64M")
    p = m.spawn()
    a = p.mmap(0, 16 * PG, RW, PRIV)
    p.write(a, b"\xaa" * (16 * PG))             # frames 1..16 hold data
    assert (p.pagemap(a, 16) & ((1 << 55) - 1)).tolist() == list(range(1, 17))
    p.munmap(a, 16 * PG)
    m.phys.drain_pages()                        # 1..16 and the freed tables rejoin the gap
    zeroed = m.vmstat()["pages_zeroed"]
    assert m.phys._alloc_pages(4) == 16         # the lowest aligned 16: 16-31, frame 16 had data
    assert m.vmstat()["pages_zeroed"] == zeroed + 1
    assert m.phys._alloc_pages(3) == 8          # from 1-15 on the lists now: 8-15 all had data
    assert m.vmstat()["pages_zeroed"] == zeroed + 9
    assert all(m.phys.frame(pfn) == bytes(PG) for pfn in range(8, 32))
    m.phys._free_pages(16, 4)
    m.phys._free_pages(8, 3)
    p.exit()
    m.check()


def test_fragmented_memory_fails_high_orders_but_not_order_0():
    m = mmemu.Machine("1M")                     # 256 frames
    ph = m.phys
    got = [ph._alloc_pages(0) for _ in range(256)]
    assert got[:255] == list(range(1, 256)) and got[255] == -1
    for pfn in range(1, 256, 2):                # every odd frame: no two free buddies
        ph._free_pages(pfn, 0)
    ph.drain_pages()
    assert m.buddyinfo() == (128, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    assert m.meminfo()["MemFree"] == 128 * 4
    failed = ph.alloc_failed
    for order in range(1, MAX_ORDER + 1):
        assert ph._alloc_pages(order) == -1
    assert ph.alloc_failed == failed + MAX_ORDER
    assert m.buddyinfo() == (128, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    # 255 touched the (empty) gap at 256 and joined it; the order-0 list's head is 253,
    # the last frame put on it, and a free block is taken before the gap
    assert ph.free_lists()["gap"] == (255, 256)
    assert ph._alloc_pages(0) == 253
    # 2 on the pcp list, its buddy 3 on the buddy lists: an order-1 allocation finds
    # nothing, drains the pcp lists (2 and 3 merge) and takes 2-3
    ph._free_pages(2, 0)
    ph._free_pages(253, 0)
    assert m.buddyinfo() == (127, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0) and ph.pcp_pages == 2
    assert ph._alloc_pages(1) == 2
    assert ph.pcp_pages == 0 and m.buddyinfo() == (127, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    ph._free_pages(2, 1)
    for pfn in range(4, 256, 2):
        ph._free_pages(pfn, 0)
    ph.drain_pages()
    assert m.buddyinfo() == (1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0)
    m.check()


@pytest.mark.parametrize("order", range(MAX_ORDER + 1))
def test_fail_page_alloc_at_every_order(order):
    m = mmemu.Machine("64M")
    ph = m.phys
    before, calls, failed = m.buddyinfo(), ph.alloc_calls, ph.alloc_failed
    m.fail_page_alloc(1)
    assert ph._alloc_pages(order) == -1
    assert m.buddyinfo() == before and ph.nr_free == 16383
    assert (ph.alloc_calls, ph.alloc_failed) == (calls + 1, failed + 1)
    assert not ph.fail_pending
    pfn = ph._alloc_pages(order)
    assert pfn == (1 if order == 0 else 1 << order)
    assert ph.nr_free == 16383 - (1 << order)
    ph._free_pages(pfn, order)
    ph.drain_pages()
    assert m.buddyinfo() == before
    m.check()


def test_reservations_of_higher_orders():
    m = mmemu.Machine("64M")
    ph = m.phys
    calls = ph.alloc_calls
    assert ph.reserve(2, order=3)              # two table blocks: 16376-16383, 16368-16375
    assert ph.reservation_depth == 1 and ph.alloc_calls == calls + 2
    # the gap 1-16367: 1..1023, 14 x 1024 (1024-15359), 15360-16367 as 512+256+...+16
    reserved = (1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 14)
    assert m.buddyinfo() == reserved
    assert ph.nr_free == 16383 - 16 and ph.available == 16383
    m.fail_page_alloc(1)                        # reserved blocks cannot fail
    assert ph._alloc_pages(3, table=True) == 16376      # first reserved, first handed out
    assert ph._alloc_pages(3, table=True) == 16368
    assert ph.fail_pending and ph.alloc_calls == calls + 2
    assert ph._alloc_pages(3, table=True) == -1          # the pool is empty: injected
    assert not ph.fail_pending and ph.alloc_failed == 1
    assert ph.reserve(1, scope=False, order=3)  # tops the scope up: 16360-16367
    assert ph.alloc_calls == calls + 4 and ph.available == ph.nr_free + 8
    ph.release()                               # 16360-16367 goes back into the gap
    assert ph.reservation_depth == 0 and m.buddyinfo() == reserved
    # a data block: the lowest aligned 512 frames, 1-511 go on the lists
    assert ph.reserve(1, order=9, table=False)
    assert ph._alloc_pages(9) == 512 and ph.alloc_calls == calls + 5
    ph.release()
    after9 = (1, 1, 1, 1, 2, 2, 2, 2, 2, 1, 14)
    assert m.buddyinfo() == after9
    # reservations that cannot be had take nothing
    assert not ph.reserve(16, order=10)        # 15855 free frames hold at most 15: refused
    assert ph.alloc_calls == calls + 5 and ph.alloc_failed == 2
    assert not ph.reserve(15, order=10)        # 14 taken, the 15th fails, 14 given back
    assert ph.alloc_calls == calls + 5 + 15 and ph.alloc_failed == 3
    assert ph.reservation_depth == 0 and m.buddyinfo() == after9
    ph._free_pages(512, 9)
    ph._free_pages(16376, 3)
    ph._free_pages(16368, 3)
    assert m.buddyinfo() == ones(15)
    m.check()


def test_free_identity_and_checker_through_a_workload():
    """A fork-heavy run with the pcp lists cut short, so that frees keep reaching the buddy
    lists: after every step MemFree is buddyinfo plus the pcp lists, and check() holds."""
    m = mmemu.Machine("64M")
    m.phys.pcp_limits = (16, 4)
    p = m.spawn(layout="typical")
    a = p.mmap(0, 4 << 20, RW, PRIV)
    p.write(a, b"x" * (3 << 20))
    kids = [p.fork() for _ in range(3)]
    for i, c in enumerate(kids):
        c.write(a + i * (1 << 20), b"y" * (1 << 20))
        assert_free_identity(m)
        m.check()
    p.munmap(a + (1 << 20), 2 << 20)
    kids[1].exit()
    assert m.phys.pcp_pages <= 2 * 16
    assert_free_identity(m)
    m.check()
    for c in (kids[0], kids[2], p):
        c.exit()
    m.phys.drain_pages()
    assert m.buddyinfo() == ones(15)
    m.check()


def test_pcp_limits_are_validated():
    m = mmemu.Machine("64M")
    assert m.phys.pcp_limits == (1024, 63)      # 16384 / 16, Linux's batch
    for bad, err in (((0, 1), ValueError), ((8, 9), ValueError), ((1 << 63, 1), ValueError),
                     (5, TypeError), (("a", 1), TypeError)):
        with pytest.raises(err):
            m.phys.pcp_limits = bad
    assert m.phys.pcp_limits == (1024, 63)
    assert mmemu.Machine("64K").phys.pcp_limits == (16, 16)


# ---------------------------------------------------------------- the checker
def blocks_machine():
    """A machine with free blocks on the lists: 1 (order 0), 2-3 (1), 4-7 (2); 8-15 in use."""
    m = mmemu.Machine("64M")
    assert m.phys._alloc_pages(3) == 8
    return m


def test_checker_accepts_blocks_and_needs_them_freed():
    m = blocks_machine()
    with pytest.raises(mmemu.InvariantError, match="in use but neither mapped nor cached"):
        m.check()
    m.phys._free_pages(8, 3)
    m.check()


@pytest.mark.parametrize("poke, pattern", [
    (("buddy_next", 4, 12), "links back|more than"),
    (("buddy_next", 4, 1 << 40), "outside memory"),
    (("flags", 2, 0), "PG_BUDDY frames and free block heads differ"),
    (("flags", 5, PG_USED), "frames in use on the free lists"),
    (("flags", 4, BUDDY_FLAG | (1 << ORDER_SHIFT)), "another order"),
    (("flags", 9, BUDDY_FLAG), "PG_BUDDY frames and free block heads differ"),
])
def test_checker_sees_corrupted_free_lists(poke, pattern):
    m = blocks_machine()
    m.phys._debug_poke(*poke)
    with pytest.raises(mmemu.InvariantError, match=pattern):
        m.check()


class FakePhys:
    """Free lists as PhysMem.free_lists() gives them, for states the allocator never makes."""

    nframes = 64

    def __init__(self, blocks, gap):
        self.blocks, self.gap = blocks, gap

    def free_lists(self):
        pfns, orders = (np.array(x, dtype=np.int64) for x in zip(*self.blocks))
        counts = np.zeros((2, MAX_ORDER + 1), dtype=np.int64)
        np.add.at(counts, (0, orders), 1)
        return {"pcp": (np.zeros(0, np.int64), np.zeros(0, np.int64)),
                "blocks": (pfns, orders, np.zeros(len(pfns), np.int64)),
                "counts": counts, "gap": self.gap, "problems": []}


@pytest.mark.parametrize("blocks, gap, pattern", [
    ([(4, 1), (6, 1)], (16, 64), "not merged with their free buddy: 4, 6"),
    ([(8, 3)], (16, 64), "not merged into the gap: 8"),
    ([(4, 2)], (8, 64), "not merged into the gap: 4"),
    ([(4, 2), (6, 0)], (16, 64), "free memory listed twice, from pfn 6"),
    ([(6, 2)], (16, 64), "misaligned"),
])
def test_checker_sees_blocks_that_should_have_merged(blocks, gap, pattern):
    from mmemu.check import _check_free_lists
    phys = FakePhys(blocks, gap)
    flags = np.full(16, PG_USED, dtype=np.uint32)      # used ranges [0, 16), [64, 64)
    for pfn, order in blocks:
        flags[pfn:pfn + (1 << order)] = 0
        flags[pfn] = BUDDY_FLAG | (order << ORDER_SHIFT)
    nr_free = sum(1 << o for _, o in blocks) + gap[1] - gap[0]
    problems = _check_free_lists(phys, flags, (16, 64), nr_free)
    assert any(re.search(pattern, s) for s in problems), problems


def test_checker_accepts_a_correct_fake():
    from mmemu.check import _check_free_lists
    flags = np.full(16, PG_USED, dtype=np.uint32)
    flags[4:8] = 0
    flags[4] = BUDDY_FLAG | (2 << ORDER_SHIFT)
    assert _check_free_lists(FakePhys([(4, 2)], (16, 64)), flags, (16, 64), 4 + 48) == []
