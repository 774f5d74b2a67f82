"""The README stays true: its API tour runs as written, and its quick start names the
commands that exist."""
import contextlib
import io
import pathlib

import pytest

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
pytestmark = pytest.mark.one_design


def _block_after(text, heading, lang="python"):
    part = text[text.index(heading):]
    part = part[part.index("```" + lang) + len("```" + lang):]
    return part[:part.index("```")]


def test_api_tour_runs():
    code = _block_after(README.read_text(), "## API tour")
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(code, "README API tour", "exec"), {})
    assert "MemTotal:" in out.getvalue()


def test_quick_start_commands():
    text = README.read_text()
    assert "pip install . && mmemu fork-table" in text
    ci = text[text.index("<!-- ci:test-command -->"):text.index("<!-- /ci:test-command -->")]
    assert 'pip install ".[test,docs]" && python -m pytest' in ci
