"""Importing THP-backed live processes (mmemu.procfs.import_process): PMD-mapped THPs
become huge PMDs with their deposited tables, so VmPTE, RssAnon and AnonHugePages of the
imported process are the kernel's; then the helper really forks (caught by ptrace before
either side runs) and the emulated classic fork's child equals the real child."""
import errno

import pytest

import mmemu
from mmemu.oracle.live import LiveHelper, linux_proc_available, pfns_available
from mmemu.procfs import import_process, parse_smaps, read_proc, read_status

pytestmark = pytest.mark.one_design

_why = linux_proc_available() or pfns_available()
live = pytest.mark.skipif(bool(_why), reason=_why or "live kernel available")

PG = 4096
MiB = 1 << 20
BASE = 0x200000000000
PRIV, FIXED_NR, HUGEPAGE = 0x22, 0x100000, 14
FIELDS = ["VmPTE", "RssAnon", "RssFile", "RssShmem"]


def _thp_region(h, addr, length):
    r = h.call("mmap", addr=addr, len=length, prot=3, flags=PRIV | FIXED_NR)
    assert r.get("ret") == addr, r
    assert "ret" in h.call("madvise", addr=addr, len=length, advice=HUGEPAGE)
    return addr


def layout_thp_written(h):
    a = _thp_region(h, BASE, 8 * MiB)
    assert "ret" in h.call("fill", addr=a, len=8 * MiB)


def layout_thp_partly_split(h):
    a = _thp_region(h, BASE, 8 * MiB)
    assert "ret" in h.call("fill", addr=a, len=8 * MiB)
    assert "ret" in h.call("mprotect", addr=a + 2 * MiB + 5 * PG, len=PG, prot=1)   # one PTE-mapped
    assert "ret" in h.call("madvise", addr=a + 4 * MiB + 7 * PG, len=PG, advice=4)  # one split, a hole


def layout_thp_huge_zero_page(h):
    a = _thp_region(h, BASE, 4 * MiB)
    assert "ret" in h.call("touch", addr=a, len=4 * MiB)                   # reads
    assert "ret" in h.call("fill", addr=a + 2 * MiB, len=PG)               # one THP


def layout_thp_unaligned(h):
    a = _thp_region(h, BASE + PG, 6 * MiB)
    assert "ret" in h.call("fill", addr=a, len=6 * MiB)


LAYOUTS = {"thp_written": layout_thp_written, "thp_partly_split": layout_thp_partly_split,
           "thp_huge_zero_page": layout_thp_huge_zero_page, "thp_unaligned": layout_thp_unaligned}


def _fields(st):
    return {k: st[k] for k in FIELDS}


def _anon_huge(smaps):
    return sorted((v.start, v.fields.get("AnonHugePages", 0)) for v in smaps
                  if v.start >= BASE and v.start < BASE + (1 << 30))


@live
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_thp_import_and_fork_match_kernel(name):
    h = LiveHelper()
    try:
        LAYOUTS[name](h)
        kernel_smaps = parse_smaps(read_proc(h.pid, "smaps"))
        m = mmemu.Machine("4G")
        p = import_process(m, h.pid, stop=True)
        rep = p.import_report
        thps = sum(x for _, x in _anon_huge(kernel_smaps)) // 2048
        assert rep.huge_pmds == thps + (name == "thp_huge_zero_page") > 0
        assert rep.thp_pages == 0 or name == "thp_partly_split"
        assert _fields(rep.emulated_status) == _fields(rep.kernel_status), \
            (rep.mismatches(), rep.changed_while_read, rep.extra_tables)
        assert [(e["start"], e["AnonHugePages"]) for e in p.smaps()
                if BASE <= e["start"] < BASE + (1 << 30)] == _anon_huge(kernel_smaps)
        m.check()
        seen = {}

        def at_stop(parent, child):
            seen["child"] = read_status(child)
            m2 = mmemu.Machine("4G")
            q = import_process(m2, parent)
            seen["parent_mismatch"] = q.import_report.mismatches()
            c = q.fork()
            seen["emulated_child"] = c.status()
            m2.check()

        try:
            h.fork_traced(at_stop)
        except OSError as e:
            if e.errno in (errno.EPERM, errno.EACCES):
                pytest.skip(f"ptrace of the helper is not permitted here ({e})")
            raise
        assert seen["parent_mismatch"] == {}
        assert _fields(seen["emulated_child"]) == _fields(seen["child"])
    finally:
        h.close()


@live
def test_a_forked_pair_shares_its_thps():
    """The parent and the real child it just forked, imported into one machine: each THP
    is one folio both map by a PMD, as in the kernel (AnonPages counts it once)."""
    h = LiveHelper()
    try:
        layout_thp_written(h)
        seen = {}

        def at_stop(parent, child):
            m = mmemu.Machine("4G")
            a = import_process(m, parent)
            b = import_process(m, child)
            seen["reports"] = (a.import_report.mismatches(), b.import_report.mismatches())
            seen["heads"] = [(int(x.pagemap(BASE + i * 2 * MiB, 1)[0]) & ((1 << 55) - 1))
                             for x in (a, b) for i in range(4)]
            seen["pmds"] = (a.import_report.huge_pmds, b.import_report.huge_pmds)
            seen["thps"] = m.meminfo()["AnonHugePages"]
            m.check()

        try:
            h.fork_traced(at_stop)
        except OSError as e:
            if e.errno in (errno.EPERM, errno.EACCES):
                pytest.skip(f"ptrace of the helper is not permitted here ({e})")
            raise
        assert seen["reports"] == ({}, {})
        assert seen["pmds"] == (4, 4)
        assert seen["heads"][:4] == seen["heads"][4:]
        assert seen["thps"] == 8192
    finally:
        h.close()
