"""The OOM sweep (tests/properties/test_oom.py) with whole-table COW: every operation of the
sweep, the k-th page allocation failing for every k, on machines whose processes fork
sharing PMD (or PUD) tables in both accounting modes. Fork, the level-by-level breaks of
munmap / mprotect / madvise / truncate / mremap / guard install and execve must be atomic
(they reserve their frames first), faults may keep what Linux keeps, and a retry gives the
undisturbed result."""
import pytest

import mmemu
import siblings

pytestmark = pytest.mark.one_design      # the designs are this file's own

OOM = siblings.load("properties/test_oom.py")
DESIGNS = [(level, acc) for level in ("pmd", "pud") for acc in ("deferred", "eager")]


@pytest.mark.parametrize("design", DESIGNS, ids=[f"{lv}-{acc}" for lv, acc in DESIGNS])
@pytest.mark.parametrize("name", sorted(OOM.OPS))
def test_fail_every_allocation_whole_table_cow(name, design, monkeypatch):
    level, accounting = design
    defaults = dict(mmemu.Machine.__init__.__kwdefaults__)
    defaults.update(cow_pgtable=level, cow_pte_accounting=accounting)
    monkeypatch.setattr(mmemu.Machine.__init__, "__kwdefaults__", defaults)
    OOM.test_fail_every_allocation(name, f"cow-{accounting}")


def test_the_sweep_forks_share_whole_tables(monkeypatch):
    """Not vacuous: in the sweep's setup a fork shares PMD tables (and breaks them)."""
    defaults = dict(mmemu.Machine.__init__.__kwdefaults__)
    defaults.update(cow_pgtable="pmd")
    monkeypatch.setattr(mmemu.Machine.__init__, "__kwdefaults__", defaults)
    m, _, ctx = OOM.fresh(OOM.forked)
    v = m.vmstat()
    assert v["cow_pmd_tables_shared"] >= 2
    ctx["c"].munmap(OOM.A + OOM.PG, OOM.PG)
    assert m.vmstat()["cow_pmd_tables_duplicated"] == 1
    m.check()
