"""Threads: one Machine is safe from any number of threads (a lock per machine, taken by every
public entry point), and different machines run side by side. The stress runs happen in a
subprocess: before the lock they ended in a segmentation fault or an abort ("shared PTE table
... has no other holder"), which must fail the test, not kill the test run."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

import mmemu
from mmemu import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE

PG = 4096
RW = PROT_READ | PROT_WRITE
PRIV = MAP_PRIVATE | MAP_ANONYMOUS

pytestmark = pytest.mark.one_design


def _run(code: str, timeout: int = 120) -> str:
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"
    return r.stdout


ONE_PROCESS_THREE_THREADS = """
    import threading, time, mmemu
    from mmemu import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PROT_READ, PROT_WRITE
    RW, PRIV, PG, SZ = PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, 4096, 64 << 20
    m = mmemu.Machine("4G", cow_pte_accounting="{mode}")
    p = m.spawn()
    a = p.mmap(0, SZ, RW, PRIV)
    p.touch(a, SZ)
    errors = []
    deadline = time.monotonic() + 3        # it crashed within 3 s before the lock
    def guard(fn):
        def run():
            try:
                while time.monotonic() < deadline:
                    fn()
            except Exception as e:
                errors.append(repr(e))
        return run
    def toucher():
        try:
            p.touch(a, SZ)
        except mmemu.SegmentationFault:
            pass                              # the remapper had a piece unmapped
    def remapper():
        for off in range(0, SZ, 4 << 20):
            p.munmap(a + off, 2 << 20)
            p.mmap(a + off, 2 << 20, RW, PRIV | MAP_FIXED)
    def forker():
        c = p.fork(cow_pgtable=True)
        try:
            c.touch(a, SZ)
        except mmemu.SegmentationFault:
            pass
        c.exit()
    ts = [threading.Thread(target=guard(f)) for f in (toucher, remapper, forker)]
    for t in ts: t.start()
    for t in ts: t.join()
    m.check()
    p.exit()
    m.check()
    print("ok", errors, m.meminfo()["MemFree"] == m.meminfo()["MemTotal"] - 4)
"""


@pytest.mark.parametrize("mode", ["deferred", "eager"])
def test_one_process_three_threads(mode):
    """Touching, munmap + mmap(MAP_FIXED) and forking COW children at once on one process:
    no crash, no error other than the emulated signals, every invariant, nothing leaked."""
    out = _run(ONE_PROCESS_THREE_THREADS.replace("{mode}", mode))
    assert out.split() == ["ok", "[]", "True"]


def test_two_threads_own_processes_of_one_machine():
    """Two threads each spawning and driving their own processes of one Machine: unique pids,
    no PTE mapping a free frame (m.check()), everything freed at the end (before the lock:
    duplicate pids and PTEs mapping free frames)."""
    m = mmemu.Machine("2G")
    pids, errors = [], []
    deadline = time.monotonic() + 2

    def drive(tag: bytes):
        try:
            while time.monotonic() < deadline:
                p = m.spawn()
                pids.append(p.pid)
                a = p.mmap(0, 16 << 20, RW, PRIV)
                p.touch(a, 16 << 20)
                p.write(a, tag * PG)
                c = p.fork()
                c.write(a + PG, tag)
                assert p.read(a, PG) == tag * PG and c.read(a + PG, 1) == tag
                c.exit()
                p.exit()
        except Exception as e:  # noqa: BLE001 -- reported below with the thread's tag
            errors.append((tag, repr(e)))

    ts = [threading.Thread(target=drive, args=(t,)) for t in (b"a", b"b")]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
    assert len(pids) > 2 and len(set(pids)) == len(pids)
    assert m.processes == []
    m.check()
    assert m.meminfo()["MemFree"] == m.meminfo()["MemTotal"] - 4


def test_many_machines_many_threads():
    """Four threads, each with its own Machine, forking and writing: each machine ends in the
    state a single-threaded run gives (same vmstat work counters), and checks."""
    def work(m):
        p = m.spawn()
        a = p.mmap(0, 4 << 20, RW, PRIV)
        p.touch(a, 4 << 20)
        for i in range(20):
            c = p.fork(cow_pgtable=bool(i % 2) or None)
            c.write(a + i * PG, bytes([i]) * 100)
            assert c.read(a + i * PG, 100) == bytes([i]) * 100
            c.exit()
        p.madvise(a, 1 << 20, mmemu.MADV_DONTNEED)
        return dict(m.vmstat())

    alone = work(mmemu.Machine("256M"))
    machines = [mmemu.Machine("256M") for _ in range(4)]
    results = [None] * 4

    def run(i):
        results[i] = work(machines[i])

    ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert results == [alone] * 4
    for m in machines:
        m.check()


def test_public_entry_points_take_the_lock():
    """Every public method and property of Machine, Process and File is wrapped by the lock
    (a new public method that forgets it fails here)."""
    import inspect
    from mmemu.file import File
    from mmemu.process import Process
    missing = []
    for cls in (mmemu.Machine, Process, File):
        for name, attr in vars(cls).items():
            if name.startswith("_") or isinstance(attr, (staticmethod, classmethod)):
                continue
            fn = attr.fget if isinstance(attr, property) else attr
            if inspect.isfunction(fn) and not getattr(fn, "__mmemu_locked__", False):
                missing.append(f"{cls.__name__}.{name}")
    assert missing == []


def test_a_call_waits_for_the_lock():
    """While another thread holds the machine's lock, a syscall waits; it runs once the lock
    is released."""
    m = mmemu.Machine("64M")
    p = m.spawn()
    done = threading.Event()

    def call():
        p.mmap(0, PG, RW, PRIV)
        done.set()

    with m._lock:
        t = threading.Thread(target=call)
        t.start()
        assert not done.wait(0.2)
        assert len(p.mm.vmas) == 0
    t.join(10)
    assert done.is_set() and len(p.mm.vmas) == 1
    p.exit()
    m.check()
