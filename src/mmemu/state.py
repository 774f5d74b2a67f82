"""Saved state read back: typed, bounded fields of a snapshot's JSON state and the references
between objects, for the ``from_state`` methods of the classes that restore themselves
(Machine, Process, MM, VMA, File, ShmemFile, the swap device; mmemu.snapshot reads the
file and calls Machine.from_state). Every bad value raises SnapshotError saying where it
is; no message shows more of a value than reprlib does (a deeply nested list is not
walked).
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import reprlib
import textwrap

from .errors import SnapshotError


def bad(msg: str) -> SnapshotError:
    return SnapshotError(f"bad snapshot: {msg}")


def show(v) -> str:
    """A short, bounded repr of a value from the file."""
    return reprlib.repr(v)


def field(d, key, types, where):
    """d[key], of one of types (a bool only if bool is one of them)."""
    types = types if isinstance(types, tuple) else (types,)
    v = d.get(key) if isinstance(d, dict) else None
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
        names = "/".join(t.__name__ for t in types)
        raise bad(f"{where}: {key!r} must be {names}, got {type(v).__name__}")
    return v


def integer(d, key, where, lo=None, hi=None) -> int:
    """d[key], an integer in [lo, hi]."""
    v = d.get(key) if isinstance(d, dict) else None
    if not isinstance(v, int) or isinstance(v, bool):
        raise bad(f"{where}: {key!r} must be an integer, got {type(v).__name__}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise bad(f"{where}: {key!r} = {v} out of range")
    return v


@functools.lru_cache(maxsize=None)
def declared_attributes(cls) -> frozenset:
    """The attributes a class's __init__ assigns to self (a dataclass: its fields): its
    state, declared where it is made. Anything else on an instance was added later."""
    if dataclasses.is_dataclass(cls):
        return frozenset(f.name for f in dataclasses.fields(cls))
    out = set()
    for k in cls.__mro__:
        if k is object or "__init__" not in vars(k):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(vars(k)["__init__"])))
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AnnAssign) else []
            out.update(t.attr for t in targets if isinstance(t, ast.Attribute)
                       and isinstance(t.value, ast.Name) and t.value.id == "self")
    return frozenset(out)


def refuse_undeclared(obj, where) -> None:
    """save() writes what each class declares: state added to an object at run time would
    be lost, so the snapshot is refused instead (SnapshotError naming it)."""
    extra = set(vars(obj)) - declared_attributes(type(obj))
    if extra:
        raise SnapshotError(f"cannot save: {where} has state the snapshot format does not "
                            f"know: {', '.join(sorted(extra))}")


def expect(value, cls, what):
    """A Python-level argument of a state method: TypeError unless it is a cls."""
    if not isinstance(value, cls):
        raise TypeError(f"{what} must be a {cls.__name__}, not {type(value).__name__}")
    return value


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class SaveRefs:
    """While saving: the index of each backing object (in inode order) and of each anon_vma
    (numbered as VMAs first name them)."""

    def __init__(self, backings):
        self.backings = list(backings)
        self._backing = {id(b): i for i, b in enumerate(self.backings)}
        self.anon_vmas = []             # their ``forked`` flags, by index
        self._anon = {}

    def backing_index(self, obj, where) -> int:
        i = self._backing.get(id(obj))
        if i is None:
            raise SnapshotError(f"cannot save: {where} maps an object the machine does not know")
        return i

    def anon_vma_index(self, av) -> int:
        i = self._anon.get(id(av))
        if i is None:
            i = self._anon[id(av)] = len(self.anon_vmas)
            self.anon_vmas.append(bool(av.forked))
        return i


class LoadRefs:
    """While loading: the backing objects and anon_vmas the VMAs name by index."""

    def __init__(self, backings, anon_vmas):
        self.backings = backings
        self.anon_vmas = anon_vmas

    def backing(self, i, where):
        if not is_int(i) or not 0 <= i < len(self.backings):
            raise bad(f"{where}: VMA backing index {show(i)} out of range")
        return self.backings[i]

    def anon_vma(self, i, where):
        if not is_int(i) or not 0 <= i < len(self.anon_vmas):
            raise bad(f"{where}: anon_vma index {show(i)} out of range")
        return self.anon_vmas[i]
