"""Record a real program's memory behaviour on Linux and replay it in the emulator.

``mmemu record`` (mmemu.trace.record) follows a process tree with a tracefs instance: user
page faults, the memory system calls with their arguments and results, forks, execs and
exits, and checkpoints of /proc/PID/status and smaps_rollup. ``mmemu.trace.load(path)``
reads a trace file (mmemu.trace.format); ``mmemu replay`` (mmemu.trace.replay) runs it
under each page-table design and compares every checkpoint with the kernel's values.
"""
from .events import EVENT_DTYPE, CHECKPOINT_DTYPE, MAP_DTYPE, KIND_NAMES, SYSCALLS
from .format import TraceError
from .trace import Trace, load

__all__ = ["Trace", "TraceError", "load", "EVENT_DTYPE", "CHECKPOINT_DTYPE", "MAP_DTYPE",
           "KIND_NAMES", "SYSCALLS"]
