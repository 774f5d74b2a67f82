"""Shared fixtures and helpers for the mmemu test suite."""
from __future__ import annotations

import pytest

import mmemu
from mmemu import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE

PG = 4096
KB = 1024
RW = PROT_READ | PROT_WRITE
PRIV = MAP_PRIVATE | MAP_ANONYMOUS
SHARED = MAP_SHARED | MAP_ANONYMOUS


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


def snapshot(machine):
    """Everything a user can observe, to prove a failed call changed nothing."""
    state = {"meminfo": dict(machine.meminfo())}
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


def status_kb(proc, key):
    return proc.status()[key]


def meminfo_kb(machine, key):
    return machine.meminfo()[key]
