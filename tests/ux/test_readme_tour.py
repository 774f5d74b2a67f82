"""The README's API tour is true: every value its comments claim (``# -> VALUE``) is the
value the line gives when the tour runs."""
import ast
import contextlib
import io
import pathlib

import pytest

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
pytestmark = pytest.mark.one_design


def tour():
    text = README.read_text()
    part = text[text.index("## API tour"):]
    part = part[part.index("```python") + len("```python"):]
    return part[:part.index("```")]


def with_claims(code):
    """The tour with each ``expr  # -> literal  words`` line turned into a check of expr."""
    out, claims = [], 0
    for line in code.splitlines():
        body, sep, comment = line.partition("# -> ")
        if sep and body.strip():
            literal = comment.split("  ")[0].strip()
            ast.literal_eval(literal)           # a claim is a Python literal
            out.append(f"__claim(({body.strip()}), {literal}, {line.strip()!r})")
            claims += 1
        else:
            out.append(line)
    return "\n".join(out), claims


def test_tour_values_are_what_its_comments_claim():
    code, n = with_claims(tour())
    assert n >= 6
    seen = []

    def claim(value, expected, line):
        assert value == expected, f"README claims {expected!r}, the tour gives {value!r}: {line}"
        seen.append(line)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(code, "README API tour", "exec"), {"__claim": claim})
    assert len(seen) == n
    assert "MemTotal:" in out.getvalue() and "Node 0, zone   Normal" in out.getvalue()


def test_pagemap_of_the_moved_range_is_zero():
    """The comment's last claim: after the mremap, the old address reads as unmapped."""
    code = tour().replace("print(m.buddyinfo())", "__old = p.pagemap(a, 4).tolist()")
    ns = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, "README API tour", "exec"), ns)
    assert ns["__old"] == [0, 0, 0, 0]
