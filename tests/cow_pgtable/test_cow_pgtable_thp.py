"""Whole-table COW beside transparent huge pages: a PMD table that maps a huge PMD (or a
PUD table above one) is never shared at fork -- a huge PMD's deposited table and its
folio's entire mapcount belong to one mm, so copy_huge_pmd copies it -- while a GiB without
huge PMDs next to it is still shared whole."""
import pytest

import mmemu
from mmemu import MADV_HUGEPAGE, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PROT_READ, PROT_WRITE

GIB, MIB = 1 << 30, 1 << 20
RW, FLAGS = PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
HUGE, SMALL = 1 * GIB, 2 * GIB          # two PUD entries: one with THPs, one without


def world(accounting):
    m = mmemu.Machine("512M", cow_pte_accounting=accounting)
    p = m.spawn()
    p.mmap(HUGE, 8 * MIB, RW, FLAGS)
    p.madvise(HUGE, 8 * MIB, MADV_HUGEPAGE)
    p.write(HUGE, b"h" * (8 * MIB))                  # four huge PMDs
    p.mmap(SMALL, 8 * MIB, RW, FLAGS)
    p.write(SMALL, b"s" * (8 * MIB))                 # four PTE tables
    assert m.meminfo()["AnonHugePages"] == 8192
    return m, p


@pytest.mark.one_design
@pytest.mark.parametrize("accounting", ["deferred", "eager"])
def test_pmd_level_fork_copies_the_huge_pmds_and_shares_the_rest(accounting):
    m, p = world(accounting)
    before = m.vmstat()
    c = p.fork(cow_pgtable="pmd")
    d = m.vmstat() - before
    assert d["cow_pmd_tables_shared"] == 1                  # the GiB without huge PMDs
    assert d["cow_pte_tables_shared"] == 0 and d["fork_pte_tables_copied"] == 0
    assert m.meminfo()["AnonHugePages"] == 8192             # folios shared, not copied
    # the huge PMDs are the child's own (copy_huge_pmd); the shared GiB counts only for
    # an eager child
    assert c.smaps_rollup()["AnonHugePages"] == 8192
    assert c.status()["RssAnon"] == (16384 if accounting == "eager" else 8192)
    c.write(HUGE + 5, b"C")                                  # do_huge_pmd_wp_page: split, copy
    c.write(SMALL + 5, b"C")                                 # break the shared PMD table
    assert p.read(HUGE, 8) == b"h" * 8 and p.read(SMALL, 8) == b"s" * 8
    assert c.read(HUGE, 8) == b"hhhhhChh" and c.read(SMALL + 4, 3) == b"sCs"
    m.check()
    c.exit()
    m.check()


@pytest.mark.one_design
@pytest.mark.parametrize("accounting", ["deferred", "eager"])
def test_pud_level_fork_shares_no_pud_table_above_a_huge_pmd(accounting):
    m, p = world(accounting)
    before = m.vmstat()
    c = p.fork(cow_pgtable="pud")
    d = m.vmstat() - before
    # both GiBs hang off one PGD entry, whose PUD table holds a huge PMD below: no PUD
    # table is shared; the level below takes over (the GiB without THPs, its PMD table)
    assert d["cow_pud_tables_shared"] == 0
    assert d["cow_pmd_tables_shared"] == 1
    c.write(SMALL, b"x")
    c.write(HUGE, b"y")
    assert p.read(SMALL, 1) == b"s" and p.read(HUGE, 1) == b"h"
    m.check()
    p.exit()
    assert c.read(SMALL, 2) == b"xs" and c.read(HUGE, 2) == b"yh"
    m.check()
