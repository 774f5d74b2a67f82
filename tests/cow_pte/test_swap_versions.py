"""Swap entries under the series' versions (docs/series-versions.md, "swap entries").

v3-v5 share a PTE table that holds swap entries: copy_cow_pte_range runs the per-entry copy
with dst == src, so copy_nonpresent_pte duplicates each swap entry (swap_duplicate: the
slot's count rises) and the child's MM_SWAPENTS counts it (v5 20230414142341.354556;
SEMANTICS CP2 step 3); a swap fault through the shared table breaks it first
(handle_cow_pte_fault before do_swap_page), the break copies the entries verbatim (already
accounted), and a holder that drops the still-shared table gives its references back
(free_swap_and_cache). odf, v1 and v2 copy such a table (v1 would share it without
swap_duplicate, its "TODO: Handle the swap"). Counts below are worked out by hand: 8
pages of the first 2 MiB span are swapped out, 504 stay present; the second span holds
512 present pages."""
import pytest

import mmemu
from conftest import PG, PRIV, RW

pytestmark = pytest.mark.one_design
SPAN = 2 << 20


def _parent(version):
    m = mmemu.Machine("256M", cow_pte_version=version)
    p = m.spawn()
    if version in ("v3", "v4", "v5"):
        p.prctl(mmemu.PR_SET_COW_PTE, 1)
    a = p.mmap(0, 2 * SPAN + SPAN, RW, PRIV)
    a += (-a) % SPAN                        # two whole 2 MiB spans
    p.write(a, bytes(range(256)) * (2 * SPAN // 256))
    assert p.swap_out(a, 8 * PG) == 8
    return m, p, a


def _fork(m, p, version):
    if version == "v1":
        return p.clone3(mmemu.CLONE_COW_PGTABLE)
    if version == "v2":
        m.sysctl["vm.cow_pte"] = p.pid
    if version == "odf":                    # mmemu's switch (ODF's /proc/PID/use_odf)
        return p.fork(cow_pgtable=True)
    return p.fork()


@pytest.mark.parametrize("version", ["v3", "v4", "v5"])
def test_v3_to_v5_share_a_table_with_swap_entries_and_duplicate_them(version):
    m, p, a = _parent(version)
    ev = m.vmstat()
    c = _fork(m, p, version)
    w = m.vmstat() - ev
    assert w["cow_pte_tables_shared"] == 2 and w["fork_pte_tables_copied"] == 0
    assert w["fork_ptes_accounted"] == 512 + 512        # 504 pages + 8 swap entries, 512
    assert c.status()["VmSwap"] == 32 and p.status()["VmSwap"] == 32
    assert c.status()["RssAnon"] == 4 * (1024 - 8)
    # 8 slots, each named by two entries (one shared table, two holders)
    assert m.meminfo()["SwapTotal"] - m.meminfo()["SwapFree"] == 32
    m.check()
    # a read of a swapped-out page through the shared table: the table breaks (a swap
    # fault, not v3-v5's read fault that keeps the share), then do_swap_page reads it in
    ev = m.vmstat()
    assert c.read(a + 3 * PG, 4) == bytes([0, 1, 2, 3])
    w = m.vmstat() - ev
    assert w["cow_pte_tables_duplicated"] == 1 and w["pswpin"] == 1
    assert c.status()["VmSwap"] == 28 and p.status()["VmSwap"] == 32
    m.check()
    # the child exits: the parent's table of span 1 is still shared with nobody (reused
    # on its next fault); span 0's copy in the child is zapped, its 7 swap entries freed
    c.exit()
    m.check()
    assert m.meminfo()["SwapTotal"] - m.meminfo()["SwapFree"] == 32
    assert p.read(a, 8 * PG) == bytes(range(256)) * (8 * PG // 256)
    assert p.status()["VmSwap"] == 0
    assert m.meminfo()["SwapFree"] == m.meminfo()["SwapTotal"]
    m.check()


def test_v5_a_holder_dropping_the_shared_table_gives_its_swap_references_back():
    m, p, a = _parent("v5")
    c = _fork(m, p, "v5")
    c2 = _fork(m, p, "v5")
    assert c2.status()["VmSwap"] == 32
    m.check()
    c.munmap(a, SPAN)           # the whole span while shared: entries stay, counts go
    assert c.status()["VmSwap"] == 0
    assert p.status()["VmSwap"] == c2.status()["VmSwap"] == 32
    m.check()
    c2.exit()
    m.check()
    assert p.read(a + 7 * PG, 2) == bytes([0, 1])
    m.check()


@pytest.mark.parametrize("version", ["odf", "v1", "v2"])
def test_odf_v1_v2_copy_a_table_with_swap_entries(version):
    m, p, a = _parent(version)
    ev = m.vmstat()
    c = _fork(m, p, version)
    w = m.vmstat() - ev
    assert w["cow_pte_tables_shared"] == 1 and w["fork_pte_tables_copied"] == 1
    assert c.status()["VmSwap"] == 32
    m.check()
    assert c.read(a + 3 * PG, 4) == bytes([0, 1, 2, 3])
    c.exit()
    m.check()
