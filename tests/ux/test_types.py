"""Type checkers accept the examples and a typical user script against mmemu's own types
(py.typed, static __all__, annotated public API): ``mypy --strict`` on every example, and
pyright (strict on the user script, standard on the gallery, whose matplotlib calls
matplotlib's stubs leave partly unknown). Both come with the ``test`` extra."""
import json
import pathlib
import shutil
import subprocess
import sys

import pytest

import mmemu

ROOT = pathlib.Path(__file__).resolve().parents[2]
PKG = pathlib.Path(mmemu.__file__).resolve().parents[1]    # where the mmemu under test lives
EXAMPLES = sorted(str(p) for p in (ROOT / "examples").glob("*.py"))
USER = str(ROOT / "examples" / "user_script.py")
pytestmark = pytest.mark.one_design

BROKEN = '''import mmemu
m = mmemu.Machine("1G")
free: str = m.meminfo()["MemFree"]
m.spawn().fork(cow_pgtable=True).mmap(0, 4096, mmemu.PROT_READ)
'''


def mypy(*files):
    pytest.importorskip("mypy", reason="mypy is not installed (pip install '.[test]')")
    # the mmemu the suite imports: PYTHONPATH=src in a checkout, site-packages once installed
    # (mypy finds the installed package through its py.typed)
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
                           "--no-incremental", "--cache-dir=/dev/null", *files],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


def pyright(tmp_path, mode, *files):
    exe = shutil.which("pyright")
    if exe is None:
        pytest.skip("pyright is not installed (pip install '.[test]')")
    cfg = tmp_path / f"pyright-{mode}.json"
    cfg.write_text(json.dumps({"extraPaths": [str(PKG)], "typeCheckingMode": mode,
                               "pythonVersion": f"{sys.version_info[0]}.{sys.version_info[1]}"}))
    r = subprocess.run([exe, "-p", str(cfg), "--pythonpath", sys.executable, *files],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    if r.returncode not in (0, 1) or "error" in r.stderr.lower() and "node" in r.stderr.lower():
        pytest.skip(f"pyright cannot run here: {r.stderr.strip()[:300]}")
    return r


def test_mypy_strict_accepts_examples_and_user_script():
    r = mypy(*EXAMPLES)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Success: no issues found in {len(EXAMPLES)} source files" in r.stdout


def test_mypy_catches_misuse(tmp_path):
    """The check can fail: mmemu's types are seen (an int is not a str, mmap needs flags)."""
    bad = tmp_path / "bad.py"
    bad.write_text(BROKEN)
    r = mypy(str(bad))
    assert r.returncode == 1
    assert 'Incompatible types in assignment (expression has type "int", variable has type "str")' in r.stdout
    assert 'Missing positional argument "flags" in call to "mmap" of "Process"' in r.stdout


def test_pyright_accepts_user_script_strict_and_examples(tmp_path):
    r = pyright(tmp_path, "strict", USER)
    assert r.returncode == 0 and "0 errors" in r.stdout, r.stdout
    r = pyright(tmp_path, "standard", *EXAMPLES)
    assert r.returncode == 0 and "0 errors" in r.stdout, r.stdout


def test_pyright_catches_misuse(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(BROKEN)
    r = pyright(tmp_path, "strict", str(bad))
    assert r.returncode == 1
    assert '"int" is not assignable to "str"' in r.stdout
    assert 'Argument missing for parameter "flags"' in r.stdout


def test_user_script_runs():
    r = subprocess.run([sys.executable, USER], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "cow_pte_tables_shared': 34" in r.stdout and "munmap: EINVAL" in r.stdout
