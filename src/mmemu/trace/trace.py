"""A loaded trace: its events, checkpoints, file mappings, metadata and starting snapshot,
checked to be in order (``Trace.validate``) before anyone reads them."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import format as _format
from .events import CHECKPOINT_DTYPE, EVENT_DTYPE, FAULT, KIND_NAMES, MAP_DTYPE, SYSCALL, SYSCALLS
from .format import TraceError


@dataclass
class Trace:
    """events (EVENT_DTYPE, in time order), checkpoints (CHECKPOINT_DTYPE; ``event`` is how
    many events came before), maps (MAP_DTYPE), meta (dict: command, pids, files, lost
    events, ...) and snapshot (bytes of an mmemu snapshot, or None)."""
    meta: dict
    events: np.ndarray = field(default_factory=lambda: np.zeros(0, EVENT_DTYPE))
    checkpoints: np.ndarray = field(default_factory=lambda: np.zeros(0, CHECKPOINT_DTYPE))
    maps: np.ndarray = field(default_factory=lambda: np.zeros(0, MAP_DTYPE))
    snapshot: Optional[bytes] = None

    def validate(self) -> None:
        """TraceError unless the records are in order and refer to each other correctly."""
        ev, cp, mp = self.events, self.checkpoints, self.maps
        if len(ev) and np.any(np.diff(ev["ts"].astype(np.int64)) < 0):
            i = int(np.flatnonzero(np.diff(ev["ts"].astype(np.int64)) < 0)[0]) + 1
            raise TraceError(f"bad trace: event {i} is earlier than event {i - 1} (reordered)")
        bad = ~np.isin(ev["kind"], list(KIND_NAMES))
        if bad.any():
            raise TraceError(f"bad trace: event {int(np.flatnonzero(bad)[0])} has an unknown kind")
        if len(cp):
            if np.any(np.diff(cp["event"]) < 0) or np.any(np.diff(cp["ts"].astype(np.int64)) < 0):
                raise TraceError("bad trace: checkpoints out of order (reordered)")
            if cp["event"].min() < 0 or cp["event"].max() > len(ev):
                raise TraceError("bad trace: a checkpoint refers to an event the trace lacks")
        files = self.meta.get("files", [])
        if not isinstance(files, list):
            raise TraceError("bad trace: meta 'files' is not a list")
        if len(mp) and (mp["file"].min() < 0 or mp["file"].max() >= len(files)
                        or mp["checkpoint"].min() < 0 or mp["checkpoint"].max() >= max(len(cp), 1)):
            raise TraceError("bad trace: a mapping refers to a file or checkpoint the trace lacks")
        lost = self.meta.get("lost_events", 0)
        if not isinstance(lost, int) or lost < 0:
            raise TraceError("bad trace: meta 'lost_events' is not a count")

    def save(self, path, compress: bool = True) -> None:
        """Write the trace (atomically)."""
        self.validate()
        _format.save(path, self.meta, {"events": self.events, "checkpoints": self.checkpoints,
                                       "maps": self.maps}, self.snapshot, compress)

    # ------------------------------------------------------------------ analysis
    def counts(self) -> dict:
        """Events per kind; syscalls by name."""
        out = Counter()
        for k, n in zip(*np.unique(self.events["kind"], return_counts=True)):
            out[KIND_NAMES[int(k)]] = int(n)
        sc = self.events[self.events["kind"] == SYSCALL]
        for nr, n in zip(*np.unique(sc["nr"], return_counts=True)):
            out["syscall " + SYSCALLS.get(int(nr), str(int(nr)))] = int(n)
        f = self.events[self.events["kind"] == FAULT]
        out["fault write"] = int(np.count_nonzero(f["a1"] & 2))
        return dict(out)

    def pids(self) -> list:
        return sorted(set(int(p) for p in np.unique(self.events["pid"])) |
                      set(int(p) for p in self.meta.get("pids", [])))

    def duration(self) -> float:
        ev = self.events
        return float(ev["ts"][-1] - ev["ts"][0]) / 1e9 if len(ev) > 1 else 0.0

    def info(self) -> str:
        """What ``mmemu trace info`` prints."""
        m = self.meta
        lines = [f"command:     {' '.join(m.get('command', [])) or '(attached to pid %s)' % m.get('root')}",
                 f"recorded:    {m.get('started', '?')} on Linux {m.get('kernel', '?')} "
                 f"(THP {m.get('thp', '?')})",
                 f"duration:    {self.duration():.3f} s of events, {m.get('elapsed', 0):.3f} s recorded",
                 f"processes:   {len(m.get('pids', []))} ({', '.join(map(str, m.get('pids', [])[:12]))}"
                 f"{' ...' if len(m.get('pids', [])) > 12 else ''})",
                 f"events:      {len(self.events)}",
                 f"lost events: {m.get('lost_events', 0)}"
                 + ("  (replay results are incomplete)" if m.get("lost_events") else ""),
                 f"checkpoints: {len(self.checkpoints)}",
                 f"files:       {len(m.get('files', []))} mapped",
                 f"snapshot:    {'yes' if self.snapshot else 'no'}"
                 + (f" ({len(self.snapshot)} bytes)" if self.snapshot else "")]
        lines.append("events by kind:")
        for k, n in sorted(self.counts().items()):
            lines.append(f"  {k:<24}{n:>12}")
        return "\n".join(lines)

    def to_pandas(self):
        """The events as a pandas DataFrame (needs the ``pandas`` extra): one row per event
        with its time in seconds from the first, pid, kind name, syscall name, arguments and
        result; faults get ``address``, ``error_code`` and ``write``."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Trace.to_pandas needs pandas: pip install 'mmemu[trace]'") from None
        ev = self.events
        df = pd.DataFrame({n: ev[n] for n in EVENT_DTYPE.names})
        t0 = ev["ts"][0] if len(ev) else 0
        df["time"] = (ev["ts"] - t0) / 1e9
        df["kind"] = [KIND_NAMES[int(k)] for k in ev["kind"]]
        df["syscall"] = [SYSCALLS.get(int(n), "") if k == SYSCALL else ""
                         for k, n in zip(ev["kind"], ev["nr"])]
        df["write"] = (ev["kind"] == FAULT) & ((ev["a1"] & 2) != 0)
        return df

    def checkpoints_pandas(self):
        """The checkpoints as a pandas DataFrame."""
        import pandas as pd
        return pd.DataFrame({n: self.checkpoints[n] for n in CHECKPOINT_DTYPE.names})


def load(path) -> Trace:
    """Read and check a trace file; TraceError if it is not a whole, intact, ordered trace."""
    meta, arrays, snap = _format.read(path)
    t = Trace(meta, arrays["events"], arrays["checkpoints"], arrays["maps"], snap)
    t.validate()
    return t
