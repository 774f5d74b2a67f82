"""The machine itself: sizes, O(1) creation, host memory cost, running out of memory."""
import errno

import pytest

import mmemu
from conftest import PG, PRIV, RW, SHARED, per_design, snapshot


def host_rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@pytest.mark.parametrize("text,expected", [
    ("4096", 4096), ("64K", 64 << 10), ("512M", 512 << 20), ("32G", 32 << 30),
    ("1T", 1 << 40), ("1GiB", 1 << 30), ("2gb", 2 << 30), (1 << 30, 1 << 30),
])
def test_parse_size(text, expected):
    assert mmemu.parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "12X", "G", "-1G"])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError):
        mmemu.parse_size(bad)


def test_machine_rejects_unaligned_and_tiny_sizes():
    with pytest.raises(ValueError):
        mmemu.Machine(4096 * 100 + 1)
    with pytest.raises(ValueError):
        mmemu.Machine(4096 * 8)


def test_default_machine_is_32g_and_only_the_zero_page_is_used():
    m = mmemu.Machine()
    mi = m.meminfo()
    assert mi["MemTotal"] == 32 * 1024 * 1024
    assert mi["MemFree"] == 32 * 1024 * 1024 - 4      # the zero page is reserved
    assert mi["AnonPages"] == mi["Mapped"] == mi["Shmem"] == mi["PageTables"] == 0
    m.check()


def test_one_terabyte_machine_costs_the_host_almost_nothing():
    before = host_rss_kb()
    m = mmemu.Machine("1T")
    p = m.spawn()
    a = p.mmap(0, 16 * PG, RW, PRIV)
    p.write(a, b"x")
    grew = host_rss_kb() - before
    assert m.meminfo()["MemTotal"] == 1 << 30          # kB
    assert grew < 100 * 1024, f"host RSS grew {grew} kB"
    m.check()


def test_populated_1g_process_costs_the_host_under_32mb():
    """Frames that were only touched (never written with data) are never touched on the host."""
    before = host_rss_kb()
    m = mmemu.Machine("32G")
    p = m.spawn()
    a = p.mmap(0, 1 << 30, RW, PRIV)
    p.touch(a, 1 << 30)
    grew = host_rss_kb() - before
    assert p.status()["RssAnon"] == 1 << 20
    assert grew < 32 * 1024, f"host RSS grew {grew} kB"
    m.check()


def test_processes_and_lookup():
    m = mmemu.Machine("64M")
    a, b = m.spawn(), m.spawn()
    assert [q.pid for q in m.processes] == [1, 2]
    assert m.process(2) is b
    c = a.fork()
    assert c.parent is a and a.children == [c] and c.pid == 3
    c.exit()
    assert not c.alive and a.children == []
    with pytest.raises(mmemu.MMError) as e:
        m.process(3)
    assert e.value.errno == errno.ESRCH
    with pytest.raises(mmemu.MMError) as e:
        c.mmap(0, PG, RW, PRIV)
    assert e.value.errno == errno.ESRCH
    m.check()


def test_touch_until_out_of_memory_raises_enomem_and_keeps_invariants():
    """Running out of emulated memory is an error (VM_FAULT_OOM), never a crash or a leak."""
    m = mmemu.Machine("1M")                     # 256 frames
    p = m.spawn()
    a = p.mmap(0, 2 << 20, RW, PRIV)
    with pytest.raises(mmemu.MMError) as e:
        p.touch(a, 2 << 20)
    assert e.value.errno == errno.ENOMEM
    # every frame is in use: 1 zero page, PGD, PUD, PMD, PTE table, and the rest anon pages
    assert m.meminfo()["MemFree"] == 0
    assert p.status()["RssAnon"] == (256 - 5) * 4
    assert p.status()["VmPTE"] == 12
    m.check()
    p.munmap(a, 2 << 20)
    assert m.meminfo()["MemFree"] == (256 - 1 - 1) * 4   # zero page and PGD remain
    p.exit()
    assert m.meminfo()["MemFree"] == 255 * 4
    m.check()


def test_cow_fault_out_of_memory_leaves_both_processes_intact():
    m = mmemu.Machine("1M")
    p = m.spawn()
    a = p.mmap(0, 64 * PG, RW, PRIV)
    p.write(a, bytes(range(256)) * 16 * 64)
    c = p.fork()
    # fill the rest of memory from a third process
    filler = m.spawn()
    b = filler.mmap(0, 1 << 20, RW, PRIV)
    with pytest.raises(mmemu.MMError):
        filler.touch(b, 1 << 20)
    assert m.meminfo()["MemFree"] == 0
    before = snapshot(m, vmstat=False)       # the failed fault is counted (pgfault)
    with pytest.raises(mmemu.MMError) as e:
        c.write(a, b"!")
    assert e.value.errno == errno.ENOMEM
    assert snapshot(m, vmstat=False) == before
    assert c.read(a, 4) == bytes(range(4)) and p.read(a, 4) == bytes(range(4))
    m.check()


def test_fork_out_of_memory_changes_nothing(fork_design):
    """fork counts the page tables it needs first: ENOMEM leaves the machine as it was."""
    m = mmemu.Machine("1M")
    p = m.spawn()
    a = p.mmap(0, 8 << 20, RW, PRIV)
    # one page in each of 4 PMD spans: the child needs PGD + PUD + PMD + 4 PTE tables = 7
    # with a classic fork; with COW page tables the 4 PTE tables are shared: 3
    need = per_design(fork_design, 7, deferred=3, eager=3)
    for i in range(4):
        p.write(a + i * (2 << 20), b"z")
    filler = m.spawn()
    b = filler.mmap(0, 1 << 20, RW, PRIV)
    with pytest.raises(mmemu.MMError):
        filler.touch(b, 1 << 20)
    filler.munmap(b + 4 * PG, (need - 1) * PG)      # frees exactly need - 1 frames
    assert m.meminfo()["MemFree"] == (need - 1) * 4
    before = snapshot(m)
    ev = m.vmstat()
    with pytest.raises(mmemu.MMError) as e:
        p.fork()
    assert e.value.errno == errno.ENOMEM
    assert snapshot(m) == before
    assert m.vmstat() - ev == {k: 0 for k in ev}
    assert [q.pid for q in m.processes] == [p.pid, filler.pid]
    filler.munmap(b + 10 * PG, PG)              # one more frame: now it fits
    c = p.fork()
    assert c.read(a + 3 * (2 << 20), 1) == b"z"
    assert m.meminfo()["MemFree"] == 0
    m.check()


def test_spawn_without_a_free_frame_is_enomem():
    m = mmemu.Machine("1M")
    p = m.spawn()
    a = p.mmap(0, 1 << 20, RW, PRIV)
    with pytest.raises(mmemu.MMError):
        p.touch(a, 1 << 20)
    with pytest.raises(mmemu.MMError) as e:
        m.spawn()
    assert e.value.errno == errno.ENOMEM
    assert len(m.processes) == 1
    m.check()


def test_shared_anon_object_is_freed_with_its_last_mapping():
    m = mmemu.Machine("64M")
    p = m.spawn()
    a = p.mmap(0, 4 * PG, RW, SHARED)
    p.write(a, b"s" * (4 * PG))
    c = p.fork()
    assert m.meminfo()["Shmem"] == 16
    p.munmap(a, 4 * PG)
    assert m.meminfo()["Shmem"] == 16            # the child still maps the object
    assert c.read(a + 3 * PG, 1) == b"s"
    c.exit()
    assert m.meminfo()["Shmem"] == 0 and m.meminfo()["Cached"] == 0
    m.check()


# ---- arguments that belong elsewhere or no longer exist (issue: foreign and stale objects) ----

def test_file_of_another_machine_is_refused():
    m1, m2 = mmemu.Machine("64M"), mmemu.Machine("64M")
    f2 = m2.create_file("other", data=b"secret" * 1000)
    before = (str(m1.meminfo()), dict(m1.vmstat()))
    for call in (lambda: m1.read_file(f2, 0, 6), lambda: m1.write_file(f2, 0, b"x")):
        with pytest.raises(mmemu.MMError) as e:
            call()
        assert e.value.errno == errno.EBADF
    with pytest.raises(mmemu.MMError) as e:
        m1.unlink(f2)
    assert e.value.errno == errno.ENOENT
    assert (str(m1.meminfo()), dict(m1.vmstat())) == before
    assert m2.read_file(f2, 0, 6) == b"secret" and not f2.unlinked
    m1.check()
    m2.check()


def test_freed_file_is_refused():
    m = mmemu.Machine("64M")
    f = m.create_file("gone", data=b"z" * 5000)
    m.unlink(f)                               # unlinked and unmapped: freed at once
    before = (str(m.meminfo()), dict(m.vmstat()))
    for call in (lambda: m.read_file(f, 0, 1), lambda: m.write_file(f, 0, b"x")):
        with pytest.raises(mmemu.MMError) as e:
            call()
        assert e.value.errno == errno.EBADF
    with pytest.raises(mmemu.MMError) as e:
        m.unlink(f)
    assert e.value.errno == errno.ENOENT
    assert (str(m.meminfo()), dict(m.vmstat())) == before
    m.check()


@pytest.mark.parametrize("bad", [3, None, "typical-ish", b"typical", 1.5])
def test_file_and_layout_arguments_of_the_wrong_type(bad):
    m = mmemu.Machine("64M")
    before = str(m.meminfo())
    with pytest.raises(TypeError):
        m.read_file(bad, 0, 1)
    if bad is not None:                       # None is the empty layout
        with pytest.raises(ValueError):
            m.spawn(layout=bad)
    assert m.processes == [] and str(m.meminfo()) == before
    assert m.spawn().pid == 1                 # no pid was used up
    m.check()


def test_spawn_typical_on_a_machine_too_small_changes_nothing():
    m = mmemu.Machine("128K")                 # 32 frames: the typical layout needs 33
    before = dict(m.meminfo())
    with pytest.raises(mmemu.MMError) as e:
        m.spawn(layout="typical")
    assert e.value.errno == errno.ENOMEM
    assert m.processes == [] and dict(m.meminfo()) == before
    assert m.spawn().pid == 1
    m.check()


def test_the_kernel_side_of_fork_exit_and_mmap_refuses_what_is_not_its_own(m):
    """Process.fork/clone3/exit and mmap call Machine.copy_process, do_exit,
    shmem_zero_setup and release_backing; called directly with another machine's process,
    an exited one, a bad length or a foreign object they change nothing."""
    p = m.spawn()
    a = p.mmap(0, 4 * PG, RW, PRIV)
    p.write(a, b"x")
    dead = p.fork()
    dead.exit()
    other = mmemu.Machine("64M").spawn()
    before = snapshot(m)
    for call in (lambda: m.copy_process(other), lambda: m.copy_process(dead),
                 lambda: m.do_exit(other), lambda: m.do_exit(dead), lambda: m.copy_process("1")):
        with pytest.raises(mmemu.MMError) as e:
            call()
        assert e.value.errno == errno.ESRCH
    for length in (0, -PG, PG + 1, 1 << 60):
        with pytest.raises(ValueError):
            m.shmem_zero_setup(length)
    m.release_backing(object())
    assert snapshot(m) == before
    c = m.copy_process(p)
    assert c.parent is p and c.read(a, 1) == b"x" and m.processes == [p, c]
    m.do_exit(c)
    assert not c.alive and m.processes == [p]
