"""Every version of the COW page-table series (mmemu.profiles) in lockstep with a classic
machine: test_designs_agree's state machine (random mmap, munmap, mprotect, mremap, brk,
madvise, file writes and truncates, reads, writes, forks, exits) on the triples below.
Data, errors, signals, the maps and the statistics no design redefines must agree, and
every machine's checker passes after every step; the statistics a version defines are
tested per version (test_series_versions.py, test_tlb_flush.py).

v1 is left out of the lockstep: its exit path is modelled with its bug (test_v1_bugs.py),
which leaks frames and fails the checker by design.

The negative controls show that the per-version tests catch a lost rule: the same program
on a version with one of its rule bits cleared gives other numbers."""
import pytest
from hypothesis import HealthCheck

import mmemu
from conftest import PG, PRIV, RW, fuzz_settings
from mmemu import MAP_FIXED, MAP_SHARED
from mmemu._core import constants as C
from test_designs_agree import DesignsAgree

pytestmark = pytest.mark.one_design

CLASSIC = dict(cow_pgtable=False)


def version(v):
    return dict(cow_pgtable=True, cow_pte_version=v)


class OdfV2Agree(DesignsAgree):
    designs = [CLASSIC, version("odf"), version("v2")]


class V5Agree(DesignsAgree):
    designs = [CLASSIC, version("v5"), dict(cow_pgtable=True, cow_pte_accounting="eager")]


SETTINGS = fuzz_settings(15, "MMEMU_FUZZ_EXAMPLES", stateful_step_count=25,
                         suppress_health_check=[HealthCheck.too_slow])
TestOdfV2Agree = OdfV2Agree.TestCase
TestOdfV2Agree.settings = SETTINGS
TestV5Agree = V5Agree.TestCase
TestV5Agree.settings = SETTINGS

BASE = 0x7E0000000000
SPAN = 2 << 20


def program(v, clear=0):
    """A fixed program on version v with rule bits `clear` removed: the numbers each rule
    changes (vmstat, the parent's smaps Referenced, the parent's pagemap of a page only
    the child read, the RssAnon of a child left holding a table its owner broke away
    from, the log). Span 0: the read, the owner's break, a child that exits without
    writing; span 1: copies by everyone and a reuse by the last holder."""
    m = mmemu.Machine("64M", cow_pte_version=v)
    m.phys.cow_rules = m.phys.cow_rules & ~clear
    p = m.spawn()
    p.mmap(BASE, 16 * PG, RW, PRIV | MAP_FIXED)
    p.write(BASE, b"x" * 8 * PG)
    p.mmap(BASE + SPAN, PG, RW, PRIV | MAP_FIXED)
    p.write(BASE + SPAN, b"y")
    c = p.fork(cow_pgtable=True)
    referenced = next(e for e in p.smaps() if e["header"].startswith(f"{BASE:08x}-"))["Referenced"]
    c.read(BASE + 12 * PG, 1)           # a read fault on a none entry
    parent_sees = int(p.pagemap(BASE + 12 * PG, 1)[0]) >> 63
    d = p.fork(cow_pgtable=True)
    p.write(BASE, b"P")                 # the owner breaks while d still uses the table
    d_rss = d.status()["RssAnon"]
    for q in (p, c, d):                 # span 1: two copies, then a reuse
        q.write(BASE + SPAN, b"z")
    for q in (c, d, p):
        q.exit()
    ev = dict(m.vmstat())
    return (ev["fault_zero_page"], ev["cow_pte_tables_duplicated"], ev["cow_pte_tables_reused"],
            ev["nr_tlb_local_flush_all"], referenced, parent_sees, d_rss, tuple(m.dmesg()))


@pytest.mark.parametrize("v, rule", [
    ("v5", C.COW_RULE_READ_FAULT_SHARED),
    ("v5", C.COW_RULE_MKOLD_AT_FORK),
    ("v5", C.COW_RULE_FLUSH_EVERY_BREAK),
    ("v1", C.COW_RULE_OWNER_NULL),
    ("v2", C.COW_RULE_OWNER_NULL),
    ("v1", C.COW_RULE_NO_BREAK_FLUSH),
    ("v1", C.COW_RULE_V1_EXIT_FALLBACK),
])
def test_negative_control_each_rule_changes_what_the_tests_see(v, rule):
    assert m_rules(v) & rule
    assert program(v) != program(v, rule)


def m_rules(v):
    return mmemu.Machine("64M", cow_pte_version=v).phys.cow_rules


def test_the_span_rules_are_seen_too():
    """The span rules (policy, not rule bits): a span holding a MAP_SHARED VMA beside a
    private one is shared by v1 and v5, copied by ODF and mmemu's modes."""
    def shared(**kw):
        m = mmemu.Machine("64M", **kw)
        p = m.spawn()
        p.mmap(BASE, 8 * PG, RW, PRIV | MAP_FIXED)
        p.mmap(BASE + 8 * PG, 8 * PG, RW, MAP_SHARED | mmemu.MAP_ANONYMOUS | MAP_FIXED)
        p.write(BASE, b"x")
        p.fork(cow_pgtable=True)
        return dict(m.vmstat())["cow_pte_tables_shared"]
    assert [shared(cow_pte_version=v) for v in ("v1", "v5", "odf")] + [shared()] == [1, 1, 0, 0]
