"""The randomized tests replay a fixed budget in CI and explore when asked: without a budget
variable every Hypothesis test is derandomized (the same examples every run, so a red
build means a change broke something); MMEMU_FUZZ_EXAMPLES / MMEMU_FUZZ_STEPS /
MMEMU_ORACLE_EXAMPLES give the asked-for number of fresh random examples. (The oracle test
used to be derandomized whatever its budget, so asking for more only replayed the same
first examples.)"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.one_design
TESTS = Path(__file__).resolve().parents[1]
FOLDERS = [str(TESTS)] + sorted(str(d) for d in TESTS.iterdir() if d.is_dir() and not d.name.startswith("_"))
# module -> (its budget variable, CI's number of examples)
BUDGETS = {
    "test_fuzz": ("MMEMU_FUZZ_EXAMPLES", 100),
    "test_designs_agree": ("MMEMU_FUZZ_EXAMPLES", 40),
    "test_bad_input": ("MMEMU_FUZZ_EXAMPLES", 300),
    "test_oracle": ("MMEMU_ORACLE_EXAMPLES", 100),
    "test_upper_designs_agree": ("MMEMU_FUZZ_EXAMPLES", 30),
    "test_v1_bugs": ("MMEMU_FUZZ_EXAMPLES", 500),
    "test_versions_agree": ("MMEMU_FUZZ_EXAMPLES", 15),
    "test_thp_fuzz": ("MMEMU_FUZZ_EXAMPLES", 40),
    "test_fuzz_thp_regions": ("MMEMU_FUZZ_EXAMPLES", 4),
    "test_designs_agree_thp": ("MMEMU_FUZZ_EXAMPLES", 4),
    "test_oracle_thp": ("MMEMU_ORACLE_EXAMPLES", 4),
}
BUDGET_VARIABLES = ("MMEMU_FUZZ_EXAMPLES", "MMEMU_FUZZ_STEPS", "MMEMU_ORACLE_EXAMPLES")


def settings_with(env):
    """{module: [max_examples, derandomize]} as the test modules set them up in a fresh
    interpreter with env as the budget variables."""
    code = ("import importlib, json, sys; sys.path[:0] = sys.argv[1].split(':'); "
            "print(json.dumps({m: [importlib.import_module(m).SETTINGS.max_examples, "
            "importlib.import_module(m).SETTINGS.derandomize] for m in sys.argv[2:]}))")
    clean = {k: v for k, v in os.environ.items() if k not in BUDGET_VARIABLES}
    out = subprocess.run([sys.executable, "-c", code, ":".join(FOLDERS), *BUDGETS], env={**clean, **env},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_ci_replays_a_fixed_budget():
    assert settings_with({}) == {m: [n, True] for m, (_, n) in BUDGETS.items()}


@pytest.mark.parametrize("variable", ["MMEMU_FUZZ_EXAMPLES", "MMEMU_ORACLE_EXAMPLES"])
def test_a_budget_variable_explores_fresh_examples(variable):
    got = settings_with({variable: "7"})
    assert got == {m: ([7, False] if var == variable else [n, True])
                   for m, (var, n) in BUDGETS.items()}


def test_asking_for_steps_explores_too():
    assert settings_with({"MMEMU_FUZZ_STEPS": "5"})["test_fuzz"] == [100, False]


def test_every_hypothesis_test_takes_its_settings_from_the_budget_rule():
    """A Hypothesis test anywhere in tests/ is listed above and sets neither derandomize
    nor its own settings(): conftest.fuzz_settings decides."""
    users = set()
    for path in TESTS.rglob("*.py"):
        text = path.read_text()
        if path.name in ("conftest.py", Path(__file__).name):
            continue
        if re.search(r"^\s*(from|import) hypothesis", text, re.M):
            users.add(path.stem)
            assert not re.search(r"derandomize\s*=|\bsettings\(", text), path.name
            assert "fuzz_settings(" in text, path.name
    assert users == set(BUDGETS)
