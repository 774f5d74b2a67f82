"""The copy-on-write page table mechanism itself (SCENARIOS group I, after the v4 patches).

Each test builds its machines explicitly in the designs it is about, so the module is not
parametrised by the suite-wide fork design.
"""
import errno

import numpy as np
import pytest

import mmemu
from conftest import PG, PRIV, RW, SHARED, snapshot
from mmemu import (
    CLONE_COW_PGTABLE, CLONE_SIGHAND, CLONE_THREAD, CLONE_VM, MADV_DONTFORK, MAP_FIXED, MAP_PRIVATE,
    PR_GET_COW_PTE, PR_SET_COW_PTE, PROT_READ, InvariantError,
)

pytestmark = pytest.mark.one_design

M2 = 2 << 20
BASE = 0x7F0000000000          # 1 GiB and 2 MiB aligned
MODES = ["deferred", "eager"]
RWBIT = 1 << 1
PFN = lambda e: (e >> 12) & ((1 << 40) - 1)  # noqa: E731


def per_mode(mode, deferred, eager):
    return deferred if mode == "deferred" else eager


def machine(mode, memory="1G"):
    return mmemu.Machine(memory, cow_pte_accounting=mode)


def table_of(p, addr):
    """(PMD entry, PTE-table pfn) of the span holding addr."""
    pmd = p.mm.core.walk(addr)[2]
    return pmd, PFN(pmd)


def populated(m, npages=256, addr=BASE):
    """A process with npages written at addr (one PTE table when npages <= 512)."""
    p = m.spawn()
    a = p.mmap(addr, npages * PG, RW, PRIV | MAP_FIXED)
    for i in range(npages):
        p.write(a + i * PG, bytes([i % 251 + 1]) * 8)
    return p, a


def delta(m, before):
    return {k: v for k, v in (m.vmstat() - before).items() if v and not k.startswith("nr_")}


@pytest.mark.parametrize("mode", MODES)
def test_shared_table_at_fork(mode):
    """SCENARIOS 56: 1 MiB written, COW fork: one table, both PMDs read-only, share count 2,
    PageTables grows by the child's upper tables only."""
    m = machine(mode)
    p, a = populated(m, 256)
    pt0, free0 = m.meminfo()["PageTables"], m.meminfo()["MemFree"]
    ev = m.vmstat()
    c = p.fork(cow_pgtable=True)
    ppmd, t = table_of(p, a)
    cpmd, ct = table_of(c, a)
    assert ct == t and m.phys.pt_share[t] == 2
    assert not ppmd & RWBIT and not cpmd & RWBIT
    assert m.meminfo()["PageTables"] - pt0 == 12          # child PGD + PUD + PMD
    assert m.meminfo()["MemFree"] - free0 == -12
    work = delta(m, ev)
    assert work["cow_pte_tables_shared"] == 1 and work["pgtable_alloc"] == 3
    assert "fork_ptes_copied" not in work and "fork_pte_tables_copied" not in work
    pfn = int(p.pagemap(a, 1)[0]) & ((1 << 55) - 1)
    if mode == "eager":
        assert (m.phys.refcount[pfn], m.phys.mapcount[pfn]) == (2, 2)
        assert c.status()["RssAnon"] == 1024 and c.status()["VmPTE"] == 12
        assert work["fork_ptes_wrprotected"] == 256
        assert not p.mm.core.walk(a)[3] & RWBIT           # entries write-protected in the table
    else:
        assert (m.phys.refcount[pfn], m.phys.mapcount[pfn]) == (1, 1)
        assert c.status()["RssAnon"] == 0 and c.status()["VmPTE"] == 8
        assert p.mm.core.walk(a)[3] & RWBIT               # untouched: the PMD protects it
    assert p.status()["RssAnon"] == 1024 and p.status()["VmPTE"] == 12
    assert c.read(a + 255 * PG, 8) == bytes([255 % 251 + 1]) * 8
    m.check()


@pytest.mark.parametrize("mode", MODES)
def test_break_on_child_write_then_parent_reuses(mode):
    """SCENARIOS 57: the child's first write copies the table (share 2 -> 1) and then COWs
    the page; the parent's next write reuses the table, then reuses or copies the page."""
    m = machine(mode)
    p, a = populated(m, 256)
    c = p.fork(cow_pgtable=True)
    _, t = table_of(p, a)
    x = int(p.pagemap(a, 1)[0]) & ((1 << 55) - 1)
    free0 = m.meminfo()["MemFree"]
    ev = m.vmstat()
    c.write(a, b"child")
    work = delta(m, ev)
    assert work["cow_pte_tables_duplicated"] == 1
    assert work["cow_pte_entries_copied"] == 256
    assert work["cow_fault"] == 1
    _, ct = table_of(c, a)
    assert ct != t and m.phys.pt_share[t] == 1 and m.phys.pt_share[ct] == 1
    assert table_of(c, a)[0] & RWBIT                      # the child's copy is writable
    assert m.meminfo()["MemFree"] - free0 == -8           # one table, one page
    # after the copy every page but the written one is mapped by both tables
    y = int(p.pagemap(a + PG, 1)[0]) & ((1 << 55) - 1)
    assert (m.phys.refcount[y], m.phys.mapcount[y]) == (2, 2)
    assert (m.phys.refcount[x], m.phys.mapcount[x]) == (1, 1)
    assert c.status()["RssAnon"] == 1024 and c.status()["VmPTE"] == 12
    m.check()
    ev = m.vmstat()
    p.write(a, b"parent")                                 # page x is the parent's alone now
    work = delta(m, ev)
    assert work["cow_pte_tables_reused"] == 1 and "cow_pte_tables_duplicated" not in work
    assert work["wp_reuse"] == 1 and "cow_fault" not in work
    assert table_of(p, a) == (table_of(p, a)[0], t) and table_of(p, a)[0] & RWBIT
    ev = m.vmstat()
    p.write(a + PG, b"again")                             # page y is still shared: copy
    assert delta(m, ev)["cow_fault"] == 1
    assert p.read(a, 6) == b"parent" and c.read(a, 5) == b"child"
    assert c.read(a + PG, 5) == bytes([2]) * 5 and p.read(a + PG, 5) == b"again"
    m.check()


@pytest.mark.parametrize("mode", MODES)
def test_read_fault_in_file_vma_breaks(mode):
    """SCENARIOS 58: a fault in a file-backed VMA (vm_ops) inside a shared span breaks the
    table even for a read; reading an entry already present does not fault."""
    m = machine(mode)
    f = m.create_file("data", size=4 * PG, data=b"F" * PG)    # pages 1-3 are holes
    p = m.spawn()
    a = p.mmap(BASE, 8 * PG, RW, PRIV | MAP_FIXED)
    fa = p.mmap(BASE + 8 * PG, 4 * PG, PROT_READ, MAP_PRIVATE | MAP_FIXED, file=f)
    p.write(a, b"anon")
    assert p.read(fa, 1) == b"F"                          # page 0 of the file is present
    c = p.fork(cow_pgtable=True)
    assert table_of(c, a)[1] == table_of(p, a)[1]
    ev = m.vmstat()
    assert c.read(fa, 1) == b"F"                          # present: no fault, no break
    assert delta(m, ev) == {}
    assert c.read(fa + 2 * PG, 1) == b"\0"                # none: a read fault, which breaks
    work = delta(m, ev)
    assert work["cow_pte_tables_duplicated"] == 1 and work["fault_file"] == 1
    assert table_of(c, a)[1] != table_of(p, a)[1]
    assert c.read(a, 4) == b"anon"
    m.check()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", ["munmap", "mprotect", "mremap", "dontneed"])
def test_partial_operation_in_shared_span(mode, op):
    """SCENARIOS 59: a partial munmap/mprotect/mremap/DONTNEED in a shared span breaks the
    table first, then behaves exactly as after a classic fork."""
    results = {}
    for design in ("classic", mode):
        m = machine(mode) if design != "classic" else mmemu.Machine("1G")
        p, a = populated(m, 64)
        c = p.fork(cow_pgtable=design != "classic")
        ev = m.vmstat()
        if op == "munmap":
            c.munmap(a + 8 * PG, 8 * PG)
        elif op == "mprotect":
            c.mprotect(a + 8 * PG, 8 * PG, PROT_READ)
        elif op == "mremap":
            c.mremap(a + 8 * PG, 8 * PG, 8 * PG, 3, BASE + (1 << 30))   # MAYMOVE | FIXED
        else:
            c.madvise(a + 8 * PG, 8 * PG, 4)                            # MADV_DONTNEED
        if design != "classic":
            assert delta(m, ev)["cow_pte_tables_duplicated"] == 1
        data = []
        for q in (p, c):
            for i in range(64):
                try:
                    data.append(q.read(a + i * PG, 8))
                except mmemu.SegmentationFault as e:
                    data.append(e.code)
        if op == "mremap":
            data.append(c.read(BASE + (1 << 30), 8 * PG))
        for q in (p, c):
            try:
                q.write(a + 10 * PG, b"w")
                data.append("ok")
            except mmemu.SegmentationFault as e:
                data.append(e.code)
        results[design] = (data, str(c.maps()), p.status()["RssAnon"])
        m.check()
    assert results[mode] == results["classic"]


@pytest.mark.parametrize("mode", MODES)
def test_child_exit_while_sharing(mode):
    """SCENARIOS 60: the child exits while sharing: the parent's RSS is unchanged, the share
    count drops to 1, and the parent's write reuses the table and the page."""
    m = machine(mode)
    p, a = populated(m, 256)
    c = p.fork(cow_pgtable=True)
    _, t = table_of(p, a)
    rss = dict(p.status())
    free0, pt0 = m.meminfo()["MemFree"], m.meminfo()["PageTables"]
    c.exit()
    assert dict(p.status()) == rss
    assert m.phys.pt_share[t] == 1
    assert m.meminfo()["PageTables"] - pt0 == -12         # the child's PGD, PUD, PMD
    assert m.meminfo()["MemFree"] - free0 == 12
    ev = m.vmstat()
    p.write(a, b"mine")
    work = delta(m, ev)
    assert work["cow_pte_tables_reused"] == 1
    if mode == "eager":     # the entry was write-protected at fork: do_wp_page reuses the page
        assert work["wp_reuse"] == 1
    else:                   # deferred never touched the entry: still writable once reused
        assert work["spurious_fault"] == 1 and "wp_reuse" not in work
    assert "cow_fault" not in work and "pgalloc" not in work
    m.check()


@pytest.mark.parametrize("mode", MODES)
def test_parent_exit_hands_the_table_to_the_child(mode):
    """The owner leaves first: in deferred accounting its RSS and VmPTE for the shared table
    pass to the child; the child's data is intact and its write reuses the table."""
    m = machine(mode)
    p, a = populated(m, 256)
    c = p.fork(cow_pgtable=True)
    _, t = table_of(p, a)
    p.exit()
    assert m.phys.pt_share[t] == 1
    if mode == "deferred":
        assert m.phys.pt_owner[t] == c.mm.core.id
    assert c.status()["RssAnon"] == 1024 and c.status()["VmPTE"] == 12
    m.check()
    ev = m.vmstat()
    c.write(a + 5 * PG, b"c")
    work = delta(m, ev)
    assert work["cow_pte_tables_reused"] == 1 and "cow_fault" not in work
    # eager: the entry is read-only and the parent's exit dropped its reference, so
    # do_wp_page reuses the page; deferred: the entry is still writable after the reuse
    assert work[per_mode(mode, deferred="spurious_fault", eager="wp_reuse")] == 1
    assert c.read(a + 6 * PG, 8) == bytes([7]) * 8
    m.check()


@pytest.mark.parametrize("mode", MODES)
def test_dontcopy_vma_inside_span_falls_back_to_copy(mode):
    """SCENARIOS 61: a VM_DONTCOPY VMA inside a 2 MiB span: that table is copied
    (recover_pte_range), the other spans are shared."""
    m = machine(mode)
    p = m.spawn()
    a = p.mmap(BASE, 2 * M2, RW, PRIV | MAP_FIXED)
    p.touch(a, 2 * M2)
    p.madvise(a + M2 - 4 * PG, 4 * PG, MADV_DONTFORK)     # last 4 pages of span 0
    ev = m.vmstat()
    c = p.fork(cow_pgtable=True)
    work = delta(m, ev)
    assert work["cow_pte_tables_shared"] == 1
    assert work["fork_pte_tables_copied"] == 1
    assert work["fork_ptes_copied"] == 508                # span 0 minus the DONTCOPY pages
    assert table_of(c, a)[1] != table_of(p, a)[1]
    assert table_of(c, a + M2)[1] == table_of(p, a + M2)[1]
    with pytest.raises(mmemu.SegmentationFault):
        c.read(a + M2 - PG, 1)
    m.check()


@pytest.mark.parametrize("mode", MODES)
def test_grandchildren_share_one_table_three_ways(mode):
    """P -> C -> G, all COW: one table, share count 3; writes in any order give each its
    own data and the last holder reuses the table."""
    m = machine(mode)
    p, a = populated(m, 16)
    c = p.fork(cow_pgtable=True)
    g = c.fork(cow_pgtable=True)
    _, t = table_of(p, a)
    assert table_of(c, a)[1] == table_of(g, a)[1] == t and m.phys.pt_share[t] == 3
    m.check()
    g.write(a, b"G")
    assert m.phys.pt_share[t] == 2
    c.write(a, b"C")
    assert m.phys.pt_share[t] == 1
    ev = m.vmstat()
    p.write(a, b"P")
    assert delta(m, ev)["cow_pte_tables_reused"] == 1
    assert [q.read(a, 1) for q in (p, c, g)] == [b"P", b"C", b"G"]
    assert [q.read(a + PG, 1) for q in (p, c, g)] == [bytes([2])] * 3
    m.check()
    for q in (g, c, p):
        q.exit()
        m.check()
    assert m.meminfo()["MemFree"] == m.meminfo()["MemTotal"] - 4


@pytest.mark.parametrize("mode", MODES)
def test_ineligible_spans_are_copied(mode):
    """Shared memory and the brk heap are never shared at fork: their spans are copied."""
    m = machine(mode)
    p = m.spawn()
    s = p.mmap(BASE, 4 * PG, RW, SHARED | MAP_FIXED)
    a = p.mmap(BASE + 4 * PG, 4 * PG, RW, PRIV | MAP_FIXED)
    p.write(s, b"s")
    p.write(a, b"a")
    heap = p.brk(0)
    p.brk(heap + 4 * PG)
    p.write(heap, b"h")
    ev = m.vmstat()
    c = p.fork(cow_pgtable=True)
    work = delta(m, ev)
    assert "cow_pte_tables_shared" not in work
    assert work["fork_pte_tables_copied"] == 2            # the heap span and the span at BASE
    c.write(s, b"S")
    assert p.read(s, 1) == b"S" and c.read(a, 1) == b"a" and c.read(heap, 1) == b"h"
    m.check()


@pytest.mark.parametrize("mode", MODES)
def test_break_out_of_memory_changes_nothing(mode):
    """ENOMEM in the middle of break_cow_pte: the write fails and both processes are
    exactly as before; an mprotect over several shared spans is all or nothing."""
    m = machine(mode, "16M")
    p = m.spawn()
    a = p.mmap(BASE, 3 * M2, RW, PRIV | MAP_FIXED)
    for i in range(3):
        p.write(a + i * M2, b"x")
    c = p.fork(cow_pgtable=True)
    filler = m.spawn()
    b = filler.mmap(0, 16 << 20, RW, PRIV)
    with pytest.raises(mmemu.MMError):
        filler.touch(b, 16 << 20)
    filler.munmap(b, 2 * PG)                             # room for two copies only
    assert m.meminfo()["MemFree"] == 8
    before = snapshot(m)
    with pytest.raises(mmemu.MMError) as e:
        c.mprotect(a, 3 * M2, PROT_READ)                 # needs three table copies
    assert e.value.errno == errno.ENOMEM
    assert snapshot(m) == before
    filler.mmap(b, PG, RW, PRIV | MAP_FIXED)
    filler.touch(b, PG)                                   # one frame left: a table copy
    before = snapshot(m)                                  # fits, the COW page then does not
    with pytest.raises(mmemu.MMError) as e:
        c.write(a, b"y")
    assert e.value.errno == errno.ENOMEM
    assert snapshot(m) == before                          # the fault checked both up front
    filler.munmap(b + 2 * PG, PG)                         # two frames: table and page
    c.write(a, b"y")
    assert c.read(a, 1) == b"y" and p.read(a, 1) == b"x"
    m.check()


@pytest.mark.parametrize("mode", MODES)
def test_classic_fork_of_a_process_that_shares_tables(mode):
    """A classic fork from a child that shares a table reads the shared entries and does not
    write them; the grandchild's copy is classic."""
    m = machine(mode)
    p, a = populated(m, 32)
    c = p.fork(cow_pgtable=True)
    g = c.fork()
    assert table_of(g, a)[1] not in (table_of(p, a)[1],)
    assert m.phys.pt_share[table_of(p, a)[1]] == 2
    assert g.read(a + 3 * PG, 1) == bytes([4])
    g.write(a, b"g")
    p.write(a, b"p")
    assert [q.read(a, 1) for q in (p, c, g)] == [b"p", bytes([1]), b"g"]
    m.check()


@pytest.mark.parametrize("mode", MODES)
def test_headline_1g_fork_work_counters(mode):
    """The seed's experiment with COW page tables: 1 GiB written, fork, then the child
    writes every page. Exact work per accounting mode."""
    m = mmemu.Machine("32G", cow_pte_accounting=mode)
    p = m.spawn()
    a = p.mmap(0, 1 << 30, RW, PRIV)
    p.touch(a, 1 << 30)
    pmds = ((a + (1 << 30) - 1) >> 30) - (a >> 30) + 1
    before = m.meminfo()
    ev = m.vmstat()
    c = p.fork(cow_pgtable=True)
    work = delta(m, ev)
    assert work["cow_pte_tables_shared"] == 512
    assert work["pgtable_alloc"] == 1 + 1 + pmds          # PGD, PUD, PMDs
    assert m.meminfo()["PageTables"] - before["PageTables"] == (2 + pmds) * 4
    assert m.meminfo()["AnonPages"] == before["AnonPages"] == 1 << 20
    cs = c.status()
    if mode == "deferred":
        assert (cs["VmRSS"], cs["VmPTE"]) == (0, (1 + pmds) * 4)
        assert "fork_ptes_wrprotected" not in work
    else:
        assert (cs["VmRSS"], cs["VmPTE"]) == (1 << 20, (1 + pmds + 512) * 4)
        assert work["fork_ptes_wrprotected"] == 262144
    ev = m.vmstat()
    c.touch(a, 1 << 30)
    work = delta(m, ev)
    assert work["cow_pte_tables_duplicated"] == 512
    assert work["cow_pte_entries_copied"] == 262144
    assert work["cow_fault"] == 262144
    assert c.status()["VmRSS"] == 1 << 20 and c.status()["VmPTE"] == (1 + pmds + 512) * 4
    m.check()


def test_clone3_flag_checks_change_nothing():
    m = mmemu.Machine("64M")
    p, a = populated(m, 4)
    before = snapshot(m)
    for flags in (CLONE_COW_PGTABLE | CLONE_VM, CLONE_THREAD, CLONE_SIGHAND, 0x11, 1 << 40):
        with pytest.raises(mmemu.MMError) as e:
            p.clone3(flags)
        assert e.value.errno == errno.EINVAL
        assert snapshot(m) == before
    c = p.clone3(CLONE_COW_PGTABLE)
    assert table_of(c, a)[1] == table_of(p, a)[1]
    d = p.clone3(0)
    assert table_of(d, a)[1] != table_of(p, a)[1]
    m.check()


def test_prctl_switch_is_per_process_and_inherited():
    m = mmemu.Machine("64M")
    p, a = populated(m, 4)
    assert p.prctl(PR_GET_COW_PTE) == 0
    assert p.prctl(PR_SET_COW_PTE, 1) == 0 and p.prctl(PR_GET_COW_PTE) == 1
    c = p.fork()
    assert table_of(c, a)[1] == table_of(p, a)[1]
    assert c.prctl(PR_GET_COW_PTE) == 1
    g = c.fork()
    assert m.phys.pt_share[table_of(p, a)[1]] == 3 and table_of(g, a)[1] == table_of(p, a)[1]
    for bad in ((PR_SET_COW_PTE, 2), (PR_GET_COW_PTE, 1), (12345, 0)):
        with pytest.raises(mmemu.MMError) as e:
            p.prctl(*bad)
        assert e.value.errno == errno.EINVAL
    p.prctl(PR_SET_COW_PTE, 0)
    d = p.fork()
    assert table_of(d, a)[1] != table_of(p, a)[1]
    m.check()


@pytest.mark.parametrize("mode", MODES)
def test_checker_catches_cow_corruption(mode):
    m = machine(mode, "64M")
    p, a = populated(m, 8)
    c = p.fork(cow_pgtable=True)
    m.check()
    pmd, t = table_of(c, a)
    m.phys._debug_poke("pt_share", t, 1)
    with pytest.raises(InvariantError, match="pt_share differs"):
        m.check()
    m.phys._debug_poke("pt_share", t, 2)
    c.mm.core._debug_set_pmd(a, pmd | RWBIT)
    with pytest.raises(InvariantError, match="shared 2 ways but its PMD is writable"):
        m.check()
    c.mm.core._debug_set_pmd(a, pmd)
    m.check()
    if mode == "deferred":
        m.phys._debug_poke("pt_owner", t, 999)
        with pytest.raises(InvariantError, match="owner does not hold them"):
            m.check()
        m.phys._debug_poke("pt_owner", t, p.mm.core.id)
    m.check()


def test_deferred_fork_is_o_tables_eager_is_o_pages():
    """Deterministic work: deferred touches no page metadata at fork, eager touches every page."""
    for mode, touched in (("deferred", 0), ("eager", 512)):
        m = machine(mode)
        p, a = populated(m, 512)
        ref0 = np.array(m.phys.refcount[:1024])
        p.fork(cow_pgtable=True)
        assert int(np.count_nonzero(np.array(m.phys.refcount[:1024]) != ref0)) == touched
        m.check()


def test_debug_build_aborts_on_a_write_into_a_shared_table():
    """MMEMU_DEBUG=1 builds assert that no entry of a table shared by several PMDs is ever
    written: corrupt a child's PMD so a fault would fill the shared table directly. A debug
    build aborts with a message; a release build has no such check and carries on."""
    import subprocess
    import sys

    from mmemu._core.physmem import DEBUG_BUILD

    code = (
        "import mmemu\n"
        "from mmemu import MAP_ANONYMOUS, MAP_PRIVATE\n"
        "m = mmemu.Machine('64M', cow_pgtable=True)\n"
        "p = m.spawn(); a = p.mmap(0, 8192, 3, MAP_PRIVATE | MAP_ANONYMOUS); p.write(a, b'x')\n"
        "q = p.fork()\n"
        "q.mm.core._debug_set_pmd(a, q.mm.core.walk(a)[2] | 2)\n"
        "q.write(a + 4096, b'y')\n"
        "print('carried on')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if DEBUG_BUILD:
        assert r.returncode == -6 and "shared 2 ways" in r.stderr
    else:
        assert r.returncode == 0 and r.stdout == "carried on\n"


@pytest.mark.parametrize("mode", MODES)
def test_mremap_into_a_span_whose_table_is_shared(mode):
    """Moving pages next to a VMA whose PTE table is COW-shared must not write into the
    shared table: the destination span is broken first (and the data stays private)."""
    m = machine(mode)
    p = m.spawn()
    a = p.mmap(BASE, 4 * PG, RW, PRIV | MAP_FIXED)              # span 0 of BASE
    src = p.mmap(BASE + 8 * M2, 2 * PG, RW, PRIV | MAP_FIXED)    # elsewhere
    p.write(a, b"neighbour")
    p.write(src, b"moving")
    c = p.fork(cow_pgtable=True)
    assert table_of(c, a)[1] == table_of(p, a)[1]
    ev = m.vmstat()
    assert c.mremap(src, 2 * PG, 2 * PG, 3, BASE + 16 * PG) == BASE + 16 * PG   # MAYMOVE|FIXED
    assert delta(m, ev)["cow_pte_tables_duplicated"] >= 1
    assert table_of(c, a)[1] != table_of(p, a)[1]
    assert c.read(BASE + 16 * PG, 6) == b"moving" and c.read(a, 9) == b"neighbour"
    with pytest.raises(mmemu.SegmentationFault):
        p.read(BASE + 16 * PG, 1)                               # nothing leaked into the parent
    assert p.read(src, 6) == b"moving"
    m.check()


@pytest.mark.parametrize("mode", MODES)
def test_truncate_with_shared_tables_is_all_or_nothing(mode):
    """Truncating a file mapped privately by a parent and its COW child needs a private
    copy of the shared table in each process before the zap; if they do not fit, ENOMEM
    and nothing changed (file size included)."""
    m = machine(mode, "4M")
    f = m.create_file("/t", data=b"T" * (8 * PG))
    p = m.spawn()
    a = p.mmap(BASE, 8 * PG, RW, MAP_PRIVATE | MAP_FIXED, file=f)
    p.read(a, 8 * PG)
    p.write(a, b"w")                                    # anon_vma: the span is shared at fork
    c = p.fork(cow_pgtable=True)
    filler = m.spawn()
    b = filler.mmap(0, 4 << 20, RW, PRIV)
    with pytest.raises(mmemu.MMError):
        filler.touch(b, 4 << 20)
    before = snapshot(m)
    with pytest.raises(mmemu.MMError) as e:
        f.truncate(2 * PG)
    assert e.value.errno == errno.ENOMEM
    assert snapshot(m) == before and f.size == 8 * PG
    filler.munmap(b, 2 * PG)                            # room for both copies
    f.truncate(2 * PG)
    for q in (p, c):
        assert q.read(a + PG, 1) == b"T"
        with pytest.raises(mmemu.BusError):
            q.read(a + 3 * PG, 1)
    m.check()


@pytest.mark.parametrize("mode", MODES)
def test_child_sees_entries_classic_fork_would_not_copy(mode):
    """A VMA without an anon_vma (only read: zero-page entries) shares a span with one
    that has pages: classic fork gives the child no entries for it; a shared table shows
    the child the parent's zero-page entries (pagemap present, no RSS, same zeros)."""
    for cow in (False, True):
        m = machine(mode)
        p = m.spawn()
        a = p.mmap(BASE, 4 * PG, RW, PRIV | MAP_FIXED)
        b = p.mmap(BASE + 8 * PG, 4 * PG, PROT_READ, PRIV | MAP_FIXED)
        p.write(a, b"w")
        p.read(b, 4 * PG)
        c = p.fork(cow_pgtable=cow)
        entries = [int(x) for x in c.pagemap(b, 4)]
        if cow:
            assert entries == [(1 << 63) | m.phys.zero_pfn] * 4
        else:
            assert entries == [0] * 4
        assert c.read(b, 4 * PG) == bytes(4 * PG)
        # a's one written page: counted in the child except by deferred accounting
        assert c.status()["RssAnon"] == (0 if cow and mode == "deferred" else 4)
        m.check()
