"""A failed call changes nothing: every public entry point, every way it can fail.

The public methods and class methods of Machine, Process and File are found by
introspection; a new one fails ``test_every_public_method_is_swept`` until it is listed here
with a successful call (SANE) and, unless it cannot fail (NEVER_FAILS, with the reason), a
refusal in the bad-input catalogue. Then, in each fork design, on the catalogue's World (a
parent with every kind of mapping, a child sharing them, an exited process, a freed file):

- refused: every catalogue case (test_bad_input_catalogue.CASES: EINVAL, ENOMEM, EBADF,
  EFAULT, ESRCH, EEXIST, ENOENT, TypeError, ValueError, SnapshotError ...) asserts its error
  and an unchanged ``snapshot()``. Which public method a case exercises is recorded while it
  runs (the outermost public call), so the attribution cannot go stale: every method that
  can fail must have at least one refused case;
- out of memory: each SANE call that allocates page frames, made with every allocation
  failing (``m.fail_page_alloc(1, -1)``), raises MMError(ENOMEM) and changes nothing,
  vmstat included; a SANE call that allocates nothing succeeds the same way;
- the Linux partial-application cases, PARTIAL, listed by name with their reason: the
  failing call leaves exactly the state of its legal part, done on a twin World.
"""
from __future__ import annotations

import errno
import functools
import inspect
import threading

import pytest

import mmemu
from conftest import PG, PRIV, RW, STATE_PROTOCOL, snapshot
from mmemu import (CLONE_COW_PGTABLE, MAP_FIXED, MAP_POPULATE, MREMAP_FIXED, MREMAP_MAYMOVE,
                   PR_SET_COW_PTE, PROT_READ, Madv)
from mmemu.file import File
from mmemu.process import Process
from test_bad_input_catalogue import CASES, COWP, FEOF, RO, RWP, World, _expect

CLASSES = (mmemu.Machine, Process, File)
FAR = 0x500000000000                   # an empty part of the address space

# one successful call of every public method, on a fresh World (tmp: a directory)
SANE = {
    "Machine.check": lambda w, tmp: w.m.check(),
    "Machine.copy_process": lambda w, tmp: w.m.copy_process(w.p),
    "Machine.create_file": lambda w, tmp: w.m.create_file("/new", data=b"n" * (3 * PG)),
    "Machine.do_exit": lambda w, tmp: w.m.do_exit(w.c),
    "Machine.fail_page_alloc": lambda w, tmp: w.m.fail_page_alloc(1000),
    "Machine.load": lambda w, tmp: mmemu.Machine.load(_saved(w, tmp)),
    "Machine.meminfo": lambda w, tmp: w.m.meminfo(),
    "Machine.buddyinfo": lambda w, tmp: w.m.buddyinfo(),
    "Machine.dmesg": lambda w, tmp: w.m.dmesg(),
    "Machine.process": lambda w, tmp: w.m.process(w.p.pid),
    "Machine.read_file": lambda w, tmp: w.m.read_file(w.f, 0, 2 * PG),
    "Machine.release_backing": lambda w, tmp: w.m.release_backing(w.f),
    "Machine.reset_vmstat": lambda w, tmp: w.m.reset_vmstat(),
    "Machine.save": lambda w, tmp: w.m.save(tmp / "sane.mms"),
    "Machine.shmem_zero_setup": lambda w, tmp: w.m.shmem_zero_setup(4 * PG),
    "Machine.spawn": lambda w, tmp: w.m.spawn(),
    "Machine.unlink": lambda w, tmp: w.m.unlink(w.f),
    "Machine.vmstat": lambda w, tmp: w.m.vmstat(),
    "Machine.write_file": lambda w, tmp: w.m.write_file(w.f, 2 * PG, b"w" * (3 * PG)),
    "Process.brk": lambda w, tmp: w.p.brk(w.p.brk(0) + 4 * PG),
    "Process.clone3": lambda w, tmp: w.p.clone3(CLONE_COW_PGTABLE),
    "Process.execve": lambda w, tmp: w.c.execve(),
    "Process.exit": lambda w, tmp: w.c.exit(),
    "Process.fork": lambda w, tmp: w.p.fork(),
    "Process.madvise": lambda w, tmp: w.c.madvise(COWP + PG, PG, Madv.DONTNEED),
    "Process.maps": lambda w, tmp: w.c.maps(),
    "Process.mmap": lambda w, tmp: w.c.mmap(COWP + PG, PG, RW, PRIV | MAP_FIXED),
    "Process.mprotect": lambda w, tmp: w.c.mprotect(COWP + PG, PG, PROT_READ),
    "Process.mremap": lambda w, tmp: w.c.mremap(COWP, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, FAR),
    "Process.munmap": lambda w, tmp: w.c.munmap(COWP + PG, PG),
    "Process.pagemap": lambda w, tmp: w.c.pagemap(COWP, 8),
    "Process.pagemap_chunks": lambda w, tmp: list(w.c.pagemap_chunks(COWP, 8)),
    "Process.prctl": lambda w, tmp: w.p.prctl(PR_SET_COW_PTE, 1),
    "Process.read": lambda w, tmp: w.c.read(FEOF, 2 * PG),
    "Process.smaps": lambda w, tmp: w.c.smaps(),
    "Process.smaps_rollup": lambda w, tmp: w.c.smaps_rollup(),
    "Process.statm": lambda w, tmp: w.c.statm(),
    "Process.status": lambda w, tmp: w.c.status(),
    "Process.swap_out": lambda w, tmp: w.p.swap_out(COWP, 8 * PG),
    "Process.touch": lambda w, tmp: w.c.touch(COWP, 3 * PG),
    "Process.write": lambda w, tmp: w.c.write(COWP + PG, b"w" * (2 * PG)),
    "File.punch_hole": lambda w, tmp: w.f.punch_hole(0, PG),
    "File.read": lambda w, tmp: w.f.read(0, PG),
    "File.truncate": lambda w, tmp: w.f.truncate(PG),
    "File.unlink": lambda w, tmp: w.f.unlink(),
    "File.write": lambda w, tmp: w.f.write(3 * PG, b"x" * (2 * PG)),
}

# public methods no argument makes fail (their reason); they are still in SANE
NEVER_FAILS = {
    "Machine.check": "reads the machine; raises only InvariantError, on a corrupt machine",
    "Machine.meminfo": "a view without arguments",
    "Machine.buddyinfo": "a view without arguments",
    "Machine.dmesg": "a view without arguments",
    "Machine.vmstat": "a view without arguments",
    "Machine.reset_vmstat": "no arguments; zeroes the event counters",
    "Machine.release_backing": "__fput: an object this machine does not hold, or one still "
                               "in use, is left alone (nothing to release)",
    "Process.maps": "a view without arguments (an exited process's views stay readable)",
    "Process.smaps": "a view without arguments",
    "Process.smaps_rollup": "a view without arguments",
    "Process.statm": "a view without arguments",
    "Process.status": "a view without arguments",
}

# accesses: with every allocation failing, Linux has counted the fault (PGFAULT and its
# kind, in handle_mm_fault) before it finds no page; nothing else changes
ACCESSES = {"Process.read", "Process.write", "Process.touch"}
FAULT_EVENTS = {"pgfault", "fault_anon", "fault_file", "cow_fault", "spurious_fault"}

# The Linux partial-application cases: name -> (the failing call, what it raises (None: it
# succeeds), the legal part done alone on a twin World, fail_page_alloc arguments or None,
# the reason). The state after the call must equal the twin's.
PARTIAL = {
    "mprotect-over-a-hole": (
        lambda w: w.p.mprotect(RWP, 17 * PG, PROT_READ), (mmemu.MMError, errno.ENOMEM),
        lambda w: w.p.mprotect(RWP, 8 * PG, PROT_READ), None,
        "do_mprotect_pkey changes each VMA in turn and stops with ENOMEM at the first hole: "
        "the VMAs before it keep the change"),
    "madvise-over-a-hole": (
        lambda w: w.p.madvise(RWP, 17 * PG, Madv.DONTNEED), (mmemu.MMError, errno.ENOMEM),
        lambda w: (w.p.madvise(RWP, 8 * PG, Madv.DONTNEED), w.p.madvise(RO, PG, Madv.DONTNEED)), None,
        "madvise_walk_vmas advises every VMA of the range, skipping the holes, then returns "
        "ENOMEM for them"),
    "madvise-populate-into-a-hole": (
        lambda w: w.c.madvise(COWP + 6 * PG, 4 * PG, Madv.POPULATE_WRITE), (mmemu.MMError, errno.ENOMEM),
        lambda w: w.c.madvise(COWP + 6 * PG, 2 * PG, Madv.POPULATE_WRITE), None,
        "madvise_populate faults in page by page (faultin_page_range) and stops with ENOMEM "
        "where no VMA is: the pages before stay populated"),
    "mremap-fixed-unmaps-its-destination": (
        lambda w: w.p.mremap(RWP, 2**64 - PG, PG, MREMAP_MAYMOVE | MREMAP_FIXED, RWP),
        (mmemu.MMError, errno.EFAULT),
        lambda w: w.p.munmap(RWP, PG), None,
        "mremap_to unmaps the MREMAP_FIXED destination before it looks the source up again; "
        "the overlap test is unsigned, so an old_len that wraps around misses a destination "
        "on the source itself, which goes, then EFAULT (6.18, test_mremap.py's live cases)"),
    "access-faults-pages-before-a-signal": (
        lambda w: w.c.write(COWP + 6 * PG, b"z" * (3 * PG)), (mmemu.SegmentationFault, "SEGV_MAPERR"),
        lambda w: w.c.write(COWP + 6 * PG, b"z" * (2 * PG)), None,
        "an access is a sequence of faults: the pages before the one that signals are "
        "faulted in and written, as a CPU's stores before the faulting one are"),
    "mmap-populate-partly": (
        lambda w: w.p.mmap(FAR, 8 * PG, RW, PRIV | MAP_FIXED | MAP_POPULATE), None,
        lambda w: (w.p.mmap(FAR, 8 * PG, RW, PRIV | MAP_FIXED), w.p.touch(FAR, 2 * PG)), (6, 1),
        "mmap ignores __mm_populate's result: a populate that runs out of memory leaves the "
        "mapping made and partly populated"),
    "file-short-write": (
        lambda w: w.f.write(PG, b"W" * (3 * PG)), None,
        lambda w: w.f.write(PG, b"W" * (2 * PG)), (2, 1),
        "generic_perform_write returns the bytes written before an allocation failed (a "
        "short write), and they stay"),
}


def _saved(w, tmp):
    path = tmp / "world.mms"
    if not path.exists():
        w.other.save(path)
    return path


def public_methods():
    """{"Class.method": function} of every public method and class method."""
    out = {}
    for cls in CLASSES:
        for name, attr in vars(cls).items():
            if name.startswith("_") or name in STATE_PROTOCOL:
                continue
            if isinstance(attr, classmethod):
                out[f"{cls.__name__}.{name}"] = attr.__func__
            elif inspect.isfunction(attr):
                out[f"{cls.__name__}.{name}"] = attr
    return out


class Recorder:
    """Wraps every public method (monkeypatch) to record the outermost one called."""

    def __init__(self, monkeypatch):
        self.local = threading.local()
        self.calls = []
        for cls in CLASSES:
            for name, attr in list(vars(cls).items()):
                if name.startswith("_"):
                    continue
                if isinstance(attr, classmethod):
                    monkeypatch.setattr(cls, name, classmethod(self._wrap(f"{cls.__name__}.{name}", attr.__func__)))
                elif inspect.isfunction(attr):
                    monkeypatch.setattr(cls, name, self._wrap(f"{cls.__name__}.{name}", attr))

    def _wrap(self, label, fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            depth = getattr(self.local, "depth", 0)
            if depth == 0:
                self.calls.append(label)
            self.local.depth = depth + 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.local.depth = depth
        return call


def test_every_public_method_is_swept(monkeypatch, fork_design):
    """Every public method has a SANE call, and one that can fail has a refused case in the
    catalogue (recorded by running the cases); NEVER_FAILS and PARTIAL name real things."""
    methods = public_methods()
    assert set(SANE) == set(methods), "list a successful call of each public method in SANE"
    assert set(NEVER_FAILS) <= set(methods)
    rec = Recorder(monkeypatch)
    refused = {}
    for name, (call, expected) in CASES.items():
        w = World()
        del rec.calls[:]
        _expect(call, expected, w)
        assert rec.calls, f"{name} calls no public method"
        refused.setdefault(rec.calls[0], []).append(name)
    missing = sorted(set(methods) - set(refused) - set(NEVER_FAILS))
    assert missing == [], f"no refused case in the bad-input catalogue for {missing}"
    assert set(refused) & set(NEVER_FAILS) == set(), "a method listed as never failing fails"


@pytest.mark.parametrize("name", sorted(SANE))
def test_out_of_memory_changes_nothing(name, tmp_path, fork_design):
    """The SANE call with every page allocation failing: ENOMEM and nothing changed if it
    allocates; the same success if it does not."""
    w = World()
    calls = w.m.phys.alloc_calls
    SANE[name](w, tmp_path)
    allocates = w.m.phys.alloc_calls != calls
    want = snapshot(w.m)
    w.m.check()
    w = World()
    before = snapshot(w.m)
    w.m.fail_page_alloc(1, times=-1)
    if allocates:
        with pytest.raises(mmemu.MMError) as e:
            SANE[name](w, tmp_path)
        assert e.value.errno == errno.ENOMEM, e.value
        w.m.fail_page_alloc(0)
        after = snapshot(w.m)
        if name in ACCESSES:
            moved = {k for k in before["vmstat"] if before["vmstat"][k] != after["vmstat"][k]}
            assert moved <= FAULT_EVENTS, moved
            before.pop("vmstat"), after.pop("vmstat")
        assert after == before, f"{name} ran out of memory and changed the machine"
    else:
        SANE[name](w, tmp_path)
        w.m.fail_page_alloc(0)
        assert snapshot(w.m) == want
    w.m.check()


@pytest.mark.parametrize("name", sorted(PARTIAL))
def test_linux_partial_application(name, fork_design):
    call, expected, legal_part, fail, _reason = PARTIAL[name]
    twin = World()
    untouched = snapshot(twin.m)
    legal_part(twin)
    want = snapshot(twin.m, vmstat=False)
    assert want != {k: v for k, v in untouched.items() if k != "vmstat"}, "the legal part changes nothing"
    w = World()
    if fail:
        w.m.fail_page_alloc(*fail)
    if expected is None:
        call(w)
    else:
        _expect(call, expected, w)
    w.m.fail_page_alloc(0)
    assert snapshot(w.m, vmstat=False) == want
    w.m.check()
