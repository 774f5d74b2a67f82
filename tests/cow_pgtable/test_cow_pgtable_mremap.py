"""mremap of memory under shared PMD / PUD tables (mm/mremap.c move_page_tables with
move_normal_pud / move_normal_pmd): the shared tables of both ranges are broken first,
top down (break before change), then an aligned move relinks whole tables -- the PMD
table under a PUD entry for a 1 GiB-aligned move, each PTE table under a PMD entry for a
2 MiB-aligned one -- and no PTE is moved one by one. A shared table is never relinked at
another address while shared: every holder reaches it at the same address.

Counters are exact: 1 GiB populated at a 1 GiB-aligned address (512 PTE tables under one
PMD table, under one PUD table); the classic fork's numbers are the control."""
import pytest

import mmemu
from conftest import PG, PRIV, RW
from mmemu import MAP_FIXED

pytestmark = pytest.mark.one_design      # the designs are this file's own

GIB = 1 << 30
PMD = 2 << 20
A = 0x7E8000000000 + 4 * GIB          # PGD entry 253, PUD entry 4
NEW = A + 2 * GIB                     # same PUD table, PUD entry 6
MASK = (1 << 40) - 1
RWBIT = 2
OFFSETS = (0, 5 * PMD + 3 * PG, 6 * PMD + 7 * PG, GIB - PG)      # written by the parent


def delta(m, before):
    after = m.vmstat()
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def forked(level, accounting):
    m = mmemu.Machine("4G", cow_pte_accounting=accounting, cow_pgtable=False)
    p = m.spawn()
    p.mmap(A, GIB, RW, PRIV | MAP_FIXED)
    p.touch(A, GIB)
    for off in OFFSETS:
        p.write(A + off, b"parent %d" % off)
    return m, p, p.fork(cow_pgtable=level)


def pfn(entry):
    return entry >> 12 & MASK


# (level, accounting): tables the break copies before the 1 GiB move (PUD table for a
# PUD-level fork, the PMD table, its 512 PTE tables) and the vmstat events of the breaks
WHOLE_GIB = {
    False: (0, {}),
    True: (512, {"cow_pte_tables_duplicated": 512}),
    "pmd": (513, {"cow_pmd_tables_duplicated": 1, "cow_pte_tables_duplicated": 512}),
    "pud": (514, {"cow_pud_tables_duplicated": 1, "cow_pmd_tables_duplicated": 1,
                  "cow_pte_tables_duplicated": 512}),
}


@pytest.mark.parametrize("accounting", ["deferred", "eager"])
@pytest.mark.parametrize("level", [False, True, "pmd", "pud"], ids=["classic", "pte", "pmd", "pud"])
def test_gib_aligned_move_relinks_the_whole_pmd_table(level, accounting):
    """A 1 GiB move between 1 GiB-aligned addresses in the child: after the breaks, one
    PUD entry moves (move_normal_pud): no PTE moved, no PTE table relinked one by one, and
    the child's new PUD entry links the very PMD table its old one did. The parent keeps
    its tables and bytes; the child sees its bytes at the new place, and owns (and counts)
    every page and table under it in both accounting modes."""
    m, p, c = forked(level, accounting)
    copies, events = WHOLE_GIB[level]
    before = m.vmstat()
    assert c.mremap(A, GIB, GIB, 3, NEW) == NEW          # MAYMOVE | FIXED
    new_pud = c.mm.core.walk(NEW)[1]
    d = delta(m, before)
    assert d.get("pgtable_alloc", 0) == copies
    assert {k: d[k] for k in d if k.endswith("_duplicated")} == events
    assert d.get("cow_pte_entries_copied", 0) == (512 * 512 if copies else 0)
    assert "mremap_ptes_moved" not in d and "mremap_pmds_moved" not in d
    assert c.mm.core.walk(A)[1:] == (0, 0, 0)
    assert new_pud & RWBIT and pfn(new_pud) != pfn(p.mm.core.walk(A)[1])
    assert m.phys.pt_share[pfn(new_pud)] <= 1
    for off in OFFSETS:
        want = b"parent %d" % off
        assert c.read(NEW + off, len(want)) == want and p.read(A + off, len(want)) == want
    c.write(NEW + 5 * PMD + 3 * PG, b"child!")
    assert p.read(A + 5 * PMD + 3 * PG, 6) == b"parent"
    assert c.status()["VmRSS"] * 1024 == GIB
    assert c.status()["VmPTE"] == 4 * (1 + 1 + 512)         # PUD, PMD and PTE tables
    m.check()
    c.exit()
    p.exit()
    m.check()
    assert m.meminfo()["PageTables"] == 0


@pytest.mark.parametrize("accounting", ["deferred", "eager"])
@pytest.mark.parametrize("level", ["pmd", "pud"])
def test_pmd_aligned_move_relinks_pte_tables(level, accounting):
    """A 4 MiB move between 2 MiB-aligned addresses in another PUD span: the shared tables
    above both ranges break (the source's PMD table, and for a PUD-level fork the PUD table,
    copied once; the destination's PMD table is new), the 2 PTE tables of the range are
    copied (they were shared) and then relinked whole (move_normal_pmd: 2, no PTE moved)."""
    m, p, c = forked(level, accounting)
    src, dst = A + 6 * PMD, NEW + 10 * PMD
    before = m.vmstat()
    assert c.mremap(src, 2 * PMD, 2 * PMD, 3, dst) == dst
    d = delta(m, before)
    upper = {"cow_pmd_tables_duplicated": 1, "cow_pte_tables_duplicated": 2}
    if level == "pud":
        upper["cow_pud_tables_duplicated"] = 1
    assert {k: d[k] for k in d if k.endswith("_duplicated")} == upper
    # the copies, and the destination's PMD table (PUD entry 6 was empty)
    assert d["pgtable_alloc"] == sum(upper.values()) + 1
    assert d["mremap_pmds_moved"] == 2 and "mremap_ptes_moved" not in d
    assert c.mm.core.walk(src)[2] == 0 and c.mm.core.walk(dst)[2] != 0
    want = b"parent %d" % (6 * PMD + 7 * PG)
    assert c.read(dst + 7 * PG, len(want)) == want and p.read(src + 7 * PG, len(want)) == want
    want = b"parent %d" % (5 * PMD + 3 * PG)          # under the child's copied PMD table
    assert c.read(A + 5 * PMD + 3 * PG, len(want)) == want
    c.write(dst + 7 * PG, b"moved")
    assert p.read(src + 7 * PG, len(want)) == b"parent %d" % (6 * PMD + 7 * PG)
    m.check()
    c.exit()
    m.check()
    p.exit()
    assert m.meminfo()["PageTables"] == 0
