"""Reservations: a syscall that allocates several page-table frames takes them first.

fork, mremap and the page-table breaks of munmap, mprotect, madvise and truncate count the
table frames they will allocate and reserve them before changing anything (the PhysMem
pool, handed out before the free lists), so an allocation failure -- memory full or an
injected one (``Machine.fail_page_alloc``) -- can only happen while nothing has changed.
The syscall then fails with ENOMEM and leaves the machine as it was.
"""
from __future__ import annotations

import functools
from typing import Callable, ParamSpec, TypeVar

from .errors import enomem

P = ParamSpec("P")
R = TypeVar("R")


class reserving:
    """A reservation scope with n table frames set aside, or MMError(ENOMEM) (a class, not
    a generator: fork enters one per call and a generator's context costs a microsecond)."""
    __slots__ = ("phys",)

    def __init__(self, phys, n: int, what: str):
        if not phys.reserve(n):
            raise enomem(f"{what} needs {n} page-table frames, {phys.available} available")
        self.phys = phys

    def __enter__(self):
        return None

    def __exit__(self, *exc) -> None:
        self.phys.release()


def top_up(phys, n: int, what: str) -> None:
    """Make the open scope hold n unused table frames, or MMError(ENOMEM) (nothing taken)."""
    if not phys.reserve(n, scope=False):
        raise enomem(f"{what} needs {n} page-table frames, {phys.available} available")


def syscall_scope(method: Callable[P, R]) -> Callable[P, R]:
    """Run a Process method inside a reservation scope, so that the frames its helpers
    reserve (top_up) stay set aside until it returns."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        phys = self.machine.phys
        phys.reserve(0)
        try:
            return method(self, *args, **kwargs)
        finally:
            phys.release()
    return wrapper      # type: ignore[return-value]  (the same signature as method)
