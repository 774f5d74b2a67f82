"""The CONFIG_DEBUG_TLBFLUSH counters (nr_tlb_local_flush_one / _all, nr_tlb_remote_flush /
_received), counted where the modelled kernel flushes (_core/tlb.pxd): one path per test.

The rule (arch/x86/mm/tlb.c flush_tlb_mm_range, flush_tlb_func): a range of more than
tlb_single_page_flush_ceiling = 33 pages is one full flush; a shorter one counts one per
page. One CPU is modelled, running the mm that is flushed: the remote counters stay 0.
The development kernel is built without CONFIG_DEBUG_TLBFLUSH (its /proc/vmstat has no
nr_tlb_* lines), so the live kernel cannot judge these numbers; the docs cite the code."""
import pytest

from mmemu import (
    MADV_DONTNEED, MADV_FREE, MAP_FIXED, MREMAP_FIXED, MREMAP_MAYMOVE, PROT_READ, Machine,
)

from conftest import PG, PRIV, RW

pytestmark = pytest.mark.one_design

BASE = 0x7E0000000000
OTHER = 0x7D0000000000
SPAN = 2 << 20
NAMES = ("nr_tlb_local_flush_one", "nr_tlb_local_flush_all", "nr_tlb_remote_flush",
         "nr_tlb_remote_flush_received")


def flushes(m, op):
    """(one, all) that op added; the remote counters must stay 0."""
    before = dict(m.vmstat())
    op()
    after = dict(m.vmstat())
    d = [int(after[k] - before[k]) for k in NAMES]
    assert d[2:] == [0, 0] and after[NAMES[2]] == after[NAMES[3]] == 0
    return tuple(d[:2])


@pytest.fixture
def mp():
    m = Machine("256M")
    p = m.spawn()
    p.mmap(BASE, SPAN, RW, PRIV | MAP_FIXED)
    p.touch(BASE, 64 * PG)
    return m, p


def test_the_counters_have_linux_names_and_tlb_flush_is_gone():
    names = dict(Machine("64M").vmstat())
    assert all(n in names for n in NAMES) and "tlb_flush" not in names


def test_fork_flushes_the_parent_once(mp):
    """dup_mmap: flush_tlb_mm(oldmm) after the write-protect, whatever was copied."""
    m, p = mp
    assert flushes(m, p.fork) == (0, 1)
    m2 = Machine("64M")
    assert flushes(m2, m2.spawn().fork) == (0, 1)


@pytest.mark.parametrize("pages, expect", [(1, (1, 0)), (33, (33, 0)), (34, (0, 1))])
def test_munmap_flushes_the_range_it_zapped(mp, pages, expect):
    """unmap_region: tlb_gather_mmu, unmap_vmas (tlb_remove_tlb_entry per present PTE),
    tlb_finish_mmu: one flush_tlb_mm_range over the gathered range."""
    m, p = mp
    assert flushes(m, lambda: p.munmap(BASE + 8 * PG, pages * PG)) == expect
    m.check()


def test_munmap_of_untouched_pages_flushes_nothing(mp):
    m, p = mp
    assert flushes(m, lambda: p.munmap(BASE + 100 * PG, 8 * PG)) == (0, 0)


def test_madvise_dontneed_and_free_flush_what_they_zap(mp):
    """zap_page_range_single's mmu_gather (MADV_DONTNEED), madvise_free_pte_range's."""
    m, p = mp
    assert flushes(m, lambda: p.madvise(BASE, 2 * PG, MADV_DONTNEED)) == (2, 0)
    assert flushes(m, lambda: p.madvise(BASE, 2 * PG, MADV_DONTNEED)) == (0, 0)
    assert flushes(m, lambda: p.madvise(BASE + 4 * PG, 3 * PG, MADV_FREE)) == (3, 0)
    m.check()


def test_mprotect_flushes_entries_whose_change_needs_it(mp):
    """change_pte_range: tlb_flush_pte_range only where pte_needs_flush (a present entry
    whose RW bit changed, either way); entries not present need none."""
    m, p = mp
    assert flushes(m, lambda: p.mprotect(BASE, 3 * PG, PROT_READ)) == (3, 0)
    assert flushes(m, lambda: p.mprotect(BASE, 3 * PG, RW)) == (3, 0)
    assert flushes(m, lambda: p.mprotect(BASE + 100 * PG, 3 * PG, PROT_READ)) == (0, 0)
    assert flushes(m, lambda: p.mprotect(BASE, 64 * PG, PROT_READ)) == (0, 1)
    m.check()


def test_mremap_flushes_moved_ptes_and_moved_tables(mp):
    """move_ptes: flush_tlb_range(old_end - len, old_end) when a present PTE moved;
    move_normal_pmd: flush_tlb_range over the 2 MiB it relinked."""
    m, p = mp
    assert flushes(m, lambda: p.mremap(BASE, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED,
                                       OTHER)) == (2, 0)
    p.mmap(BASE + SPAN, SPAN, RW, PRIV | MAP_FIXED)
    p.touch(BASE + SPAN, SPAN)
    assert flushes(m, lambda: p.mremap(BASE + SPAN, SPAN, SPAN, MREMAP_MAYMOVE | MREMAP_FIXED,
                                       OTHER + SPAN)) == (0, 1)
    assert p.read(OTHER + SPAN, 1) == b"\0"
    m.check()


def test_the_cow_fault_flushes_one_page(mp):
    """wp_page_copy: ptep_clear_flush -> flush_tlb_page; a reuse flushes nothing."""
    m, p = mp
    c = p.fork()
    assert flushes(m, lambda: p.write(BASE, b"x")) == (1, 0)
    c.exit()
    assert flushes(m, lambda: p.write(BASE + PG, b"x")) == (0, 0)
    assert flushes(m, lambda: p.read(BASE + 200 * PG, 1)) == (0, 0)
    assert flushes(m, lambda: p.write(BASE + 200 * PG, b"z")) == (1, 0)   # from the zero page
    m.check()


def test_exit_flushes_the_whole_mm_once(mp):
    """exit_mmap: tlb_gather_mmu_fullmm ... tlb_finish_mmu: one full flush."""
    m, p = mp
    c = p.fork()
    assert flushes(m, c.exit) == (0, 1)
    assert flushes(m, p.exit) == (0, 1)
    assert flushes(m, lambda: Machine("64M").spawn().exit()) == (0, 0)


def test_swap_out_flushes_once_per_batch():
    """shrink_folio_list with TTU_BATCH_FLUSH: try_to_unmap_flush, one full flush."""
    m = Machine("256M", swap="16M")
    p = m.spawn()
    p.mmap(BASE, 8 * PG, RW, PRIV | MAP_FIXED)
    p.touch(BASE, 8 * PG)
    assert flushes(m, lambda: p.swap_out(BASE, 8 * PG)) == (0, 1)
    assert flushes(m, lambda: p.swap_out(BASE, 8 * PG)) == (0, 0)
    m.check()


def _shared(version=None, accounting=None):
    m = Machine("256M", cow_pte_version=version, cow_pte_accounting=accounting)
    p = m.spawn()
    p.mmap(BASE, SPAN, RW, PRIV | MAP_FIXED)
    p.touch(BASE, 4 * PG)
    return m, p, p.fork(cow_pgtable=True)


@pytest.mark.parametrize("version, accounting, dup, reuse", [
    ("v5", None, (1, 1), (0, 1)),        # v3-v5: a 2 MiB flush on every break, reuse too
    ("v1", None, (1, 0), (0, 0)),        # v1: no flush of the PMD change (its TODO)
    ("v2", None, (1, 0), (0, 0)),
    (None, "eager", (1, 1), (0, 0)),     # mmemu: when the PMD points at a new table
    (None, "deferred", (1, 1), (0, 0)),
])
def test_break_flush_per_version(version, accounting, dup, reuse):
    """break_cow_pte (a copy for the child, then the COW fault's page), then the reuse by
    the last holder (its page is exclusive again: wp reuse, no page flush)."""
    m, p, c = _shared(version, accounting)
    assert flushes(m, lambda: c.write(BASE, b"c")) == dup
    assert flushes(m, lambda: p.write(BASE, b"p")) == reuse
    m.check()


@pytest.mark.parametrize("version", ["v1", "v2", "v5", None])
def test_drop_of_a_shared_table_flushes_with_the_unmap(version):
    """munmap of a whole shared span: zap_pte_range still gathers the shared entries
    (tlb_remove_tlb_entry; v1 -7, v4 -4), one flush of the span; at exit the fullmm flush
    covers the dropped tables: exit's one full flush only."""
    m, p, c = _shared(version)
    assert flushes(m, lambda: c.munmap(BASE, SPAN)) == (0, 1)
    m2, p2, c2 = _shared(version)
    assert flushes(m2, c2.exit) == (0, 1)
    m.check()
    m2.check()
