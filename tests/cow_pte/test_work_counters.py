"""Deterministic work counters of the headline experiment: CI compares these exactly.

A 1 GiB private anonymous mapping, every page written, then a classic fork.
"""
import pytest

import mmemu
from conftest import PRIV, RW

GIB = 1 << 30


@pytest.mark.one_design
def test_classic_fork_of_1g_work_and_statistics():
    m = mmemu.Machine("32G", cow_pgtable=False)
    p = m.spawn()
    a = p.mmap(0, GIB, RW, PRIV)
    assert a % (2 << 20) == 0                       # THP-aligned placement (Linux 6.18)
    pud_spans = ((a + GIB - 1) >> 30) - (a >> 30) + 1  # PMD tables needed
    tables = 1 + pud_spans + 512                    # PUD + PMD + PTE tables

    ev0 = m.vmstat()
    p.touch(a, GIB)
    touch = m.vmstat() - ev0
    assert touch["pgfault"] == 262144
    assert touch["fault_anon"] == 262144
    assert touch["pgalloc"] == 262144
    assert touch["pages_zeroed"] == 0               # never-used frames are already zero
    assert touch["pgtable_alloc"] == tables
    assert p.status()["VmPTE"] == tables * 4
    assert p.status()["RssAnon"] == GIB >> 10

    before = m.meminfo()
    ev1 = m.vmstat()
    c = p.fork()
    work = m.vmstat() - ev1
    after = m.meminfo()
    assert work["fork_ptes_copied"] == 262144
    assert work["fork_ptes_wrprotected"] == 262144
    assert work["fork_pte_tables_copied"] == 512
    assert work["pgtable_alloc"] == tables + 1      # the child's PGD too
    assert work["pgfault"] == work["pgalloc"] == work["pages_copied"] == 0
    # /proc/meminfo: PageTables counts every level incl. the PGD; AnonPages does not move
    assert after["PageTables"] - before["PageTables"] == (tables + 1) * 4
    assert after["MemFree"] - before["MemFree"] == -(tables + 1) * 4
    assert after["AnonPages"] == before["AnonPages"] == GIB >> 10
    cs = c.status()
    assert cs["VmPTE"] == tables * 4
    assert cs["VmRSS"] == cs["RssAnon"] == cs["VmHWM"] == GIB >> 10

    ev2 = m.vmstat()
    c.touch(a, GIB)                                 # every page COW-copied in the child
    cow = m.vmstat() - ev2
    assert cow["cow_fault"] == 262144
    assert cow["pages_copied"] == 0                 # the parent's pages never held data
    assert cow["pages_zeroed"] == 0
    assert m.meminfo()["AnonPages"] == 2 * (GIB >> 10)
    ev3 = m.vmstat()
    p.touch(a, GIB)                                 # the parent reuses every page in place
    reuse = m.vmstat() - ev3
    assert reuse["wp_reuse"] == 262144 and reuse["cow_fault"] == 0
    m.check()
    c.exit()
    p.exit()
    assert m.meminfo()["MemFree"] == m.meminfo()["MemTotal"] - 4
    m.check()
