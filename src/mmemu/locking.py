"""One lock per Machine, taken by every public entry point of Machine, Process and File.

The Cython kernels release the GIL while they walk and change page tables, so without a lock
two threads could be inside one machine's tables at once. With it:

- one Machine is safe from any number of threads: its public calls (syscalls, accesses,
  /proc views, save, import, check) run one at a time, each whole, in the order the lock
  grants them;
- different Machines run in parallel: a kernel working on one machine holds that machine's
  lock, not the GIL, so a thread driving another machine is not held up.

The lock is re-entrant (a public call may make others, e.g. ``fork`` reading ``status``).
Objects handed out are snapshots (views are computed under the lock and hold no reference
into live state), except ``m.phys``'s numpy arrays, which are raw views of the emulated
frames' metadata: read them while no other thread drives the machine.
"""
from __future__ import annotations

import functools
import inspect
import threading


def new_lock() -> threading.RLock:
    return threading.RLock()


def _machine_lock(obj):
    machine = getattr(obj, "machine", obj)
    return machine._lock


def _locked(fn):
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def steps(self, *args, **kwargs):
            lock = _machine_lock(self)
            with lock:
                it = fn(self, *args, **kwargs)
            while True:
                with lock:          # each step runs whole; other calls may run between steps
                    try:
                        item = next(it)
                    except StopIteration:
                        return
                yield item
        steps.__mmemu_locked__ = True
        return steps

    @functools.wraps(fn)
    def call(self, *args, **kwargs):
        with _machine_lock(self):
            return fn(self, *args, **kwargs)
    call.__mmemu_locked__ = True
    return call


def serialised(cls):
    """Class decorator: every public method and property of cls runs holding its machine's
    lock (``self.machine._lock``, or ``self._lock`` for the Machine itself). Static and class
    methods are left alone: they reach no machine's state."""
    for name, attr in list(vars(cls).items()):
        if name.startswith("_"):
            continue
        if isinstance(attr, property):
            setattr(cls, name, property(_locked(attr.fget) if attr.fget else None,
                                        _locked(attr.fset) if attr.fset else None,
                                        attr.fdel, attr.__doc__))
        elif inspect.isfunction(attr):
            setattr(cls, name, _locked(attr))
    return cls


def locked_function(fn):
    """Decorator for a module-level entry point whose first argument is a Machine."""
    @functools.wraps(fn)
    def call(machine, *args, **kwargs):
        with machine._lock:
            return fn(machine, *args, **kwargs)
    return call
