"""The whole-table COW designs on the command line: `mmemu fork-table --designs cow-pmd,...`
and the study, `mmemu cow-levels`."""
import json

import pytest

from mmemu.cli import main

pytestmark = pytest.mark.one_design      # the commands pick their designs themselves


def test_fork_table_takes_the_whole_table_designs(capsys):
    """cow-pmd / cow-pud stand for both accounting modes: 4 columns, and the work row says
    one PMD (PUD) table shared and no PTE table."""
    assert main(["fork-table", "--size", "8M", "--memory", "256M", "--layout", "bare",
                 "--designs", "cow-pmd,cow-pud", "--json", "--check", "--quiet"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert list(res) == ["cow-pmd-deferred", "cow-pmd-eager", "cow-pud-deferred", "cow-pud-eager"]
    for name, r in res.items():
        level = name.split("-")[1]
        assert r["work"][f"cow_{level}_tables_shared"] == 1
        assert r["work"]["cow_pte_tables_shared"] == 0 and r["work"]["fork_ptes_copied"] == 0
        # deferred: the child counts nothing it shares; eager: the PMD table and 4 PTE tables
        # (+ the PUD table when it is shared)
        eager_kb = 4 * (1 + 4) + (4 if level == "pud" else 0)
        want = (4 if level == "pmd" else 0) + (eager_kb if name.endswith("eager") else 0)
        assert r["child"]["VmPTE"] == want, name
    assert main(["fork-table", "--designs", "cow-pte", "--quiet"]) == 2


def test_the_study_command_measures_and_writes_its_document(tmp_path, capsys):
    doc, js = tmp_path / "study.md", tmp_path / "rows.json"
    assert main(["cow-levels", "--sizes", "8M", "--designs", "classic,deferred,cow-pmd-deferred,"
                 "cow-pud-eager", "--all-writes-up-to", "8M", "--doc", str(doc), "--json", str(js),
                 "--quiet"]) == 0
    rows = {r["design"]: r for r in json.loads(js.read_text())}
    # page-table pages a fork allocates: classic PUD + PMD + 4 PTE tables; PTE sharing the
    # PUD and PMD tables; PMD sharing the PUD table; PUD sharing nothing but the PGD
    assert {d: r["fork_pt_pages"] for d, r in rows.items()} == {
        "classic": 6 + 1, "deferred": 2 + 1, "cow-pmd-deferred": 1 + 1, "cow-pud-eager": 0 + 1}
    # the child's writes: 1% breaks every shared table on the way (4 PTE tables, + the PMD
    # table, + the PUD table), later writes none
    assert {d: [w["pt_pages"] for w in r["writes"]] for d, r in rows.items()} == {
        "classic": [0, 0, 0], "deferred": [4, 0, 0], "cow-pmd-deferred": [5, 0, 0],
        "cow-pud-eager": [6, 0, 0]}
    text = doc.read_text()
    assert "## The mechanism" in text and "## Where each level wins" in text
    assert "| COW PMD deferred | 2 | 4 |" in text
    assert main(["cow-levels", "--sizes", "3M", "--quiet"]) == 2
    assert main(["cow-levels", "--designs", "cow-pte", "--quiet"]) == 2


def test_the_study_document_is_redrawn_from_saved_rows(tmp_path, capsys):
    """--rows writes the document from a --json file without measuring: the same text as
    the measuring run wrote; the sizes above --all-writes-up-to are said to stop at 1%,
    with the run's own numbers scaled to them. A file that holds no rows is an error."""
    doc, js, again = tmp_path / "study.md", tmp_path / "rows.json", tmp_path / "again.md"
    assert main(["cow-levels", "--sizes", "4M,8M", "--designs", "classic,cow-pmd-deferred",
                 "--all-writes-up-to", "4M", "--doc", str(doc), "--json", str(js),
                 "--quiet"]) == 0
    rows = json.loads(js.read_text())
    assert [(r["size"] >> 20, len(r["writes"])) for r in rows] == [(4, 3), (4, 3), (8, 1), (8, 1)]
    assert all(r["host_peak_mib"] > 0 for r in rows)
    assert main(["cow-levels", "--rows", str(js), "--doc", str(again), "--quiet"]) == 0
    assert again.read_text() == doc.read_text().replace(
        "(this file is its output)", "(this file is its output, drawn with `--rows` from the "
        "rows of runs that saved them with `--json`)")
    assert "at 8 MiB that is 2 times as much" in doc.read_text()
    assert "mmemu cow-levels --sizes 4M,8M --all-writes-up-to 4M --doc" in doc.read_text()
    capsys.readouterr()
    js.write_text(json.dumps([{"design": "nonsense"}]))
    assert main(["cow-levels", "--rows", str(js), "--quiet"]) == 2
    assert "not a list of rows" in capsys.readouterr().err
    assert main(["cow-levels", "--rows", str(tmp_path / "missing.json"), "--quiet"]) == 2


def test_the_study_document_reads_its_analysis_off_the_rows(tmp_path):
    """The analysis's ratios are the rows' (hand-made here): PTE-level over PMD-level
    deferred fork time per size above 1 GiB, PUD-level's fork beside PMD-level's at the
    largest size; every size measured with every write: no "only the 1% write" note, and
    the command names --all-writes-up-to for sizes above its default."""
    writes = [{"fraction": f, "pages_per_span": 1, "cumulative_s": 1.0, "pt_pages": 0}
              for f in (0.01, 0.1, 1.0)]
    fork = {("deferred", 2): 0.003, ("cow-pmd-deferred", 2): 0.001,
            ("deferred", 32): 0.050, ("cow-pmd-deferred", 32): 0.002,
            ("cow-pud-deferred", 32): 0.0005}
    rows = [{"design": d, "title": d, "size": g << 30, "fork_s": s, "fork_pt_pages": 1,
             "child_vmpte_kb": 0, "writes": writes, "host_peak_mib": 100}
            for (d, g), s in fork.items()]
    js, doc = tmp_path / "rows.json", tmp_path / "study.md"
    js.write_text(json.dumps(rows))
    assert main(["cow-levels", "--rows", str(js), "--doc", str(doc), "--quiet"]) == 0
    text = doc.read_text()
    assert "(the table: 3x at 2 GiB, 25x at 32 GiB)" in text
    assert "at 32 GiB 0.500 ms against PMD-level's 2.000 ms, whose 32 entries" in text
    assert "only the 1% write" not in text
    assert "mmemu cow-levels --sizes 2G,32G --all-writes-up-to 32G --doc" in text
