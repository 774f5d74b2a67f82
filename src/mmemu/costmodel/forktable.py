"""The cost model in `mmemu fork-table`: each column's fork work priced by the default
profile, printed beside the emulator's own fork time."""
from __future__ import annotations

from .predict import predict
from .profile import load


def rows(results: list, profile=None) -> list:
    """Rows for the fork-table's columns: the kernel time the cost model predicts for each
    column's fork work, printed under the emulator's own fork time."""
    prof = load(profile)
    preds = [predict({"forks": 1, **r["work"]}, prof) for r in results]
    w = 18
    return [
        f"{'predicted kernel (ms)':<22}" + "".join(f"{p.seconds * 1e3:>{w}.3f}" for p in preds)
        + f"    cost profile {prof.name} (mmemu calibrate)",
    ]
