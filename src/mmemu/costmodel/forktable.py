"""The cost model in `mmemu fork-table`: each column's fork work priced by the default
profile, printed beside the emulator's own fork time."""
from __future__ import annotations

from ..bench.report import fmt_time
from .predict import predict
from .profile import load


def lines(results: list, profile=None) -> str:
    """Rows for the fork-table's columns: predicted kernel fork time and the emulator's."""
    prof = load(profile)
    preds = [predict({"forks": 1, **r["work"]}, prof) for r in results]
    w = 18
    return "\n".join([
        "",
        f"{'predicted kernel fork':<22}" + "".join(f"{fmt_time(p.seconds):>{w}}" for p in preds),
        f"{'mmemu fork':<22}" + "".join(f"{fmt_time(r['fork_ms'] / 1e3):>{w}}" for r in results),
        f"(cost profile: {prof.name}; `mmemu calibrate` measures this machine's)",
    ])
