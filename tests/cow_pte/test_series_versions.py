"""The published versions of the COW page-table series as Machine(cow_pte_version=...) profiles
(mmemu.profiles, docs/series-versions.md). Each test names the rule, the version and the
source it follows: lore message ids v1 20220519183127.3909598, RFC v2 20220927162957.270460,
v4 20230207035139.272707, v5 20230414142341.354556, ODF rssys/on-demand-fork; where a patch
is not in the library the rule is SEMANTICS.md 1.14's reading of it (the docs say which)."""
import errno

import pytest

from mmemu import (
    CLONE_COW_PGTABLE, MAP_FIXED, MAP_SHARED, MMError, PR_GET_COW_PTE, PR_SET_COW_PTE, Machine,
)
from mmemu._core.constants import PM_PRESENT

from conftest import PG, PRIV, RW, SHARED

pytestmark = pytest.mark.one_design     # each test picks its versions itself

SPAN = 2 << 20
BASE = 0x7E0000000000        # 2 MiB aligned, far from the default mmap area


def machine(version, **kw):
    return Machine("256M", cow_pte_version=version, **kw)


def ev(m, name):
    return int(dict(m.vmstat())[name])


def smaps_of(p, addr):
    return next(e for e in p.smaps() if e["header"].startswith(f"{addr:08x}-"))


# ---- the profiles and their accounting ----

@pytest.mark.parametrize("version, accounting", [
    ("odf", "deferred"), ("v1", "deferred"), ("v1-nobrk", "deferred"), ("v2", "deferred"),
    ("v3", "eager"), ("v4", "eager"), ("v5", "eager"), (None, "deferred"),
])
def test_each_version_implies_its_accounting(version, accounting):
    m = Machine("64M", cow_pte_version=version)
    assert (m.cow_pte_version, m.cow_pte_accounting) == (version, accounting)
    assert Machine("64M", cow_pte_version=version, cow_pte_accounting=accounting).cow_pte_accounting == accounting


@pytest.mark.parametrize("kw, msg", [
    ({"cow_pte_version": "v6"}, "unknown cow_pte_version 'v6'"),
    ({"cow_pte_version": 5}, "unknown cow_pte_version 5"),
    ({"cow_pte_version": "v5", "cow_pte_accounting": "deferred"}, "accounts eager, not deferred"),
    ({"cow_pte_version": "v1", "cow_pte_accounting": "eager"}, "accounts deferred, not eager"),
    ({"cow_pte_accounting": "lazy"}, "must be one of 'deferred', 'eager'"),
])
def test_bad_profile_arguments_are_refused_before_anything_is_made(kw, msg):
    with pytest.raises(ValueError, match=msg):
        Machine("64M", **kw)


def test_the_default_modes_are_unchanged():
    """cow_pte_accounting alone keeps mmemu's own rules (no profile, no rule bits)."""
    for acc in ("deferred", "eager"):
        m = Machine("64M", cow_pte_accounting=acc)
        assert (m.cow_pte_version, m.phys.cow_rules, m.cow_pte_accounting) == (None, 0, acc)


# ---- which spans are shared ----

def _three_spans(version):
    """A private anon VMA of 1.5 spans at BASE (one span covered whole, one in part), all
    touched, forked with COW page tables: (machine, parent, child)."""
    m = machine(version)
    p = m.spawn()
    p.mmap(BASE, SPAN + SPAN // 2, RW, PRIV | MAP_FIXED)
    p.touch(BASE, SPAN + SPAN // 2)
    m.reset_vmstat()
    c = p.fork(cow_pgtable=True)
    return m, p, c


@pytest.mark.parametrize("version, shared, copied", [
    ("odf", 1, 1),      # ODF: only a span one anonymous VMA covers whole
    ("v1", 2, 0), ("v2", 2, 0), ("v5", 2, 0), (None, 2, 0),
])
def test_spans_shared_odf_only_whole_spans_of_one_vma(version, shared, copied):
    """ODF (rssys/on-demand-fork paper-version-kernel-v5.6.19, mm/memory.c copy_pmd_range)
    shares a PTE table only where one anonymous, private, non-heap VMA covers the span."""
    m, p, c = _three_spans(version)
    assert (ev(m, "cow_pte_tables_shared"), ev(m, "fork_pte_tables_copied")) == (shared, copied)
    assert c.read(BASE + SPAN, 3) == p.read(BASE + SPAN, 3)
    m.check()


def _heap_fork(version):
    m = machine(version)
    p = m.spawn()
    start = p.brk(0)
    p.brk(start + 64 * PG)
    p.touch(start, 64 * PG)
    m.reset_vmstat()
    p.fork(cow_pgtable=True)
    m.check()
    return ev(m, "cow_pte_tables_shared")


@pytest.mark.parametrize("version, shared", [
    ("v1", 1), ("v2", 1), ("v5", 1),          # the code has no brk test
    ("v1-nobrk", 0),                          # v1's cover letter: brk excluded
    ("odf", 0), (None, 0),
])
def test_spans_shared_heap(version, shared):
    """v1 20220519183127.3909598-5 copy_pmd_range shares every PMD of a VMA passing
    vma_needs_copy; its cover letter (-0) says brk is excluded, offered as "v1-nobrk"."""
    assert _heap_fork(version) == shared


@pytest.mark.parametrize("version, shared", [("v1", 1), ("v5", 1), ("odf", 0), (None, 0)])
def test_spans_shared_with_a_vm_shared_neighbour(version, shared):
    """A span holding a MAP_SHARED VMA beside a private one: v1 shares the private VMA's
    PMD whatever else the span holds; v5 copy_cow_pte_range walks every VMA of the span
    and falls back only for VM_DONTCOPY or an unshareable page; ODF and mmemu copy."""
    m = machine(version)
    p = m.spawn()
    p.mmap(BASE, 8 * PG, RW, PRIV | MAP_FIXED)
    p.mmap(BASE + 8 * PG, 8 * PG, RW, SHARED | MAP_FIXED)
    p.write(BASE, b"private")
    p.write(BASE + 8 * PG, b"shared")
    m.reset_vmstat()
    c = p.fork(cow_pgtable=True)
    assert ev(m, "cow_pte_tables_shared") == shared
    c.write(BASE + 8 * PG, b"SHARED")
    assert p.read(BASE + 8 * PG, 6) == b"SHARED" and c.read(BASE, 7) == b"private"
    m.check()


# ---- read faults ----

@pytest.mark.parametrize("version, duplicated, zero_in_parent", [
    ("v5", 0, True), ("v4", 0, True),         # v3-v5 handle_cow_pte_fault: write/unshare only
    ("v1", 1, False), ("v2", 1, False), (None, 1, False),   # v1/v2: any fault breaks
])
def test_read_fault_v5_maps_the_zero_page_into_the_still_shared_table(version, duplicated, zero_in_parent):
    """v5 20230414142341.354556 (handle_pte_fault -> handle_cow_pte_fault only for
    FAULT_FLAG_WRITE|FAULT_FLAG_UNSHARE, vm_ops or a swap entry): an anonymous read fault
    sets the zero-page PTE in the table both processes still use, so the parent's pagemap
    shows a page it never touched. v1/v2 break_cow_pte on any fault through the RO PMD."""
    m = machine(version)
    p = m.spawn()
    p.mmap(BASE, SPAN, RW, PRIV | MAP_FIXED)
    p.touch(BASE, PG)
    c = p.fork(cow_pgtable=True)
    m.reset_vmstat()
    assert c.read(BASE + 5 * PG, 4) == b"\0" * 4
    assert ev(m, "cow_pte_tables_duplicated") == duplicated
    assert ev(m, "fault_zero_page") == 1
    assert bool(p.pagemap(BASE + 5 * PG, 1)[0] & PM_PRESENT) == zero_in_parent
    c.write(BASE + 5 * PG, b"c")       # a write breaks in every version
    assert p.read(BASE + 5 * PG, 1) == b"\0" and c.read(BASE + 5 * PG, 1) == b"c"
    m.check()


# ---- pte_mkold at fork ----

@pytest.mark.parametrize("version, referenced_kb", [("v5", 0), ("v1", 16), (None, 16)])
def test_fork_v5_makes_shared_entries_old(version, referenced_kb):
    """v5 copy_cow_pte_range runs copy_present_pte with dst == src: pte_mkold on every
    shared entry (pte_mkclean too in a VM_SHARED VMA), so the parent's smaps Referenced
    drops to 0 at fork; v1 leaves the entries as they are."""
    m = machine(version)
    p = m.spawn()
    p.mmap(BASE, 8 * PG, RW, PRIV | MAP_FIXED)
    p.touch(BASE, 4 * PG)
    assert smaps_of(p, BASE)["Referenced"] == 16
    p.fork(cow_pgtable=True)
    assert smaps_of(p, BASE)["Referenced"] == referenced_kb
    m.check()


@pytest.mark.parametrize("version, referenced_kb", [("v5", 0), ("v1", 32), (None, 32)])
def test_fork_v5_mkold_reaches_every_vma_of_the_span(version, referenced_kb):
    """v5 copy_cow_pte_range walks every VMA of the span, also a MAP_SHARED file VMA fork
    does not copy (pte_mkold, and pte_mkclean there: the folio is already dirty from the
    write fault, fault_dirty_shared_page, so smaps still says Dirty)."""
    m = machine(version)
    f = m.create_file("/data", 8 * PG)
    p = m.spawn()
    p.mmap(BASE, 8 * PG, RW, PRIV | MAP_FIXED)
    p.mmap(BASE + 8 * PG, 8 * PG, RW, MAP_SHARED | MAP_FIXED, file=f)
    p.touch(BASE, 16 * PG)
    p.fork(cow_pgtable=True)
    e = smaps_of(p, BASE + 8 * PG)
    assert (e["Referenced"], e["Private_Dirty"] + e["Shared_Dirty"]) == (referenced_kb, 32)
    m.check()


# ---- ownership in v1/v2 ----

@pytest.mark.parametrize("version", ["v1", "v2"])
def test_owner_break_leaves_the_table_counted_by_nobody(version):
    """v1/v2 (20220519183127.3909598-6 break_cow_pte, cow_pte_fallback): the owner that
    breaks a still-shared table drops its RSS and page-table bytes and sets the owner to
    NULL; the child, still using the table, counts nothing until it reuses the table
    (refcount 1) and re-adds it. mmemu's deferred mode hands the counts over at once."""
    m = machine(version)
    p = m.spawn()
    p.mmap(BASE, 16 * PG, RW, PRIV | MAP_FIXED)
    p.write(BASE, b"x" * 16 * PG)
    c = p.fork(cow_pgtable=True)
    assert c.status()["RssAnon"] == 0
    p.write(BASE, b"P")                 # the owner breaks: its own copy
    assert (p.status()["RssAnon"], c.status()["RssAnon"]) == (64, 0)
    m.check()
    c.write(BASE + PG, b"C")            # refcount 1: reuse, the child counts the table again
    assert c.status()["RssAnon"] == 64
    assert c.read(BASE, 2) == b"xx" and p.read(BASE, 2) == b"Px"
    m.check()
    c.exit()
    p.exit()
    assert m.dmesg() == []


def test_owner_break_default_deferred_hands_over_at_once():
    m = Machine("256M", cow_pte_accounting="deferred")
    p = m.spawn()
    p.mmap(BASE, 16 * PG, RW, PRIV | MAP_FIXED)
    p.write(BASE, b"x" * 16 * PG)
    c = p.fork(cow_pgtable=True)
    p.write(BASE, b"P")
    assert (p.status()["RssAnon"], c.status()["RssAnon"]) == (64, 64)
    m.check()


# ---- opt-in ----

def _shares(m, p):
    m.reset_vmstat()
    p.fork().exit()
    return ev(m, "cow_pte_tables_shared")


def _proc(m):
    p = m.spawn()
    p.mmap(BASE, 4 * PG, RW, PRIV | MAP_FIXED)
    p.touch(BASE, 4 * PG)
    return p


def test_opt_in_v1_clone_flag_is_sticky_on_the_parent():
    """v1 20220519183127.3909598-6: CLONE_COW_PGTABLE sets MMF_COW_PGTABLE on the parent;
    later plain forks share too, and children inherit it."""
    m = machine("v1")
    p = _proc(m)
    assert _shares(m, p) == 0
    p.clone3(CLONE_COW_PGTABLE).exit()
    assert _shares(m, p) == 1
    assert _shares(m, p.fork()) == 1
    with pytest.raises(MMError) as e:
        p.prctl(PR_SET_COW_PTE, 1)
    assert e.value.errno == errno.EINVAL


def test_opt_in_default_clone_flag_is_one_fork_only():
    m = Machine("256M")
    p = _proc(m)
    p.clone3(CLONE_COW_PGTABLE).exit()
    assert _shares(m, p) == 0


def test_opt_in_v2_sysctl_vm_cow_pte_takes_a_pid():
    """RFC v2 20220927162957.270460 (mm/cow_pte.c cow_pte_handler, set_cow_pte_task):
    `sysctl vm.cow_pte=<pid>` enables COW page tables for that process's forks; a pid that
    does not exist is logged ("pid %d does not exist"), not refused; no clone flag, no prctl."""
    m = machine("v2")
    p, q = _proc(m), _proc(m)
    assert _shares(m, p) == 0
    m.sysctl["vm.cow_pte"] = p.pid
    assert m.sysctl["vm.cow_pte"] == -1         # the handler resets sysctl_cow_pte_pid
    assert (_shares(m, p), _shares(m, q)) == (1, 0)
    m.sysctl["vm.cow_pte"] = 999                # no such pid: not an error, a log line
    assert m.dmesg() == ["pid 999 does not exist"] and not q.mm.cow_pgtable
    with pytest.raises(TypeError):
        m.sysctl["vm.cow_pte"] = "1"
    for bad in (lambda: p.clone3(CLONE_COW_PGTABLE), lambda: p.prctl(PR_SET_COW_PTE, 1)):
        with pytest.raises(MMError) as e:
            bad()
        assert e.value.errno == errno.EINVAL
    assert len(m.processes) == 2
    m.check()


@pytest.mark.parametrize("version", [None, "v1", "v5", "odf"])
def test_the_sysctl_exists_only_in_rfc_v2(version):
    m = Machine("64M", cow_pte_version=version)
    p = m.spawn()
    with pytest.raises(MMError) as e:
        m.sysctl["vm.cow_pte"] = p.pid
    assert e.value.errno == errno.ENOENT and not p.mm.cow_pgtable


@pytest.mark.parametrize("version", ["v3", "v4", "v5"])
def test_opt_in_v5_prctl_einval_when_set_twice_and_no_getter(version):
    """v4 20230207035139.272707 "mm: Add PR_SET_COW_PTE" (kept in v5): sets
    MMF_COW_PTE_READY once; a second PR_SET_COW_PTE is EINVAL, there is no PR_GET."""
    m = machine(version)
    p = _proc(m)
    assert p.prctl(PR_SET_COW_PTE) == 0
    assert _shares(m, p) == 1
    for bad in (lambda: p.prctl(PR_SET_COW_PTE), lambda: p.prctl(PR_GET_COW_PTE),
                lambda: p.clone3(CLONE_COW_PGTABLE)):
        with pytest.raises(MMError) as e:
            bad()
        assert e.value.errno == errno.EINVAL
    assert p.mm.cow_pgtable and len(m.processes) == 1


def test_opt_in_default_prctl_unchanged():
    m = Machine("64M")
    p = m.spawn()
    assert p.prctl(PR_SET_COW_PTE, 1) == 0 and p.prctl(PR_SET_COW_PTE, 1) == 0
    assert p.prctl(PR_GET_COW_PTE) == 1


# ---- snapshots keep the profile ----

def test_a_profile_survives_save_and_load(tmp_path):
    m = machine("v5")
    p = _proc(m)
    p.prctl(PR_SET_COW_PTE)
    c = p.fork()
    m.save(tmp_path / "v5.mms")
    m2 = Machine.load(tmp_path / "v5.mms")
    assert (m2.cow_pte_version, m2.phys.cow_rules) == ("v5", m.phys.cow_rules)
    assert m2.process(c.pid).read(BASE, 1) == b"\0"
    m2.check()


# ---- the kernel log ----

def test_dmesg_check_mm_prints_bad_rss_counters_at_exit():
    """check_mm (kernel/fork.c) at __mmdrop: one "BUG: Bad rss-counter state" line per
    counter left non-zero, in the kernel's format; m.check() names the same broken
    invariant before the exit."""
    m = Machine("64M")
    p = _proc(m)
    p.mm.core._debug_poke("rss", 7, 1)          # MM_ANONPAGES 4 -> 7
    with pytest.raises(Exception, match="rss"):
        m.check()
    p.exit()
    (line,) = m.dmesg()
    import re
    assert re.fullmatch(r"BUG: Bad rss-counter state mm:[0-9a-f]{16} type:MM_ANONPAGES val:3", line)


@pytest.mark.parametrize("version", ["odf", "v1", "v2", "v5", None])
def test_dmesg_is_silent_on_a_clean_run(version):
    m = machine(version)
    p = _proc(m)
    c = p.fork(cow_pgtable=True)
    g = c.fork(cow_pgtable=True)
    c.write(BASE, b"c")
    p.exit()
    g.write(BASE + PG, b"g")
    c.exit()
    g.exit()
    assert m.dmesg() == [] and m.processes == []
    m.check()
