"""Errors: one exception per Linux outcome.

A syscall that Linux fails with an errno raises MMError (an OSError carrying that errno);
an access Linux answers with a signal raises SegmentationFault (SIGSEGV) or BusError (SIGBUS).
"""
from __future__ import annotations

import errno as _errno
import os


class MMError(OSError):
    """A syscall failed; ``.errno`` is the value Linux returns (EINVAL, ENOMEM, ...)."""

    def __init__(self, err: int, message: str | None = None):
        text = os.strerror(err)
        if message:
            text = f"{text}: {message}"
        super().__init__(err, text)

    @property
    def errname(self) -> str:
        return _errno.errorcode.get(self.errno, str(self.errno))


class SegmentationFault(Exception):
    """SIGSEGV on an access. ``.address`` faulted; ``.code`` is "SEGV_MAPERR" or "SEGV_ACCERR"."""

    def __init__(self, address: int, code: str, message: str | None = None):
        self.address = address
        self.code = code
        self.signo = 11
        super().__init__(f"SIGSEGV ({code}) at {address:#x}" + (f": {message}" if message else ""))


class BusError(Exception):
    """SIGBUS on an access (a file page beyond end of file). ``.address`` faulted."""

    def __init__(self, address: int, code: str = "BUS_ADRERR", message: str | None = None):
        self.address = address
        self.code = code
        self.signo = 7
        super().__init__(f"SIGBUS ({code}) at {address:#x}" + (f": {message}" if message else ""))


def einval(msg: str | None = None) -> MMError:
    return MMError(_errno.EINVAL, msg)


def enomem(msg: str | None = None) -> MMError:
    return MMError(_errno.ENOMEM, msg)


class SnapshotError(ValueError):
    """``Machine.load`` refused a file: not an mmemu snapshot, an unsupported format
    version, truncated, corrupted (a checksum mismatch names the section) or inconsistent.
    A ValueError, not an OSError: the file was read, its contents are wrong (an unreadable
    or missing file raises the usual OSError). ``Machine.save`` raises it when the machine
    holds state the format cannot store."""
