"""Whole-table COW: fork(cow_pgtable="pmd" / "pud") shares PMD / PUD tables, breaks them
level by level, accounts them per mode, and the checker sees every level.

Numbers are exact: a 64 MiB region (32 PTE tables) placed inside one 1 GiB PUD span and
one 512 GiB PGD span, so a PMD-level fork shares one PMD table and a PUD-level fork one
PUD table."""
import errno

import pytest

import mmemu
from conftest import PG, PRIV, RW, SHARED
from mmemu import (CLONE_COW_PGTABLE_PMD, CLONE_COW_PGTABLE_PUD, MAP_FIXED, PR_GET_COW_PGTABLE,
                   PR_GET_COW_PTE, PR_SET_COW_PGTABLE, Madv)
from mmemu._core import physmem

pytestmark = pytest.mark.one_design      # the designs are this file's own

GIB = 1 << 30
A = 0x7E8000000000 + 5 * GIB          # PGD entry 253, PUD entry 5: nothing else there
SIZE = 64 << 20
TABLES = SIZE >> 21                   # 32 PTE tables
RWBIT = 2


def machine(accounting="deferred", **kw):
    return mmemu.Machine("1G", cow_pte_accounting=accounting, **kw)


def populated(m):
    p = m.spawn()
    p.mmap(A, SIZE, RW, PRIV | MAP_FIXED)
    p.touch(A, SIZE)
    p.write(A, b"parent")
    return p


def delta(m, before):
    after = m.vmstat()
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


@pytest.mark.parametrize("accounting", ["deferred", "eager"])
@pytest.mark.parametrize("level, shared, tables", [("pmd", "cow_pmd_tables_shared", 1),
                                                   ("pud", "cow_pud_tables_shared", 0)])
def test_fork_shares_one_table_and_allocates_what_is_above_it(accounting, level, shared, tables):
    """A PMD-level fork allocates the child's PGD and PUD table (2 pages), a PUD-level fork
    only its PGD; the parent's entry turns read-only, the table's share count is 2. The
    child's VmPTE: deferred counts nothing shared, eager the whole subtree (PMD table + 32
    PTE tables, + the PUD table for PUD sharing) and every page."""
    m = machine(accounting)
    p = populated(m)
    before = m.vmstat()
    c = p.fork(cow_pgtable=level)
    d = delta(m, before)
    assert d["pgtable_alloc"] == 1 + tables and d[shared] == 1
    assert "cow_pte_tables_shared" not in d and "fork_ptes_copied" not in d
    assert d.get("fork_ptes_wrprotected", 0) == (SIZE // PG if accounting == "eager" else 0)
    pgd_e, pud_e, pmd_e, _ = c.mm.core.walk(A)
    link = pud_e if level == "pmd" else pgd_e
    assert link & RWBIT == 0 and (p.mm.core.walk(A)[1 if level == "pmd" else 0] & RWBIT) == 0
    assert m.phys.pt_share[link >> 12 & ((1 << 40) - 1)] == 2
    upper_kb = (1 + TABLES) * 4 + (4 if level == "pud" else 0)
    if accounting == "deferred":
        assert c.status()["VmPTE"] == 4 * tables and c.status()["VmRSS"] == 0
    else:
        assert c.status()["VmPTE"] == 4 * tables + upper_kb
        assert c.status()["RssAnon"] == SIZE // 1024
    assert c.read(A, 6) == b"parent"
    m.check()


@pytest.mark.parametrize("accounting", ["deferred", "eager"])
def test_child_write_breaks_pud_then_pmd_then_pte(accounting):
    """The first write under a shared PUD table copies it (its PMD entries now link the PMD
    table read-only, share 2), then the PMD table, then the PTE table; the parent keeps its
    bytes; the next write under the same tables breaks nothing more."""
    m = machine(accounting)
    p = populated(m)
    c = p.fork(cow_pgtable="pud")
    before = m.vmstat()
    c.write(A + 3 * PG, b"child")
    d = delta(m, before)
    assert d["cow_pud_tables_duplicated"] == d["cow_pmd_tables_duplicated"] == 1
    assert d["cow_pte_tables_duplicated"] == 1 and d["pgtable_alloc"] == 3
    assert p.read(A + 3 * PG, 5) == bytes(5) and c.read(A + 3 * PG, 5) == b"child"
    before = m.vmstat()
    c.write(A + 9 * PG, b"again")
    d = delta(m, before)
    assert "cow_pmd_tables_duplicated" not in d and "cow_pud_tables_duplicated" not in d
    assert "cow_pte_tables_duplicated" not in d
    # another span under the same (now private) PMD table: only its PTE table breaks
    before = m.vmstat()
    c.write(A + (4 << 20), b"span2")
    d = delta(m, before)
    assert d["cow_pte_tables_duplicated"] == 1 and "cow_pmd_tables_duplicated" not in d
    assert p.read(A + (4 << 20), 5) == bytes(5)
    m.check()


@pytest.mark.parametrize("accounting", ["deferred", "eager"])
def test_break_after_the_other_holder_left_reuses_every_level(accounting):
    """After the child exits (its shares dropped, no table copied), the parent's first
    write reuses the PUD, PMD and PTE tables: no table allocated, the page written in
    place (the page is exclusive again)."""
    m = machine(accounting)
    p = populated(m)
    c = p.fork(cow_pgtable="pud")
    before = m.vmstat()
    c.exit()
    d = delta(m, before)
    assert "pgtable_free" in d and d["pgtable_free"] == 1       # the child's PGD only
    assert m.phys.pt_share[p.mm.core.walk(A)[0] >> 12 & ((1 << 40) - 1)] == 1
    before = m.vmstat()
    p.write(A + 3 * PG, b"again")
    d = delta(m, before)
    assert d["cow_pud_tables_reused"] == d["cow_pmd_tables_reused"] == 1
    assert d["cow_pte_tables_reused"] == 1
    assert "pgtable_alloc" not in d and "cow_fault" not in d
    m.check()


@pytest.mark.parametrize("accounting", ["deferred", "eager"])
def test_munmap_of_the_whole_shared_range_drops_it_without_copying(accounting):
    """munmap of a GiB that covers the shared PMD table whole: the child's link goes, no
    table is copied, the parent's memory and accounting stay whole."""
    m = machine(accounting)
    p = populated(m)
    c = p.fork(cow_pgtable="pmd")
    vmpte = p.status()["VmPTE"]
    before = m.vmstat()
    c.munmap(A & ~(GIB - 1), GIB)
    d = delta(m, before)
    assert "pgtable_alloc" not in d and "cow_pmd_tables_duplicated" not in d
    assert p.status()["VmPTE"] == vmpte and p.read(A, 6) == b"parent"
    # free_pgtables then freed the child's PUD table too: nothing else in its 512 GiB
    assert c.status()["VmPTE"] == 0 and c.status()["VmRSS"] == 0
    m.check()


@pytest.mark.parametrize("accounting", ["deferred", "eager"])
def test_owner_exit_hands_the_shared_tables_to_the_child(accounting):
    """The parent (owner) exits first: in deferred accounting its counts of the shared PMD
    table, the 32 PTE tables and their pages pass to the child; in eager mode the child
    counted them from the fork."""
    m = machine(accounting)
    p = populated(m)
    c = p.fork(cow_pgtable="pmd")
    p.exit()
    assert c.status()["VmPTE"] == 4 + 4 + 4 * TABLES
    assert c.status()["RssAnon"] == SIZE // 1024
    assert c.read(A, 6) == b"parent"
    c.write(A, b"child!")
    assert c.read(A, 6) == b"child!"
    m.check()
    c.exit()
    assert m.meminfo()["PageTables"] == 0 and m.meminfo()["AnonPages"] == 0
    m.check()


def test_an_ineligible_span_sends_its_range_a_level_down():
    """A shared mapping in the GiB blocks that PMD table: the fork shares the PTE tables of
    the eligible spans instead (the shared mapping's table is neither shared nor copied:
    the child faults it in, as after a classic fork)."""
    m = machine()
    p = populated(m)
    p.mmap(A + SIZE + (2 << 20), 4 * PG, RW, SHARED | MAP_FIXED)
    p.write(A + SIZE + (2 << 20), b"shared")
    before = m.vmstat()
    c = p.fork(cow_pgtable="pmd")
    d = delta(m, before)
    assert "cow_pmd_tables_shared" not in d
    assert d["cow_pte_tables_shared"] == TABLES and "fork_pte_tables_copied" not in d
    c.write(A + SIZE + (2 << 20), b"SHARED")
    assert p.read(A + SIZE + (2 << 20), 6) == b"SHARED"
    m.check()


@pytest.mark.parametrize("accounting", ["deferred", "eager"])
def test_every_modifying_path_breaks_first(accounting):
    """mprotect, MADV_DONTNEED, guard install, mremap and swap-out in the child under a
    shared PUD table change only the child; the parent reads its bytes throughout."""
    m = machine(accounting)
    p = populated(m)
    p.write(A + 100 * PG, b"x" * PG)
    c = p.fork(cow_pgtable="pud")
    c.mprotect(A + 10 * PG, PG, 1)
    c.madvise(A, PG, Madv.DONTNEED)
    assert c.read(A, 6) == bytes(6) and p.read(A, 6) == b"parent"
    c.madvise(A + 20 * PG, PG, Madv.GUARD_INSTALL)
    with pytest.raises(mmemu.SegmentationFault):
        c.read(A + 20 * PG, 1)
    assert p.read(A + 20 * PG, 1) == b"\0"
    new = c.mremap(A + 100 * PG, PG, PG, 3, A + SIZE + GIB)
    assert c.read(new, 2) == b"xx" and p.read(A + 100 * PG, 2) == b"xx"
    p.write(A + 200 * PG, b"swap me")
    c2 = p.fork(cow_pgtable="pud")
    assert p.swap_out(A + 200 * PG, PG) == 0        # shared with the children: not exclusive
    assert c2.read(A + 200 * PG, 7) == b"swap me"
    for q in (p, c, c2):
        assert q.status()["VmSwap"] == 0
    m.check()


def test_clone3_and_prctl_choose_the_level():
    m = machine()
    p = populated(m)
    before = m.vmstat()
    p.clone3(CLONE_COW_PGTABLE_PMD)
    p.clone3(CLONE_COW_PGTABLE_PUD)
    d = delta(m, before)
    assert d["cow_pmd_tables_shared"] == 1 and d["cow_pud_tables_shared"] == 1
    assert p.prctl(PR_GET_COW_PGTABLE) == 0
    assert p.prctl(PR_SET_COW_PGTABLE, 3) == 0
    assert p.prctl(PR_GET_COW_PGTABLE) == 3 and p.prctl(PR_GET_COW_PTE) == 1
    before = m.vmstat()
    c = p.fork()
    assert delta(m, before)["cow_pud_tables_shared"] == 1
    assert c.prctl(PR_GET_COW_PGTABLE) == 3            # inherited, as MMF_COW_PGTABLE is
    before = m.vmstat()
    p.fork(cow_pgtable=True)                            # an explicit level wins
    assert delta(m, before)["cow_pte_tables_shared"] == TABLES
    m.check()


def test_a_machine_refuses_an_unknown_level():
    with pytest.raises(ValueError, match="cow_pgtable must be one of None, False, True, 'pte', 'pmd', 'pud', not 'pte-level'"):
        mmemu.Machine("64M", cow_pgtable="pte-level")
    with pytest.raises(TypeError):
        mmemu.Machine("64M", cow_pgtable=2.0)
    assert mmemu.Machine("64M", cow_pgtable="pmd").cow_pgtable == 2


def test_the_level_survives_a_snapshot(tmp_path):
    m = machine(cow_pgtable="pud")
    p = populated(m)
    p.prctl(PR_SET_COW_PGTABLE, 2)
    c = p.fork()
    m.save(tmp_path / "m.mms")
    m2 = mmemu.Machine.load(tmp_path / "m.mms")
    m2.check()
    assert m2.cow_pgtable == 3
    p2 = m2.process(p.pid)
    assert p2.prctl(PR_GET_COW_PGTABLE) == 2
    assert m2.process(c.pid).read(A, 6) == b"parent"


def test_the_checker_sees_every_level():
    """A shared PMD table's link made writable, a wrong share count on it, and an
    upper-level table an mm reaches through a writable path but does not own: each one
    is reported."""
    m = machine()
    p = populated(m)
    c = p.fork(cow_pgtable="pmd")
    pud_e = c.mm.core.walk(A)[1]
    t = pud_e >> 12 & ((1 << 40) - 1)
    m.phys._debug_poke("pt_share", t, 3)
    with pytest.raises(mmemu.InvariantError, match="pt_share differs"):
        m.check()
    m.phys._debug_poke("pt_share", t, 2)
    m.check()
    c.exit()
    m.phys._debug_poke("pt_share", t, 2)     # the child left: one link only
    with pytest.raises(mmemu.InvariantError, match="pt_share differs"):
        m.check()
    m.phys._debug_poke("pt_share", t, 1)
    m.phys._debug_poke("pt_owner", t, 999)
    with pytest.raises(mmemu.InvariantError):
        m.check()


def test_the_checker_sees_a_shared_table_left_writable():
    m = machine()
    p = populated(m)
    p.fork(cow_pgtable="pud")
    e = p.mm.core.walk(A)[0]
    p.mm.core._debug_set_pgd(A, e | RWBIT)
    with pytest.raises(mmemu.InvariantError, match="shared 2 ways but its upper entry is writable"):
        m.check()
    p.mm.core._debug_set_pgd(A, e)
    m.check()


def test_fork_out_of_memory_changes_nothing():
    """The PUD-level fork needs one frame (the child's PGD): with none free it fails with
    ENOMEM and the machine is as it was."""
    m = machine()
    p = populated(m)
    before = m.vmstat()
    m.fail_page_alloc(1)
    with pytest.raises(mmemu.MMError) as e:
        p.fork(cow_pgtable="pud")
    assert e.value.errno == errno.ENOMEM
    m.fail_page_alloc(0)
    assert {k: v for k, v in delta(m, before).items() if not k.startswith("nr_")} == {}
    m.check()


@pytest.mark.skipif(not physmem.DEBUG_BUILD, reason="the debug build's entry-writer check")
def test_debug_build_aborts_on_a_write_into_a_shared_pmd_table(tmp_path):
    """Writing an entry of a shared PMD table (a missing break) aborts a debug build."""
    import subprocess
    import sys
    code = (f"import mmemu\nm = mmemu.Machine('1G')\np = m.spawn()\n"
            f"p.mmap({A}, {SIZE}, 3, 0x22 | 0x10)\np.touch({A}, {SIZE})\n"
            f"c = p.fork(cow_pgtable='pmd')\n"
            f"c.mm.core._debug_set_pmd({A}, c.mm.core.walk({A})[2])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode != 0 and "shared 2 ways" in r.stderr
