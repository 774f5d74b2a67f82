"""TLB flush counters (arch/x86/mm/tlb.c, mm/mmu_gather.c; tlb.pxd) where THP code flushes,
and THP under the COW page-table series' versions. With CONFIG_DEBUG_TLBFLUSH a flush of
more than 33 pages (tlb_single_page_flush_ceiling) is one NR_TLB_LOCAL_FLUSH_ALL, a shorter
one NR_TLB_LOCAL_FLUSH_ONE per page; x86 flush_pmd_tlb_range is flush_tlb_range over the 2 MiB
(512 pages, PAGE_SHIFT stride), so every PMD-sized flush is one full flush. The live kernel
here has no CONFIG_DEBUG_TLBFLUSH (no nr_tlb_* in /proc/vmstat), so the values follow the
kernel source: __split_huge_pmd_locked's pmdp_invalidate, do_huge_zero_wp_pmd's
pmdp_huge_clear_flush, zap_huge_pmd's tlb_remove_pmd_tlb_entry, change_huge_pmd's
tlb_flush_pmd_range."""
import pytest

import mmemu
from conftest import PG, RW, PRIV
from mmemu._core.constants import PM_PRESENT

pytestmark = pytest.mark.one_design

M = 1 << 20
SPAN = 2 * M
A = 0x300000000000
TLB = ("nr_tlb_local_flush_all", "nr_tlb_local_flush_one", "nr_tlb_remote_flush",
       "nr_tlb_remote_flush_received")


def delta(m, fn):
    """What fn changed in the TLB counters, thp_split_pmd and ptes_zapped."""
    keys = TLB + ("thp_split_pmd", "ptes_zapped")
    before = m.vmstat()
    fn()
    after = m.vmstat()
    return {k: after[k] - before[k] for k in keys}


def flushes(all_=0, one=0, split=0, zapped=0):
    return {"nr_tlb_local_flush_all": all_, "nr_tlb_local_flush_one": one,
            "nr_tlb_remote_flush": 0, "nr_tlb_remote_flush_received": 0,
            "thp_split_pmd": split, "ptes_zapped": zapped}


def two_thps():
    m = mmemu.Machine("64M", thp="always")
    p = m.spawn()
    a = p.mmap(A, 2 * SPAN, RW, PRIV | mmemu.MAP_FIXED_NOREPLACE)
    assert delta(m, lambda: p.write(a, b"x" * (2 * SPAN))) == flushes()   # faults flush nothing
    assert m.vmstat()["nr_anon_transparent_hugepages"] == 2
    return m, p, a


def test_a_thp_split_flushes_the_pmd_then_the_zapped_page():
    """MADV_DONTNEED of one page of a THP: zap_pmd_range splits the PMD (pmdp_invalidate:
    one full flush of the 2 MiB), then zap_pte_range gathers the one cleared PTE
    (tlb_finish_mmu: one page flushed)."""
    m, p, a = two_thps()
    assert delta(m, lambda: p.madvise(a + PG, PG, mmemu.MADV_DONTNEED)) == flushes(
        all_=1, one=1, split=1, zapped=1)
    assert p.read(a, 1) == b"x" and p.read(a + PG, 1) == b"\0" and p.read(a + 2 * PG, 1) == b"x"
    assert m.vmstat()["nr_anon_transparent_hugepages"] == 1     # the folio stays whole, PTE-mapped
    m.check()


@pytest.mark.parametrize("how", ["dontneed", "munmap"])
def test_zapping_a_whole_huge_pmd_flushes_its_2mib_once(how):
    """zap_huge_pmd: tlb_remove_pmd_tlb_entry gathers the 2 MiB; tlb_finish_mmu flushes it
    as one full flush (512 pages > 33); nothing is split."""
    m, p, a = two_thps()
    zap = (lambda: p.madvise(a + SPAN, SPAN, mmemu.MADV_DONTNEED)) if how == "dontneed" \
        else (lambda: p.munmap(a + SPAN, SPAN))
    assert delta(m, zap) == flushes(all_=1, zapped=1)
    assert m.vmstat()["nr_anon_transparent_hugepages"] == 1
    assert p.read(a, 1) == b"x"
    m.check()


def test_mprotect_of_a_huge_pmd_flushes_only_when_it_changes():
    """change_huge_pmd: huge_pmd_needs_flush (RW lost) gathers the 2 MiB, one full flush;
    the same protection again changes nothing and flushes nothing."""
    m, p, a = two_thps()
    assert delta(m, lambda: p.mprotect(a, SPAN, mmemu.PROT_READ)) == flushes(all_=1)
    assert delta(m, lambda: p.mprotect(a, SPAN, mmemu.PROT_READ)) == flushes()
    m.check()


def test_a_write_to_the_huge_zero_page_flushes_its_pmd():
    """do_huge_zero_wp_pmd: pmdp_huge_clear_flush of the huge zero PMD, one full flush."""
    m = mmemu.Machine("64M", thp="always")
    p = m.spawn()
    a = p.mmap(A, SPAN, RW, PRIV | mmemu.MAP_FIXED_NOREPLACE)
    assert delta(m, lambda: p.read(a, 1)) == flushes()
    assert m.vmstat()["thp_zero_page_alloc"] == 1
    assert delta(m, lambda: p.write(a + PG, b"w")) == flushes(all_=1)
    assert m.vmstat()["nr_anon_transparent_hugepages"] == 1 and p.read(a + PG, 2) == b"w\0"
    m.check()


# ---- THP and the COW page-table versions ----

@pytest.mark.parametrize("version, duplicated, zero_in_parent", [
    ("v5", 0, True), ("v3", 0, True),       # v3-v5: an anonymous read fault keeps the share
    ("v1", 1, False), (None, 1, False),     # v1/v2 and mmemu's own: any fault breaks
])
def test_a_read_under_a_shared_pte_table_follows_the_version_not_the_huge_zero_page(
        version, duplicated, zero_in_parent):
    """A THP-eligible span whose PMD links a COW-shared PTE table is a PTE-level fault
    (create_huge_pmd only for a none PMD): the version's rule decides, the huge zero page is
    not used. A span holding a huge PMD is copied by copy_huge_pmd, never shared as a PTE
    table."""
    m = mmemu.Machine("256M", cow_pte_version=version, thp="never")
    p = m.spawn()
    a = p.mmap(A, 2 * SPAN, RW, PRIV | mmemu.MAP_FIXED_NOREPLACE)
    p.write(a, b"pte")                  # a PTE table (THP off)
    m.thp = "always"
    p.write(a + SPAN, b"huge")          # a huge PMD
    assert m.vmstat()["nr_anon_transparent_hugepages"] == 1
    m.reset_vmstat()
    c = p.fork(cow_pgtable=True)
    assert m.vmstat()["cow_pte_tables_shared"] == 1     # the PTE table only
    m.reset_vmstat()
    assert c.read(a + 5 * PG, 4) == b"\0" * 4
    v = m.vmstat()
    assert v["cow_pte_tables_duplicated"] == duplicated
    assert v["fault_zero_page"] == 1 and v["thp_zero_page_alloc"] == 0 and v["thp_fault_alloc"] == 0
    assert bool(p.pagemap(a + 5 * PG, 1)[0] & PM_PRESENT) == zero_in_parent
    assert c.read(a + SPAN, 4) == b"huge" and c.read(a, 3) == b"pte"
    c.write(a + SPAN, b"H")             # COW of the shared THP: split, copy one page
    assert p.read(a + SPAN, 4) == b"huge" and c.read(a + SPAN, 4) == b"Huge"
    assert m.vmstat()["thp_split_pmd"] == 1
    m.check()
