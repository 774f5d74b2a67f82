"""Objects passed into a public call belong to the machine and are alive, or the call fails
cleanly and changes nothing (issue: foreign and stale objects).

Before this was enforced, ``mmap(file=f)`` with a File of another Machine read through a PFN
of the other machine (a segmentation fault, or another mapping's bytes), and mmap of a File
that was unlinked and freed succeeded, read zeros and left ``check()`` failing; a freed
File's own ``write`` put frames in no page cache. Every case runs in one subprocess, so that
a crash fails these tests instead of killing the test run.

The entry points that take a File or a Process were found by grep (``file=``, ``fd``, ``f``,
``obj``, ``parent``, ``proc``) and are pinned by introspection below: a new public method
with such a parameter fails ``test_every_object_parameter_is_listed`` until it is added here.
"""
from __future__ import annotations

import errno
import inspect
import json
import pathlib
import subprocess
import sys
import textwrap

import pytest

import mmemu
from conftest import STATE_PROTOCOL
from mmemu.file import File
from mmemu.process import Process

pytestmark = pytest.mark.one_design

TESTS = pathlib.Path(__file__).resolve().parents[1]
PG = 4096
OBJECT_PARAMS = {"f", "file", "fd", "obj", "parent", "proc"}
EBADF, ESRCH, ENOENT = errno.EBADF, errno.ESRCH, errno.ENOENT

# (class, method, parameter): {kind of bad object: expected errno, or None for "no error,
# nothing changed"}. Kinds: "foreign" (a File / Process of another Machine), "stale" (a File
# unlinked and freed / a Process that exited).
ENTRY_POINTS = {
    ("Process", "mmap", "file"): {"foreign": EBADF, "stale": EBADF},
    ("Process", "mmap", "fd"): {"foreign": EBADF, "stale": EBADF},
    ("Machine", "read_file", "f"): {"foreign": EBADF, "stale": EBADF},
    ("Machine", "write_file", "f"): {"foreign": EBADF, "stale": EBADF},
    # unlink(2) names a path: another machine's File or a freed one names nothing here
    ("Machine", "unlink", "f"): {"foreign": ENOENT, "stale": ENOENT},
    ("Machine", "copy_process", "parent"): {"foreign": ESRCH, "stale": ESRCH},
    ("Machine", "do_exit", "proc"): {"foreign": ESRCH, "stale": ESRCH},
    # __fput of an object this machine does not hold: nothing to release
    ("Machine", "release_backing", "obj"): {"foreign": None, "stale": None},
}
# a freed File's own calls (the File is the stale object)
FREED_FILE_CALLS = {
    "read": "g.read(0, 5)",
    "write": "g.write(0, b'x')",
    "truncate": "g.truncate(10)",
    "punch_hole": "g.punch_hole(0, PG)",
    "unlink": "g.unlink()",
}

CALLS = {
    ("Process", "mmap", "file"): "p.mmap(0, PG, PROT_READ, MAP_SHARED, file=X)",
    ("Process", "mmap", "fd"): "p.mmap(0, PG, PROT_READ, MAP_PRIVATE, X)",
    ("Machine", "read_file", "f"): "m.read_file(X, 0, 6)",
    ("Machine", "write_file", "f"): "m.write_file(X, 0, b'x')",
    ("Machine", "unlink", "f"): "m.unlink(X)",
    ("Machine", "copy_process", "parent"): "m.copy_process(X)",
    ("Machine", "do_exit", "proc"): "m.do_exit(X)",
    ("Machine", "release_backing", "obj"): "m.release_backing(X)",
}

RUNNER = r'''
import errno, json, sys
sys.path.insert(0, TESTS)
import mmemu
from conftest import snapshot
from mmemu import MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE
PG = 4096


def world():
    m, m2 = mmemu.Machine("64M"), mmemu.Machine("64M")
    p = m.spawn()
    f = m.create_file("f", data=b"mine" * 2000)
    a = p.mmap(0, 2 * PG, PROT_READ, MAP_SHARED, file=f)
    p.read(a, 2 * PG)
    dead = p.fork()
    dead.exit()
    g = m.create_file("gone", data=b"z" * 5000)
    g.unlink()                                  # unmapped: freed at once
    f2 = m2.create_file("f", data=b"secret" * 1000)     # the same path, on another machine
    q = m2.spawn()
    b = q.mmap(0, PG, PROT_READ, MAP_SHARED, file=f2)
    q.read(b, PG)
    bad = {"File": {"foreign": f2, "stale": g}, "Process": {"foreign": q, "stale": dead}}
    return m, m2, p, g, bad


def run(code, kind):
    m, m2, p, g, bad = world()
    obj = "Process" if "copy_process" in code or "do_exit" in code else "File"
    X = bad[obj][kind] if kind else None
    before, before2 = snapshot(m), snapshot(m2)
    out = {}
    try:
        eval(code, {"m": m, "p": p, "g": g, "X": X, "PG": PG, "PROT_READ": PROT_READ,
                    "MAP_SHARED": MAP_SHARED, "MAP_PRIVATE": MAP_PRIVATE})
        out["raised"] = None
    except mmemu.MMError as e:
        out["raised"] = ["MMError", e.errno]
    except Exception as e:
        out["raised"] = [type(e).__name__, str(e)[:200]]
    out["unchanged"] = snapshot(m) == before
    out["other_unchanged"] = snapshot(m2) == before2
    for name, mach in (("check", m), ("other_check", m2)):
        try:
            mach.check()
            out[name] = "ok"
        except Exception as e:
            out[name] = f"{type(e).__name__}: {str(e)[:300]}"
    return out


results = {}
for key, code, kind in json.loads(sys.argv[1]):
    results[key] = run(code, kind)
print(json.dumps(results))
'''


def _cases():
    cases = []
    for key, code in CALLS.items():
        for kind in ENTRY_POINTS[key]:
            cases.append((f"{'.'.join(key)}:{kind}", code, kind))
    for name, code in FREED_FILE_CALLS.items():
        cases.append((f"File.{name}:freed", code, None))
    return cases


@pytest.fixture(scope="module")
def results():
    code = RUNNER.replace("TESTS", repr(str(TESTS)))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code), json.dumps(_cases())],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"the cases crashed the interpreter (exit {r.returncode}):\n" \
                              f"{r.stderr[-3000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def _assert_clean(got, want_errno):
    want = None if want_errno is None else ["MMError", want_errno]
    assert got["raised"] == want, f"expected {want}, got {got['raised']}"
    assert got["unchanged"], "the call failed but changed the machine"
    assert got["other_unchanged"], "the call changed the object's own machine"
    assert got["check"] == "ok" and got["other_check"] == "ok", got


@pytest.mark.parametrize("key,kind", [(k, kind) for k in ENTRY_POINTS for kind in ENTRY_POINTS[k]],
                         ids=lambda v: ".".join(v) if isinstance(v, tuple) else v)
def test_foreign_or_stale_object_is_refused(results, key, kind):
    _assert_clean(results[f"{'.'.join(key)}:{kind}"], ENTRY_POINTS[key][kind])


@pytest.mark.parametrize("name", sorted(FREED_FILE_CALLS))
def test_a_freed_files_own_calls_are_ebadf(results, name):
    """A File unlinked and unmapped has its page cache freed: no descriptor names it any
    more, so its own read/write/truncate/punch_hole/unlink give EBADF (not zeros, not
    frames in no cache)."""
    _assert_clean(results[f"File.{name}:freed"], EBADF)


def test_every_object_parameter_is_listed():
    """The public methods of Machine, Process and File whose parameters take a File or a
    Process (by name), found by introspection, are exactly those tested above; and every
    public File method that works on the File itself is in FREED_FILE_CALLS (or is a view)."""
    found = set()
    for cls in (mmemu.Machine, Process, File):
        for name, attr in vars(cls).items():
            if name.startswith("_") or name in STATE_PROTOCOL or not inspect.isfunction(attr):
                continue
            for param in inspect.signature(attr).parameters:
                if param in OBJECT_PARAMS:
                    found.add((cls.__name__, name, param))
    assert found == set(ENTRY_POINTS)
    file_methods = {n for n, a in vars(File).items()
                    if not n.startswith("_") and n not in STATE_PROTOCOL and inspect.isfunction(a)}
    assert file_methods == set(FREED_FILE_CALLS)


def test_a_file_mapped_after_unlink_is_still_usable_until_its_last_unmap():
    """The line between alive and freed: an unlinked File that a VMA still maps keeps its
    page cache (its descriptor is open), so calls on it work; after the last munmap it is
    freed and they give EBADF."""
    m = mmemu.Machine("64M")
    p = m.spawn()
    f = m.create_file("f", data=b"kept" * 1024)
    a = p.mmap(0, PG, mmemu.PROT_READ, mmemu.MAP_SHARED, file=f)
    f.unlink()
    assert f.read(0, 4) == b"kept" and m.read_file(f, 0, 4) == b"kept"
    b = p.mmap(0, PG, mmemu.PROT_READ, mmemu.MAP_PRIVATE, file=f)     # a second mapping
    assert p.read(b, 4) == b"kept"
    p.munmap(a, PG)
    assert f.write(0, b"KEPT") == 4 and p.read(b, 4) == b"KEPT"
    p.munmap(b, PG)
    assert m.meminfo()["Cached"] == 0
    for call in (lambda: f.read(0, 4), lambda: p.mmap(0, PG, mmemu.PROT_READ, mmemu.MAP_SHARED, file=f)):
        with pytest.raises(mmemu.MMError) as e:
            call()
        assert e.value.errno == errno.EBADF
    m.check()


def test_measure_fork_refuses_a_process_of_another_machine():
    """mmemu.compare.measure_fork(m, p) (fork-table, compare) measures p's fork on m: a p
    of another machine would fork there and report m's unchanged numbers."""
    from mmemu.compare import measure_fork
    m, other = mmemu.Machine("64M"), mmemu.Machine("64M")
    q = other.spawn()
    q.touch(q.mmap(0, 4 * PG, mmemu.PROT_READ | mmemu.PROT_WRITE,
                   mmemu.MAP_PRIVATE | mmemu.MAP_ANONYMOUS), 4 * PG)
    before = (str(m.meminfo()), str(other.meminfo()), str(other.vmstat()))
    with pytest.raises(mmemu.MMError) as e:
        measure_fork(m, q, cow=False)
    assert e.value.errno == errno.ESRCH
    assert (str(m.meminfo()), str(other.meminfo()), str(other.vmstat())) == before
    assert other.processes == [q]
    child = measure_fork(other, q, cow=False)[0]
    assert other.processes == [q, child]
    m.check()
    other.check()
