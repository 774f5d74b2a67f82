"""What every ``mmemu`` subcommand shares: one-line errors and the checks made before any
work starts.

A subcommand module has ``add_parser(sub)``, which adds its parser to the ``mmemu``
subparsers and sets ``func``; its function checks its arguments first with the helpers
below (each raises UsageError with the one-line message) and only then works. ``main``
(mmemu.cli) runs it under ``guard``: a UsageError, an MMError or any other exception ends
as one line ``mmemu: ...`` on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from typing import Callable, Iterable, List, NoReturn, Optional

from .args import parse_size

EXIT_USAGE = 2


class UsageError(Exception):
    """A command cannot run as asked: the message is printed as ``mmemu: <message>``."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``mmemu: <message> (mmemu CMD --help)``, exit 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"mmemu: {message} (see '{self.prog} --help')\n")
        sys.exit(EXIT_USAGE)


def size_arg(text: str, option: str, *, minimum: int = 1, page_aligned: bool = True) -> int:
    """The bytes of a size option (``--size 1G``, ``--memory 32GiB``): UsageError unless
    it is a size, at least minimum bytes and (page_aligned) a multiple of 4096."""
    try:
        n = parse_size(text)
    except (TypeError, ValueError) as e:
        raise UsageError(f"{option}: {e}") from None
    if n < minimum:
        raise UsageError(f"{option} {text} is too small (at least {minimum} bytes)")
    if page_aligned and n % 4096:
        raise UsageError(f"{option} {text} must be a multiple of 4096 bytes")
    return n


def choices_arg(text: str, option: str, known: Iterable[str]) -> List[str]:
    """A comma-separated list of distinct names out of known (``--designs classic,eager``):
    UsageError if it is empty, names something unknown or names something twice."""
    known = list(known)
    names = [d.strip() for d in text.split(",") if d.strip()]
    if not names:
        raise UsageError(f"{option} is empty; choose from {', '.join(known)}")
    unknown = [d for d in names if d not in known]
    if unknown:
        raise UsageError(f"{option}: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    twice = sorted({d for d in names if names.count(d) > 1})
    if twice:
        raise UsageError(f"{option}: {', '.join(twice)} given more than once")
    return names


def output_path(path: Optional[str], option: str) -> Optional[str]:
    """Check that a file can be written at path before any work (``--json FILE``,
    ``--plot FILE``, ``--save FILE``): its directory exists and is writable, and path is
    not a directory. None passes through."""
    if path is None:
        return None
    if path == "" or os.path.isdir(path):
        raise UsageError(f"{option} {path!r}: not a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{option} {path}: directory {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise UsageError(f"{option} {path}: not writable")
    return path


def input_path(path: Optional[str], option: str) -> Optional[str]:
    """Check that path names a readable file (``--load FILE``). None passes through."""
    if path is None:
        return None
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise UsageError(f"{option} {path}: no such readable file")
    return path


def require(module: str, option: str, extra: str) -> None:
    """UsageError unless module can be imported (``--plot`` needs matplotlib): said
    before the run, with the pip extra that installs it."""
    if importlib.util.find_spec(module) is None:
        raise UsageError(f"{option} needs {module}: pip install \"mmemu[{extra}]\"")


def positive_int(text: str) -> int:
    """argparse type of a count option (``--repeat 5``): an integer >= 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


def guard(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a subcommand: its exit status, or 2 after one line ``mmemu: ...`` on stderr for
    any error (UsageError, an mmemu error, any other exception: never a traceback); 130
    on Ctrl-C; 1, quietly, when the reader of stdout went away (``mmemu ... | head``)."""
    from .errors import MMError
    try:
        return func(args)
    except UsageError as e:
        return _fail(str(e))
    except MMError as e:
        return _fail(f"{e.errname}: {e.strerror or e}")
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("mmemu: interrupted\n")
        return 130
    except (ValueError, TypeError, OSError) as e:
        return _fail(str(e) or type(e).__name__)
    except Exception as e:      # a bug: still one line, naming the exception
        return _fail(f"internal error: {type(e).__name__}: {e}")


def _fail(message: str) -> int:
    sys.stderr.write(f"mmemu: {message}\n")
    return EXIT_USAGE

