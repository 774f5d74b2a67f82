"""mmemu: a Cython-accelerated emulator of Linux memory management.

Emulated physical memory and x86-64 4-level page tables, VMAs, page faults, copy-on-write
and fork, with every number Linux reports (/proc/meminfo, /proc/PID/status, smaps, maps,
pagemap) and an invariant checker.
"""
from .errors import BusError, MMError, SegmentationFault, SnapshotError
from .check import InvariantError
from .flags import *  # noqa: F401,F403  (PROT_*, MAP_*, MADV_*, CLONE_* and the enums)
from .flags import __all__ as _flag_names
from .machine import Machine, parse_size
from .process import Process

__version__ = "0.1.0"

__all__ = ["Machine", "Process", "MMError", "SegmentationFault", "BusError", "InvariantError",
           "SnapshotError", "parse_size"] + list(_flag_names)
