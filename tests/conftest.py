"""Shared fixtures and helpers for the mmemu test suite."""
from __future__ import annotations

import os

import pytest

import mmemu
from mmemu import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE

PG = 4096
KB = 1024
RW = PROT_READ | PROT_WRITE
PRIV = MAP_PRIVATE | MAP_ANONYMOUS
SHARED = MAP_SHARED | MAP_ANONYMOUS


DESIGNS = ["classic", "cow-deferred", "cow-eager"]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "one_design: the test picks its fork designs itself (not parametrised)")
    config.addinivalue_line(
        "markers", "long: a live-helper test that takes more than a few seconds (-m 'not long')")
    if os.environ.get("MMEMU_REQUIRE_DEBUG_BUILD"):
        # tools/debug_build_check.py: make sure the debug build is the one under test
        from mmemu._core import physmem
        if not physmem.DEBUG_BUILD:
            raise pytest.UsageError(f"MMEMU_REQUIRE_DEBUG_BUILD is set but {physmem.__file__} "
                                    "is a release build")


def pytest_generate_tests(metafunc):
    """Every test runs once per fork design: classic fork, and COW page tables with deferred
    and with eager accounting (every Machine made during the test defaults to that design)."""
    if "fork_design" in metafunc.fixturenames and not metafunc.definition.get_closest_marker("one_design"):
        metafunc.parametrize("fork_design", DESIGNS, indirect=True)


@pytest.fixture(autouse=True)
def fork_design(request, monkeypatch):
    design = getattr(request, "param", "classic")
    defaults = dict(mmemu.Machine.__init__.__kwdefaults__)
    if design != "classic":
        defaults["cow_pgtable"] = True
        defaults["cow_pte_accounting"] = design.split("-")[1]
    monkeypatch.setattr(mmemu.Machine.__init__, "__kwdefaults__", defaults)
    return design


def per_design(design, classic, deferred=None, eager=None):
    """The expected value of a statistic the fork design defines (COW defaults to classic)."""
    if design == "cow-deferred" and deferred is not None:
        return deferred
    if design == "cow-eager" and eager is not None:
        return eager
    return classic


@pytest.fixture
def m():
    """A 1 GiB machine; checks every invariant when the test ends."""
    machine = mmemu.Machine("1G")
    yield machine
    machine.check()


@pytest.fixture
def p(m):
    """A spawned process on the machine `m`."""
    return m.spawn()


def snapshot(machine, vmstat=True):
    """Everything a user can observe, to prove a failed call changed nothing (vmstat=False:
    but for the event counters, e.g. after a fault that Linux counts and then fails)."""
    state = {"meminfo": dict(machine.meminfo())}
    if vmstat:
        state["vmstat"] = dict(machine.vmstat())
    for proc in machine.processes:
        pm = []
        for v in proc.mm.vmas:
            pm.append((v.start, proc.pagemap(v.start, (v.end - v.start) // PG).tobytes()))
        state[proc.pid] = {
            "maps": str(proc.maps()),
            "status": dict(proc.status()),
            "smaps": str(proc.smaps()),
            "pagemap": pm,
        }
    return state


def assert_errno(err, fn, *args, **kwargs):
    """Call fn, expect MMError with this errno, and prove the machine is unchanged."""
    machine = fn.__self__.machine if hasattr(fn, "__self__") and hasattr(fn.__self__, "machine") else None
    before = snapshot(machine) if machine is not None else None
    with pytest.raises(mmemu.MMError) as exc:
        fn(*args, **kwargs)
    assert exc.value.errno == err, f"expected {err}, got {exc.value.errno}: {exc.value}"
    if machine is not None:
        assert snapshot(machine) == before
        machine.check()
    return exc.value


def st(proc, key):
    """A /proc/PID/status value in kB."""
    return proc.status()[key]


def mi(machine, key):
    """A /proc/meminfo value in kB."""
    return machine.meminfo()[key]


def anon_line(start, end, perms="rw-p"):
    """A /proc/PID/maps line of an anonymous VMA (note Linux's trailing blank)."""
    return f"{start:08x}-{end:08x} {perms} 00000000 00:00 0 "
