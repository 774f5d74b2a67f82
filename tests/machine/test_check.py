"""The invariant checker catches every kind of inconsistency it claims to."""
import pytest

import mmemu
from conftest import PG, PRIV, RW, SHARED
from mmemu import InvariantError, VmFlags

# the corruptions below are aimed at a classic fork's tables; COW page tables have their own
# checker tests in test_cow_pte.py
pytestmark = pytest.mark.one_design


@pytest.fixture
def setup():
    m = mmemu.Machine("64M", cow_pgtable=False)
    p = m.spawn()
    a = p.mmap(0, 4 * PG, RW, PRIV)
    p.write(a, b"abcd" * 4096)
    c = p.fork()
    m.check()
    pfn = int(p.pagemap(a, 1)[0]) & ((1 << 55) - 1)
    return m, p, c, a, pfn


def expect(m, text):
    with pytest.raises(InvariantError) as e:
        m.check()
    assert text in str(e.value)


def test_clean_state_passes(setup):
    m, p, c, a, pfn = setup
    c.write(a, b"x")
    p.write(a + PG, b"y")
    m.check()


@pytest.mark.parametrize("field,value,text", [
    ("mapcount", 1, "mapcount differs"),
    ("refcount", 3, "refcount differs"),
    ("flags", 1 | 2 | 128, "PageAnonExclusive pages mapped more than once"),
    ("nr_anon_mapped", 99, "nr_anon_mapped: counter 99"),
])
def test_frame_metadata_corruption(setup, field, value, text):
    m, p, c, a, pfn = setup
    m.phys._debug_poke(field, pfn, value)
    expect(m, text)


def test_rss_corruption(setup):
    m, p, c, a, pfn = setup
    c.mm.core._debug_poke("rss", 5, 1)
    expect(m, f"pid {c.pid}: rss")


def test_pgtables_bytes_corruption(setup):
    m, p, c, a, pfn = setup
    p.mm.core._debug_poke("pgtables_bytes", 4096)
    expect(m, "pgtables_bytes 4096 but 3 PUD/PMD/PTE tables")


def test_pt_share_corruption(setup):
    m, p, c, a, pfn = setup
    table = p.mm.core.walk(a)[2] >> 12 & ((1 << 40) - 1)
    m.phys._debug_poke("pt_share", table, 2)
    expect(m, "pt_share differs")


def test_pte_outside_any_vma(setup):
    m, p, c, a, pfn = setup
    p.mm.vmas.clear()
    expect(m, "PTEs lie outside every VMA")


def test_writable_pte_without_vm_write(setup):
    m, p, c, a, pfn = setup
    p.write(a + 2 * PG, b"w")          # exclusive again after the copy: writable PTE
    p.mm.vmas[0].set_flags(p.mm.vmas[0].flags & ~VmFlags.WRITE)
    expect(m, "writable PTE in a VMA without VM_WRITE")


def test_writable_pte_to_cow_shared_page(setup):
    m, p, c, a, pfn = setup
    e = p.mm.core.walk(a)[3]
    p.mm.core._debug_set_pte(a, e | 2)
    expect(m, "writable PTE to a shared anon page")


def test_pte_to_free_frame(setup):
    m, p, c, a, pfn = setup
    e = p.mm.core.walk(a)[3]
    free_pfn = m.phys.nframes // 2          # never handed out
    p.mm.core._debug_set_pte(a, (e & ~(((1 << 40) - 1) << 12)) | (free_pfn << 12))
    expect(m, f"maps free frame {free_pfn}")


def test_leaked_frame(setup):
    m, p, c, a, pfn = setup
    leak = int(p.pagemap(a + 3 * PG, 1)[0]) & ((1 << 55) - 1)
    for q in (p, c):
        q.mm.core._debug_set_pte(a + 3 * PG, 0)
        q.mm.core._debug_poke("rss", 3, 1)
    m.phys._debug_poke("mapcount", leak, 0)
    m.phys._debug_poke("nr_anon_mapped", 0, 3)
    expect(m, f"1 frames in use but neither mapped nor cached: {leak}")


def test_shmem_cache_counts(setup):
    m, p, c, a, pfn = setup
    s = p.mmap(0, 2 * PG, RW, SHARED)
    p.write(s, b"q")
    m.check()
    spfn = int(p.pagemap(s, 1)[0]) & ((1 << 55) - 1)
    m.phys._debug_poke("refcount", spfn, 1)     # the page-cache reference went missing
    expect(m, "page cache 1")
