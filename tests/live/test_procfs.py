"""Importing live processes (mmemu.procfs): purpose-built helper processes with varied
layouts are imported, their /proc/PID/status must equal the emulated process's; then the
helper really forks (caught by ptrace before either side runs), and the emulated classic
fork's child must equal the real child.
"""
import errno
import os
import subprocess
import sys

import pytest

import mmemu
from mmemu.oracle.live import LiveHelper, linux_proc_available, pfns_available
from mmemu.procfs import ImportFailed, import_process, read_status

pytestmark = pytest.mark.one_design

_why = linux_proc_available() or pfns_available()
live = pytest.mark.skipif(bool(_why), reason=_why or "live kernel available")

PG = 4096
MiB = 1 << 20
BASE = 0x200000000000          # 32 TiB: far from anything Python maps
PRIV, SHARED, FIXED_NR = 0x22, 0x21, 0x100000
FIELDS = ["VmPTE", "RssAnon", "RssFile", "RssShmem"]


def _mmap(h, addr, length, prot=3, flags=PRIV, **kw):
    r = h.call("mmap", addr=addr, len=length, prot=prot, flags=flags | FIXED_NR, **kw)
    assert r.get("ret") == addr, r
    return addr


def _ok(r):
    assert "ret" in r, r


def _file(tmp_path, name, npages, byte=7):
    path = str(tmp_path / name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    for _ in range(npages):               # page by page: order-0 folios, as mmemu's cache
        os.write(fd, bytes([byte]) * PG)
    os.close(fd)
    return path


def layout_large(h, tmp_path):
    a = _mmap(h, BASE, 64 * MiB)
    _ok(h.call("fill", addr=a, len=64 * MiB))


def layout_sparse(h, tmp_path):
    a = _mmap(h, BASE, 256 * MiB)
    for off in (0, 5 * MiB + 3 * PG, 17 * MiB, 130 * MiB + 77 * PG, 255 * MiB):
        _ok(h.call("fill", addr=a + off, len=40 * PG, stride=3 * PG))


def layout_zero_page(h, tmp_path):
    a = _mmap(h, BASE, 8 * MiB)
    _ok(h.call("touch", addr=a, len=8 * MiB))            # read faults: the zero page
    b = _mmap(h, BASE + (1 << 30), 4 * MiB, prot=1)       # read-only anonymous, read
    _ok(h.call("touch", addr=b, len=4 * MiB, stride=2 * PG))


def layout_file_written_once(h, tmp_path):
    path = _file(tmp_path, "once.bin", 256)
    a = _mmap(h, BASE, 256 * PG, flags=0x02, path=path)
    _ok(h.call("touch", addr=a, len=256 * PG))
    _ok(h.call("fill", addr=a + 10 * PG, len=PG))          # one COW copy: an anon_vma


def layout_file_never_written(h, tmp_path):
    path = _file(tmp_path, "ro.bin", 300)
    a = _mmap(h, BASE, 300 * PG, prot=1, flags=0x02, path=path, rw=False)
    _ok(h.call("touch", addr=a, len=300 * PG, stride=PG))


def layout_shared_anon(h, tmp_path):
    a = _mmap(h, BASE, 6 * MiB, flags=SHARED)
    _ok(h.call("fill", addr=a, len=3 * MiB))
    _ok(h.call("touch", addr=a + 4 * MiB, len=MiB))


def layout_mprotect_split(h, tmp_path):
    a = _mmap(h, BASE, 16 * MiB)
    _ok(h.call("fill", addr=a, len=16 * MiB))
    _ok(h.call("mprotect", addr=a + 3 * MiB, len=5 * MiB, prot=1))
    _ok(h.call("mprotect", addr=a + 10 * MiB, len=MiB + 8 * PG, prot=0))


def layout_dontfork_wipeonfork(h, tmp_path):
    a = _mmap(h, BASE, 8 * MiB)
    _ok(h.call("fill", addr=a, len=8 * MiB))
    _ok(h.call("madvise", addr=a, len=4 * MiB, advice=10))                 # MADV_DONTFORK
    b = _mmap(h, BASE + (1 << 30), 8 * MiB)
    _ok(h.call("fill", addr=b, len=8 * MiB))
    _ok(h.call("madvise", addr=b + 2 * MiB, len=4 * MiB, advice=18))       # MADV_WIPEONFORK


def layout_dontneed_empty_span(h, tmp_path):
    """A table the kernel keeps without entries: the pages of part of a span were written,
    then MADV_DONTNEED'd (the span is not whole, so the table stays)."""
    a = _mmap(h, BASE, 4 * MiB)
    _ok(h.call("fill", addr=a, len=MiB))
    _ok(h.call("madvise", addr=a, len=MiB, advice=4))


LAYOUTS = {
    "large_anon": layout_large,
    "sparse_holes": layout_sparse,
    "zero_page": layout_zero_page,
    "private_file_written_once": layout_file_written_once,
    "private_file_never_written": layout_file_never_written,
    "shared_anon": layout_shared_anon,
    "mprotect_split": layout_mprotect_split,
    "dontfork_wipeonfork": layout_dontfork_wipeonfork,
    "dontneed_empty_span": layout_dontneed_empty_span,
}


def _fields(st):
    return {k: st[k] for k in FIELDS}


@live
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_import_and_fork_match_kernel(name, tmp_path):
    h = LiveHelper()
    try:
        LAYOUTS[name](h, tmp_path)
        m = mmemu.Machine("4G")
        p = import_process(m, h.pid, stop=True)     # nothing of it may run while it is read
        rep = p.import_report
        assert rep.thp_pages == 0
        assert _fields(rep.emulated_status) == _fields(rep.kernel_status), \
            (rep.mismatches(), rep.changed_while_read, rep.extra_tables)
        assert rep.emulated_status["VmSize"] == rep.kernel_status["VmSize"]
        m.check()

        seen = {}

        def at_stop(parent, child):
            seen["child"] = read_status(child)
            m2 = mmemu.Machine("4G")
            q = import_process(m2, parent)        # the parent as the fork left it
            seen["parent_mismatch"] = q.import_report.mismatches()
            c = q.fork()
            seen["emulated_child"] = c.status()
            m2.check()

        try:
            h.fork_traced(at_stop)
        except OSError as e:
            if e.errno in (errno.EPERM, errno.EACCES):
                pytest.skip(f"ptrace of the helper is not permitted here ({e}): the real fork "
                            "cannot be caught before its child runs")
            raise
        assert seen["parent_mismatch"] == {}
        assert _fields(seen["emulated_child"]) == _fields(seen["child"])
    finally:
        h.close()


@live
def test_two_processes_share_frames(tmp_path):
    """A parent and its real child imported into one machine: their shared anonymous pages
    become one frame mapped twice (PFNs from pagemap)."""
    h = LiveHelper()
    try:
        a = _mmap(h, BASE, 2 * MiB)
        _ok(h.call("fill", addr=a, len=2 * MiB))
        c = h.fork_helper()
        try:
            m = mmemu.Machine("4G")
            p = import_process(m, h.pid)
            q = import_process(m, c.pid)
            assert q.import_report.shared_frames >= 512
            pp, qq = p.pagemap(a, 512), q.pagemap(a, 512)
            pfn = (1 << 55) - 1
            assert ((pp & pfn) == (qq & pfn)).all()
            assert not ((pp >> 56) & 1).any()          # not exclusively mapped
            m.check()
            q.write(a, b"child")                       # a COW fault in the emulated child
            assert p.read(a, 5) != b"child"
            m.check()
        finally:
            c.close()
    finally:
        h.close()


@live
def test_contents_copied(tmp_path):
    h = LiveHelper()
    try:
        a = _mmap(h, BASE, 16 * PG)
        _ok(h.call("write", addr=a + 5, data=b"hello from linux".hex()))
        m = mmemu.Machine("4G")
        p = import_process(m, h.pid, contents=True)
        assert p.read(a + 5, 16) == b"hello from linux"
        assert p.import_report.contents_pages > 0
        m.check()
    finally:
        h.close()


@pytest.mark.skipif(bool(linux_proc_available()), reason=linux_proc_available() or "linux")
def test_errors_leave_nothing_behind():
    m = mmemu.Machine("1G")
    # a pid that does not exist
    with pytest.raises(ImportFailed) as e:
        import_process(m, 2 ** 22 + 12345)
    assert e.value.errno == errno.ESRCH
    # an exited process (a zombie: reaped only below)
    z = subprocess.Popen([sys.executable, "-c", "pass"])
    while True:
        with open(f"/proc/{z.pid}/stat") as f:
            if f.read().split(") ")[1][0] == "Z":
                break
    try:
        with pytest.raises(ImportFailed) as e:
            import_process(m, z.pid)
        assert e.value.errno == errno.ESRCH
    finally:
        z.wait()
    # a kernel thread (kthreadd, pid 2) has no address space
    if os.path.exists("/proc/2/status") and "VmSize" not in open("/proc/2/status").read():
        with pytest.raises(ImportFailed) as e:
            import_process(m, 2)
        assert e.value.errno in (errno.EINVAL, errno.EACCES)
    assert m.processes == [] and m.files == []
    assert m.meminfo()["PageTables"] == 0
    m.check()


@pytest.mark.skipif(bool(linux_proc_available()), reason=linux_proc_available() or "linux")
@pytest.mark.parametrize("reaped", [False, True], ids=["zombie", "reaped"])
def test_a_process_that_exits_during_the_import_is_esrch(monkeypatch, reaped):
    """The process dies after its pagemap was opened, before it was read: pagemap_read gives
    nothing once the mm is gone, which the import reported as ENOTSUP ("hidden by the
    kernel?"); it is ESRCH, with nothing added to the machine."""
    import mmemu.procfs as pf
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    real = pf.read_pagemap

    def dies_first(fd, start, npages):
        if child.poll() is None:
            child.kill()
            if reaped:
                child.wait()
            else:                                 # wait for the zombie, do not reap it
                while open(f"/proc/{child.pid}/stat").read().split(") ")[1][0] != "Z":
                    pass
        return real(fd, start, npages)

    monkeypatch.setattr(pf, "read_pagemap", dies_first)
    m = mmemu.Machine("1G")
    try:
        while "VmSize" not in read_status(child.pid):     # until the interpreter has an mm
            pass
        with pytest.raises(ImportFailed) as e:
            import_process(m, child.pid)
        assert e.value.errno == errno.ESRCH, e.value
    finally:
        child.kill()
        child.wait()
    assert m.processes == [] and m.files == [] and m.meminfo()["PageTables"] == 0
    m.check()


@pytest.mark.skipif(bool(linux_proc_available()), reason=linux_proc_available() or "linux")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges in a child")
def test_permission_denied():
    """A process of another user, read by an unprivileged importer: EACCES, nothing added."""
    code = ("import os, mmemu, sys; from mmemu.procfs import import_process, ImportFailed\n"
            "os.setgid(65534); os.setuid(65534)\n"
            "m = mmemu.Machine('1G')\n"
            "try:\n    import_process(m, 1)\nexcept ImportFailed as e:\n"
            "    assert not m.processes and not m.files; print(e.errno)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == str(errno.EACCES), out.stderr


def test_hidden_pagemap(monkeypatch):
    """A kernel without pagemap (or one that refuses it): ENOTSUP, nothing added."""
    if linux_proc_available() and linux_proc_available() != "this kernel has no /proc/PID/pagemap":
        pytest.skip(linux_proc_available())
    import mmemu.procfs as pf
    real = pf._open_proc

    def no_pagemap(pid, name, mode="r"):
        if name == "pagemap":
            raise ImportFailed(errno.ENOTSUP, "pagemap hidden")
        return real(pid, name, mode)

    monkeypatch.setattr(pf, "_open_proc", no_pagemap)
    m = mmemu.Machine("1G")
    with pytest.raises(ImportFailed) as e:
        import_process(m, os.getpid())
    assert e.value.errno == errno.ENOTSUP
    assert m.processes == [] and m.files == []


@live
def test_swapped_entries_are_imported(monkeypatch):
    """No swap device here, so the kernel's swap entries are simulated in the pagemap the
    importer reads: they become swap entries on the emulated swap device; the same kernel
    entry in two processes is one slot."""
    import numpy as np
    import mmemu.procfs as pf
    h = LiveHelper()
    try:
        a = _mmap(h, BASE, 64 * PG)
        _ok(h.call("fill", addr=a, len=64 * PG))
        real = pf.read_pagemap

        def with_swap(fd, start, npages):
            pm = real(fd, start, npages).copy()
            if start == BASE:
                for i in range(8):         # swap type 0, offsets 100..107
                    pm[i] = np.uint64((1 << 62) | ((100 + i) << 5))
            return pm

        monkeypatch.setattr(pf, "read_pagemap", with_swap)
        m = mmemu.Machine("4G")
        p = import_process(m, h.pid)
        q = import_process(m, h.pid)
        for x in (p, q):
            assert x.import_report.pages["swap"] == 8
            assert x.status()["VmSwap"] == 32
            assert x.status()["RssAnon"] == x.import_report.kernel_status["RssAnon"] - 32
            e = int(x.pagemap(a, 1)[0])
            assert (e >> 62) & 1 and not (e >> 63) & 1
        assert m.meminfo()["SwapTotal"] - m.meminfo()["SwapFree"] == 32     # 8 shared slots
        m.check()
        assert p.read(a, 4) == b"\0\0\0\0"       # contents of swapped pages are not imported
        m.check()
    finally:
        h.close()


@live
def test_stale_shared_frame_is_not_reused():
    """A parent imported, exited in the emulator, then its child imported: the frames the
    parent had are gone, so the child gets frames of its own."""
    h = LiveHelper()
    try:
        a = _mmap(h, BASE, 64 * PG)
        _ok(h.call("fill", addr=a, len=64 * PG))
        c = h.fork_helper()
        try:
            m = mmemu.Machine("4G")
            p = import_process(m, h.pid)
            p.exit()
            q = import_process(m, c.pid)
            assert q.import_report.shared_frames == 0
            m.check()
        finally:
            c.close()
    finally:
        h.close()


@pytest.mark.parametrize("pid, error", [(1.5, TypeError), ("12", TypeError), (True, TypeError),
                                        (0, ValueError), (-3, ValueError)])
def test_pid_must_be_a_positive_int(pid, error):
    m = mmemu.Machine("1G")
    before = m.meminfo()
    with pytest.raises(error):
        import_process(m, pid)
    assert m.processes == [] and m.meminfo() == before
    m.check()
