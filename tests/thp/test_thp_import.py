"""Importing THP-backed live processes (mmemu.procfs.import_process): PMD-mapped THPs
become huge PMDs with their deposited tables, so VmPTE, RssAnon and AnonHugePages of the
imported process are the kernel's; then the helper really forks (caught by ptrace before
either side runs) and the emulated classic fork's child equals the real child."""
import errno
import os

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


def _assert_real_fork_matches(h):
    """The helper really forks (both stopped by ptrace the moment fork returns); the parent
    imported then and forked in mmemu gives the real child's numbers."""
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
        _assert_real_fork_matches(h)
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


def _import_pmd_mapped(h, field: str, kb: int):
    """The helper's region shows kb kB of smaps `field` (FilePmdMapped, ShmemPmdMapped) in
    the kernel; imported (stopped, with contents) it becomes kb / 2048 PMDs with the same
    field, and VmPTE and the Rss fields are the kernel's. Returns (machine, process)."""
    kernel = [v.fields.get(field) for v in parse_smaps(read_proc(h.pid, "smaps"))
              if v.start == BASE]
    assert kernel == [kb]
    m = mmemu.Machine("4G")
    p = import_process(m, h.pid, stop=True, contents=True)
    rep = p.import_report
    assert rep.huge_pmds == kb // 2048
    assert _fields(rep.emulated_status) == _fields(rep.kernel_status), \
        (rep.mismatches(), rep.changed_while_read, rep.extra_tables)
    assert [e[field] for e in p.smaps() if e["start"] == BASE] == [kb]
    return m, p


def _file_pmd_mapped(path) -> int:
    """FilePmdMapped (kB) of this process's read fault on the first 2 MiB of path, mapped at
    a 2 MiB-aligned address: whether the kernel maps the file's large folio by a PMD here."""
    import ctypes
    import mmap
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fd = os.open(path, os.O_RDONLY)
    try:
        a = libc.mmap(BASE + 512 * MiB, 2 * MiB, mmap.PROT_READ, mmap.MAP_PRIVATE | FIXED_NR, fd, 0)
        ctypes.c_char.from_address(a).value
        kb = next(v.fields.get("FilePmdMapped", 0) for v in parse_smaps(read_proc(os.getpid(), "smaps"))
                  if v.start == a)
        libc.munmap(a, 2 * MiB)
        return kb
    finally:
        os.close(fd)


@live
def test_a_pmd_mapped_file_imports_as_file_pmds(tmp_path):
    """A file written in one write has PMD-sized folios in the kernel's page cache, and a
    read of an aligned private mapping maps each by a PMD (smaps FilePmdMapped, no PTE
    table): the import makes the same large folios and file PMDs, so VmPTE, RssFile and
    FilePmdMapped are the kernel's (before this, 4 kB more VmPTE per 2 MiB); the real fork
    (the child gets no copy of a file PMD) matches the emulated one."""
    path = str(tmp_path / "big")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.write(fd, bytes(range(256)) * (6 * MiB // 256))
    os.close(fd)
    if _file_pmd_mapped(path) != 2048:
        pytest.skip("this kernel or filesystem maps no large page-cache folio by a PMD")
    h = LiveHelper()
    try:
        r = h.call("mmap", addr=BASE, len=6 * MiB, prot=1, flags=0x02 | FIXED_NR, path=path,
                   rw=False, thp_advice=0)
        assert r.get("ret") == BASE, r
        assert "ret" in h.call("touch", addr=BASE, len=6 * MiB)
        m, p = _import_pmd_mapped(h, "FilePmdMapped", 6144)
        assert m.vmstat()["nr_file_hugepages"] == 3
        with open(path, "rb") as f:
            assert p.read(BASE + 2 * MiB - 3, 6) == f.read()[2 * MiB - 3:2 * MiB + 3]
        m.check()
        _assert_real_fork_matches(h)
    finally:
        h.close()


@live
def test_a_collapsed_shmem_region_imports_as_shmem_pmds():
    """MADV_COLLAPSE of written shared anonymous memory gives the kernel PMD-sized shmem
    folios mapped by PMDs (smaps ShmemPmdMapped, no PTE table): the import makes the same
    folios in the emulated shmem object and maps them by PMDs, so VmPTE, RssShmem and
    ShmemPmdMapped are the kernel's, and the real fork (no copy of a shared VMA) matches."""
    h = LiveHelper()
    try:
        r = h.call("mmap", addr=BASE, len=4 * MiB, prot=3, flags=0x21 | FIXED_NR, thp_advice=0)
        assert r.get("ret") == BASE, r
        assert "ret" in h.call("fill", addr=BASE, len=4 * MiB, byte=5)
        r = h.call("madvise", addr=BASE, len=4 * MiB, advice=25)      # MADV_COLLAPSE
        if "ret" not in r:
            pytest.skip(f"this kernel does not collapse shmem here ({r})")
        m, p = _import_pmd_mapped(h, "ShmemPmdMapped", 4096)
        assert m.meminfo()["ShmemHugePages"] == 4096
        assert p.read(BASE + 2 * MiB - 2, 4) == b"\x05" * 4
        p.write(BASE + 5, b"w")                 # writable at once: shmem has no writenotify
        assert m.vmstat()["thp_split_pmd"] == 0
        m.check()
        _assert_real_fork_matches(h)
    finally:
        h.close()
