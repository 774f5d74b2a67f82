"""Build mmemu's Cython core with MMEMU_DEBUG=1 and run the reliability tests against it.

    python tools/debug_build_check.py [--all] [pytest args...]

The debug build turns on Cython bounds and wraparound checks, C asserts and the
shared-table write guard (assert_table_private aborts on any write into a COW-shared
page table). The sources are copied to a temporary directory and built there, so the
checkout's own (release) build is untouched; the tests then import that copy
(PYTHONPATH) and conftest refuses to run unless the debug build is the one loaded.
Needs Cython, numpy and setuptools in the environment (the [test] extra has them).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the fuzzing, the bad-input catalogue, out-of-memory sweeps, the COW page-table tests and
# the page allocator's
RELIABILITY = ["test_fuzz*.py", "test_bad_input*.py", "test_oom.py",
               "test_cow_pte.py", "test_designs_agree.py", "test_snapshot.py", "test_check.py",
               "test_page_alloc.py", "test_physmem_api.py"]


def main(argv: list[str]) -> int:
    run_all = "--all" in argv
    extra = [a for a in argv if a != "--all"]
    tmp = Path(tempfile.mkdtemp(prefix="mmemu-debug-"))
    try:
        for name in ("setup.py", "pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, tmp / name)
        ignore = shutil.ignore_patterns("*.so", "*.c", "__pycache__", "build")
        for name in ("src", "cython_core"):
            shutil.copytree(ROOT / name, tmp / name, ignore=ignore)
        env = dict(os.environ, MMEMU_DEBUG="1")
        t0 = time.perf_counter()
        print(f"building the debug core in {tmp} ...", flush=True)
        build = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                               cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
        if build.returncode != 0:
            print(build.stdout)
            print("debug build failed", file=sys.stderr)
            return build.returncode
        print(f"built in {time.perf_counter() - t0:.0f} s", flush=True)
        if run_all:
            targets = ["tests"]
        else:
            targets = sorted({str(p.relative_to(ROOT)) for pat in RELIABILITY
                              for p in (ROOT / "tests").glob(pat)})
        env = dict(os.environ, PYTHONPATH=str(tmp / "src"), MMEMU_REQUIRE_DEBUG_BUILD="1")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *targets, *extra]
        print("+ " + " ".join(cmd), flush=True)
        return subprocess.run(cmd, cwd=ROOT, env=env).returncode
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
