"""Shared fixtures and helpers for the mmemu test suite."""
from __future__ import annotations

import ast
import inspect
import os
import re
import textwrap

import pytest
from hypothesis import settings

import mmemu
from mmemu import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE

PG = 4096
KB = 1024
RW = PROT_READ | PROT_WRITE
PRIV = MAP_PRIVATE | MAP_ANONYMOUS
SHARED = MAP_SHARED | MAP_ANONYMOUS


DESIGNS = ["classic", "cow-deferred", "cow-eager"]

# The snapshot protocol: every stateful class's dump_state / from_state, called by
# mmemu.snapshot with what a snapshot file holds. The argument sweeps leave them to the
# snapshot mutation fuzzer (tests/properties/test_snapshot_mutations.py), which feeds them
# hostile states through Machine.load.
STATE_PROTOCOL = ("dump_state", "from_state")


def outcome(fn, *args, **kw):
    """What a program sees of a call: ("ok", the value returned), or ("errno", errno),
    ("SIGSEGV", si_code, address), ("SIGBUS", address). The fuzzers compare these."""
    try:
        return ("ok", fn(*args, **kw))
    except mmemu.MMError as e:
        return ("errno", e.errno)
    except mmemu.SegmentationFault as e:
        return ("SIGSEGV", e.code, e.address)
    except mmemu.BusError as e:
        return ("SIGBUS", e.address)


def fuzz_settings(examples, *variables, **kw):
    """Hypothesis settings for a randomized test whose budget is ``examples`` unless one of
    the environment ``variables`` (MMEMU_FUZZ_*, MMEMU_ORACLE_*) is set. CI's fixed budget
    is derandomized: the same examples every run, so a red build means a change broke
    something. A budget asked for through a variable explores fresh random examples
    (otherwise it would only replay the first ones of the fixed sequence). The first
    variable gives the number of examples; the others (steps per example) only count as
    asking. ``kw`` passes the test's own settings (stateful_step_count, health checks)."""
    asked = [v for v in variables if v in os.environ]
    if variables and variables[0] in os.environ:
        examples = int(os.environ[variables[0]])
    return settings(max_examples=examples, derandomize=not asked, database=None,
                    deadline=None, **kw)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "one_design: the test picks its fork designs itself (not parametrised)")
    config.addinivalue_line(
        "markers", "long: a live-helper test that takes more than a few seconds (-m 'not long')")
    config.addinivalue_line(
        "markers", "workloads: a real workload of benchmarks/workloads (Redis, AFL++, a "
                   "multiprocessing pool: minutes, installs packages); deselected unless "
                   "-m workloads or MMEMU_WORKLOADS=1")
    if os.environ.get("MMEMU_REQUIRE_DEBUG_BUILD"):
        # tools/debug_build_check.py: make sure the debug build is the one under test
        from mmemu._core import physmem
        if not physmem.DEBUG_BUILD:
            raise pytest.UsageError(f"MMEMU_REQUIRE_DEBUG_BUILD is set but {physmem.__file__} "
                                    "is a release build")


def pytest_collection_modifyitems(config, items):
    """The default run deselects the ``workloads`` tests (see pytest_configure)."""
    if os.environ.get("MMEMU_WORKLOADS") or "workloads" in (config.getoption("-m") or ""):
        return
    keep = [i for i in items if i.get_closest_marker("workloads") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep


# what makes a test depend on the fork design: it forks, or it asks for the design
_FORKS = re.compile(r"\bfork\b|\.fork\(|clone3|_fork\(|fork_design|per_design|DESIGNS")


def _source(obj) -> str:
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        return ""


def _forks(obj, namespaces, seen) -> bool:
    """Whether obj's source, or that of a function or class of the test module or conftest it
    names (transitively), forks or names the fork design."""
    if id(obj) in seen:
        return False
    seen.add(id(obj))
    src = _source(obj)
    if _FORKS.search(src):
        return True
    try:
        names = {n.id for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Name)}
    except SyntaxError:
        return True
    for ns in namespaces:
        for name in names & ns.keys():
            helper = ns[name]
            if inspect.isfunction(helper) or inspect.isclass(helper):
                if getattr(helper, "__module__", None) in (ns.get("__name__"),) and \
                        _forks(helper, namespaces, seen):
                    return True
    return False


def _test_forks(metafunc) -> bool:
    namespaces = [vars(metafunc.module), globals()]
    seen = set()
    if metafunc.cls is not None and _forks(metafunc.cls, namespaces, seen):
        return True
    if _forks(metafunc.function, namespaces, seen):
        return True
    for name, defs in getattr(metafunc, "_arg2fixturedefs", {}).items():
        for fd in defs:
            if name != "fork_design" and fd.baseid != "" and _forks(fd.func, namespaces, seen):
                return True
    return False


def pytest_generate_tests(metafunc):
    """A test that forks (or whose helpers and fixtures fork) runs once per fork design:
    classic fork, and COW page tables with deferred and with eager accounting (every Machine
    made during the test defaults to that design). A test that never forks runs once: the
    design cannot change what it sees."""
    if "fork_design" in metafunc.fixturenames and not metafunc.definition.get_closest_marker("one_design") \
            and _test_forks(metafunc):
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
