"""Cost profiles: unit costs of kernel work measured on one machine by `mmemu calibrate`,
saved as JSON with the kernel version, the CPU and the quality of every fit."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT = Path(__file__).with_name("default_profile.json")
UNITS = ("fork_fixed", "fork_table", "fork_pte", "anon_fault", "zero_fault", "cow_fault_warm",
         "cow_fault_cold", "pgtable_alloc", "zap_pte", "pgtable_free", "mprotect_pte",
         "exit_fixed", "exit_pte", "exit_table")


@dataclass
class Profile:
    """Unit costs in seconds (UNITS) and what they were measured on (`meta`)."""
    name: str
    units: dict
    meta: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {**self.meta, "units": self.units}


def from_json(doc: dict, name: str) -> Profile:
    units = doc.get("units")
    if not isinstance(units, dict):
        raise ValueError(f"cost profile {name}: no 'units' object")
    missing = [u for u in UNITS if not isinstance(units.get(u), (int, float))]
    if missing:
        raise ValueError(f"cost profile {name}: missing or non-numeric units {missing}")
    neg = [u for u in UNITS if units[u] < 0]
    if neg:
        raise ValueError(f"cost profile {name}: negative units {neg}")
    return Profile(name, {u: float(units[u]) for u in UNITS},
                   {k: v for k, v in doc.items() if k != "units"})


def load(path=None) -> Profile:
    """The profile in `path` (JSON written by `mmemu calibrate`), a Profile as it is, or
    the default one (None)."""
    if isinstance(path, Profile):
        return path
    p = DEFAULT if path is None else Path(path)
    try:
        doc = json.loads(p.read_text())
    except OSError as e:
        raise ValueError(f"cannot read cost profile {p}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"cost profile {p} is not JSON: {e}") from None
    name = "default (measured on the development machine)" if path is None else str(p)
    return from_json(doc, name)


def save(profile: Profile, path) -> None:
    Path(path).write_text(json.dumps(profile.to_json(), indent=1) + "\n")
