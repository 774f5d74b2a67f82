"""Swap entries (mmemu.swap): Process.swap_out writes exclusive anonymous pages to the
emulated swap device; the PTEs become swap entries (VmSwap, pagemap bit 62); fork copies
them (the slot's count rises; COW page tables copy such a table instead of sharing it),
zap and exit free them, and a fault reads the data back. Runs in every fork design."""
import mmemu
from conftest import PG, PRIV, RW


def _setup(n=64):
    m = mmemu.Machine("256M")
    p = m.spawn()
    a = p.mmap(0, n * PG, RW, PRIV)
    p.write(a, bytes(range(256)) * (n * PG // 256))
    return m, p, a


def test_swap_out_and_in_keeps_data():
    m, p, a = _setup()
    before = p.read(a, 64 * PG)
    assert p.swap_out(a, 32 * PG) == 32
    st = p.status()
    assert st["VmSwap"] == 128 and st["RssAnon"] == 128
    assert m.meminfo()["SwapTotal"] - m.meminfo()["SwapFree"] == 128
    pm = p.pagemap(a, 32)
    assert all((int(e) >> 62) & 1 and not (int(e) >> 63) for e in pm)
    m.check()
    assert p.read(a, 64 * PG) == before
    assert p.status()["VmSwap"] == 0 and p.status()["RssAnon"] == 256
    assert m.meminfo()["SwapFree"] == m.meminfo()["SwapTotal"]
    assert m.vmstat()["pswpin"] == 32 and m.vmstat()["pswpout"] == 32
    m.check()


def test_swapped_in_exclusive_page_is_writable_without_a_copy():
    m, p, a = _setup(4)
    p.swap_out(a, 4 * PG)
    p.read(a, 1)
    e = int(p.pagemap(a, 1)[0])
    assert (e >> 63) & 1 and (e >> 56) & 1
    ev = m.vmstat()
    p.write(a, b"z")
    assert (m.vmstat() - ev)["pages_copied"] == 0
    m.check()


def test_fork_duplicates_swap_entries():
    m, p, a = _setup()
    p.swap_out(a, 16 * PG)
    c = p.fork()
    m.check()
    assert c.status()["VmSwap"] == 64 and p.status()["VmSwap"] == 64
    assert m.meminfo()["SwapTotal"] - m.meminfo()["SwapFree"] == 64    # slots, not entries
    c.write(a + 3 * PG, b"child")
    assert p.read(a + 3 * PG, 5) == bytes(range(5))
    assert c.read(a + 3 * PG, 5) == b"child"
    m.check()
    p.munmap(a, 8 * PG)
    m.check()
    c.exit()
    m.check()
    assert p.status()["VmSwap"] == 32
    p.exit()
    m.check()
    assert m.meminfo()["SwapFree"] == m.meminfo()["SwapTotal"]


def test_dontneed_and_exit_free_slots():
    m, p, a = _setup()
    p.swap_out(a, 64 * PG)
    p.madvise(a, 32 * PG, mmemu.MADV_DONTNEED)
    assert p.status()["VmSwap"] == 128
    assert p.read(a, 4) == b"\0\0\0\0"
    m.check()
    p.exit()
    assert m.meminfo()["SwapFree"] == m.meminfo()["SwapTotal"]
    m.check()


def test_swap_entries_move_with_mremap_and_survive_mprotect():
    m, p, a = _setup(16)
    p.swap_out(a, 16 * PG)
    p.mprotect(a, 16 * PG, mmemu.PROT_READ)
    b = p.mremap(a, 16 * PG, 16 * PG, mmemu.MREMAP_MAYMOVE | mmemu.MREMAP_FIXED, a - (1 << 30))
    m.check()
    assert p.status()["VmSwap"] == 64
    assert p.read(b + 5, 3) == bytes([5, 6, 7])
    m.check()


def test_cow_fork_copies_tables_with_swap_entries():
    m = mmemu.Machine("256M", cow_pgtable=True)
    p = m.spawn()
    a = p.mmap(0, 4 << 20, RW, PRIV)
    p.touch(a, 4 << 20)
    p.swap_out(a, 8 * PG)                    # the first 2 MiB span holds swap entries
    ev = m.vmstat()
    c = p.fork()
    w = m.vmstat() - ev
    assert w["cow_pte_tables_shared"] == 1 and w["fork_pte_tables_copied"] == 1
    m.check()
    assert c.read(a, 4) == b"\0\0\0\0"
    m.check()
