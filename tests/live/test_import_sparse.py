"""import_process scales with the pages a process has, not with its address space
(mmemu.procfs): pagemap is read only where PAGEMAP_SCAN finds pages (or, without it,
where smaps says pages can be), in bounded chunks, and the empty page tables the kernel
keeps are placed in one linear pass. Live helper processes are the kernel's side."""
import pytest

import mmemu
import mmemu.procfs as pf
from mmemu.oracle.live import linux_proc_available
from mmemu.procfs import import_process
from live_layouts import (
    HELPER, PAGES_AT, RESERVATION, RESERVED, one_page_vmas, start_helper, stop_helper,
)
from hostmem import HOST_LIMIT_MB, host_growth, needs_clear_refs

live = pytest.mark.skipif(bool(linux_proc_available()), reason=linux_proc_available() or "live")
pytestmark = [live, pytest.mark.one_design]

def assert_matches_kernel(p):
    r = p.import_report
    assert r.mismatches() == {}, r.mismatches()
    assert not r.changed_while_read


@needs_clear_refs
def test_16tib_reservation_costs_nothing_to_import():
    """The reservation is imported as one VMA, its pages are never read: the importer's
    peak RSS grows by less than HOST_LIMIT_MB (it was OOM-killed before)."""
    out = host_growth(f"""
    import subprocess, sys, time
    from mmemu.procfs import import_process
    h = subprocess.Popen([sys.executable, "-c", {HELPER.format(body=RESERVATION)!r}],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert h.stdout.readline().strip() == "READY"

    def run():
        m = mmemu.Machine("4G")
        t = time.perf_counter()
        p = import_process(m, h.pid, stop=True)
        s = time.perf_counter() - t
        r = p.import_report
        big = [e for e in p.smaps() if e["start"] == {RESERVED:#x}]
        anon = sum(int(e) >> 63 for e in p.pagemap({PAGES_AT:#x}, 64))
        m.check()
        h.stdin.write("\\n"); h.stdin.flush(); h.wait()
        return {{"mismatches": {{k: list(v) for k, v in r.mismatches().items()}},
                "vma_kb": big[0]["Size"] if big else None, "anon": anon, "s": s}}
    """)
    assert out["mismatches"] == {} and out["vma_kb"] == 16 << 30 and out["anon"] == 64
    assert out["grown_mb"] < HOST_LIMIT_MB, out


def test_import_without_pagemap_scan_skips_empty_reservations(monkeypatch):
    """A kernel without PAGEMAP_SCAN (before 6.7): every VMA is read in chunks but the
    PROT_NONE ones smaps shows empty; both imports match the kernel (the helper may touch
    an anonymous page of its own between them, when it is stopped and continued)."""
    h = start_helper(RESERVATION)
    try:
        m = mmemu.Machine("4G")
        with_scan = import_process(m, h.pid, stop=True)

        def no_scan(*args):
            raise pf._NoScan()
        monkeypatch.setattr(pf, "scan_pagemap", no_scan)
        read = []
        real = pf.read_pagemap
        monkeypatch.setattr(pf, "read_pagemap", lambda fd, a, n: read.append(n) or real(fd, a, n))
        without = import_process(m, h.pid, stop=True)
        for p in (with_scan, without):
            assert_matches_kernel(p)
        assert {k: v for k, v in without.import_report.pages.items() if k != "anon"} == \
            {k: v for k, v in with_scan.import_report.pages.items() if k != "anon"}
        assert [int(e) >> 63 for e in without.pagemap(PAGES_AT, 64)] == [1] * 64
        assert max(read) <= pf._READ_CHUNK and sum(read) < 1 << 24      # not 2**32 entries
        m.check()
    finally:
        stop_helper(h)


@pytest.mark.long
def test_30000_dontneed_vmas_import_with_the_kernels_vmpte():
    """Each VMA's page went (MADV_DONTNEED) but the kernel keeps its PTE table: the
    importer places an empty table per span, in one pass, until VmPTE is the kernel's."""
    n = 30000
    h = start_helper(one_page_vmas(n, dontneed=True))
    try:
        m = mmemu.Machine("4G")
        p = import_process(m, h.pid, stop=True)
        assert_matches_kernel(p)
        r = p.import_report
        assert r.kernel_status["VmPTE"] >= 4 * n
        spans = {PAGES_AT + i * (2 << 20) for i in range(n)}
        assert len(spans & set(r.extra_tables)) >= n - 64
        assert sum(1 for v in p.mm.vmas if v.start in spans) == n
        tables = list(p.pagemap_chunks(PAGES_AT, n * 512))
        assert len(tables) >= n - 64 and not any(ent.any() for _, ent in tables)
        m.check()
    finally:
        stop_helper(h)
