"""A sweep's configuration and its cells. A cell is keyed by its content: mmemu's version
and git commit, the design, the size, the workload and every parameter, so a rerun knows
which cells are done."""
from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from ..machine import parse_size

WORKLOADS = {
    "fork": "populate (one page in every `stride` written), fork",
    "fork_write": "populate, fork, the child writes the same pages",
    "fork_exit": "populate, fork, the child exits",
}
DESIGNS = ("classic", "deferred", "eager")


@dataclass(frozen=True)
class Cell:
    design: str
    size: int
    workload: str
    stride: int = 1
    version: str = ""
    commit: str = ""

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:20]


def code_version() -> tuple:
    """(mmemu version, git commit of the source tree or "unknown")."""
    from .. import __version__
    root = Path(__file__).resolve().parents[3]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        commit = out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return __version__, commit


def load_config(path) -> dict:
    """A sweep configuration from a JSON file: {"designs": [...], "sizes": ["64M", ...],
    "workloads": ["fork", {"name": "fork_write", "stride": 16}, ...]}."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as e:
        raise ValueError(f"cannot read sweep config {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"sweep config {path} is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"sweep config {path}: expected a JSON object")
    return doc


def make_cells(config: dict) -> list:
    """Every cell of the grid designs x sizes x workloads, in a stable order."""
    unknown = set(config) - {"designs", "sizes", "workloads", "batch", "profile"}
    if unknown:
        raise ValueError(f"sweep config: unknown keys {sorted(unknown)}")
    designs = list(config.get("designs", DESIGNS))
    bad = [d for d in designs if d not in DESIGNS]
    if bad:
        raise ValueError(f"sweep config: unknown designs {bad}; choose from {', '.join(DESIGNS)}")
    sizes = [parse_size(s) for s in config.get("sizes", [])]
    if not sizes:
        raise ValueError("sweep config: no sizes")
    workloads = []
    for w in config.get("workloads", ["fork"]):
        w = {"name": w} if isinstance(w, str) else dict(w)
        if w.get("name") not in WORKLOADS:
            raise ValueError(f"sweep config: unknown workload {w.get('name')!r}; "
                             f"choose from {', '.join(WORKLOADS)}")
        extra = set(w) - {"name", "stride"}
        if extra:
            raise ValueError(f"sweep config: workload {w['name']}: unknown parameters {sorted(extra)}")
        workloads.append(w)
    version, commit = code_version()
    return [Cell(d, s, w["name"], int(w.get("stride", 1)), version, commit)
            for d in designs for s in sizes for w in workloads]
