"""The documentation site builds with warnings as errors (``sphinx-build -W``) and renders in
a real browser: headless Chromium opens the index, an API page and a gallery page, each
draws (a non-blank screenshot; the gallery page shows its matplotlib figure) and none logs
to the console. Needs the ``docs`` extra; Chromium is Debian's ``chromium``, installed
with apt-get when missing (skipped, with the reason, where that is impossible)."""
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS_EXTRA = ["sphinx", "numpydoc", "furo", "myst_parser", "sphinx_gallery", "matplotlib"]
pytestmark = pytest.mark.one_design


def _missing():
    return [m for m in DOCS_EXTRA if importlib.util.find_spec(m) is None]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if _missing():
        pytest.skip(f"the docs extra is not installed (missing {', '.join(_missing())}): "
                    "pip install '.[docs]'")
    out = tmp_path_factory.mktemp("html")
    env = {**os.environ, "MPLBACKEND": "Agg"}      # the mmemu this test imports (PYTHONPATH or installed)
    r = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                        str(ROOT / "docs"), str(out)], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, f"sphinx-build -W failed:\n{r.stdout}\n{r.stderr}"
    return out


def test_site_builds_with_warnings_as_errors(site):
    for page in ("index.html", "getting-started.html", "concepts.html", "howto.html", "api.html",
                 "performance.html", "reliability.html", "auto_examples/index.html",
                 "auto_examples/plot_fork_cost.html", "auto_examples/plot_pagetables_per_design.html"):
        assert (site / page).is_file(), page
    api = (site / "api.html").read_text()
    for name in ("mmemu.Machine", "mmemu.Process.fork", "mmemu.args.parse_size",
                 "mmemu.stats.Counters.describe", "mmemu.args.COW_PGTABLE_MODES"):
        assert f'id="{name}"' in api, name
    # the gallery scripts ran during the build and drew their figures
    images = {p.name for p in (site / "_images").iterdir()}
    assert {"sphx_glr_plot_fork_cost_001.png", "sphx_glr_plot_pagetables_per_design_001.png"} <= images


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        return exe
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("no chromium, and apt-get cannot install it here (not root or not Debian)")
    r = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, text=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=600)
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip(f"apt-get install chromium failed: {(r.stderr or r.stdout).strip()[-300:]}")
    return exe


def shoot(exe, url, png):
    """Open url in headless Chromium, save a screenshot; the page's console messages."""
    r = subprocess.run([exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--enable-logging=stderr", "--v=0", "--window-size=1280,1600",
                        "--virtual-time-budget=5000", f"--screenshot={png}", url],
                       capture_output=True, text=True, timeout=120)
    assert png.is_file(), r.stderr[-2000:]
    return [line for line in r.stderr.splitlines() if ":CONSOLE" in line]


def pixels(png):
    import matplotlib.image as mpimg
    return mpimg.imread(str(png))[..., :3]


def orange(img):
    """Pixels of matplotlib's second colour (C1, #ff7f0e): the figure's deferred series."""
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    return int(((r > 0.9) & (g > 0.4) & (g < 0.6) & (b < 0.2)).sum())


def test_site_renders_in_chromium(site, tmp_path):
    exe = _chromium()
    bad = tmp_path / "bad.html"          # the console check can fail
    bad.write_text("<html><body>x<script>undefinedFunction();</script></body></html>")
    assert any("undefinedFunction" in line for line in shoot(exe, bad.as_uri(), tmp_path / "bad.png"))
    for page in ("index.html", "api.html", "auto_examples/plot_fork_cost.html"):
        png = tmp_path / (page.replace("/", "_") + ".png")
        console = shoot(exe, (site / page).as_uri(), png)
        assert console == [], f"{page} logged to the console: {console}"
        img = pixels(png)
        assert img.shape[:2] == (1600, 1280)
        assert img.std() > 0.05, f"{page} renders blank"
        if page.startswith("auto_examples"):
            assert orange(img) > 200, "the gallery page does not show its figure"
        else:
            assert orange(img) == 0
