"""`mmemu fork-table --designs` with the series' versions: each column runs on its profile,
and the v1 / RFC v2 published tables are printed beside mmemu's numbers (mmemu.published)."""
import json

import pytest

from mmemu.cli import main

pytestmark = pytest.mark.one_design


def test_versions_are_designs_and_run_on_their_profile(capsys):
    assert main(["fork-table", "--size", "8M", "--memory", "256M", "--designs",
                 "odf,v1,v2,v5", "--json", "--quiet", "--check"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert list(res) == ["odf", "v1", "v2", "v5"]
    # the typical layout: ODF shares only the spans one anonymous non-heap VMA covers whole
    # and copies the 4 others; v1, v2 and v5 share every span with a table
    assert {d: res[d]["work"]["cow_pte_tables_shared"] for d in res} == \
        {"odf": 4, "v1": 8, "v2": 8, "v5": 8}
    assert res["odf"]["work"]["fork_pte_tables_copied"] == 4
    # deferred: the child counts no shared page; v5 (eager): all of them, as the parent
    assert [res[d]["child"]["VmRSS"] for d in ("v1", "v2")] == [0, 0]
    assert res["v5"]["child"]["VmRSS"] == res["v5"]["parent"]["VmRSS"] > 8192
    assert res["v5"]["accounting"] == "eager" and res["v1"]["accounting"] == "deferred"


def test_the_published_tables_are_printed_beside_mmemu(capsys):
    assert main(["fork-table", "--size", "8M", "--memory", "256M", "--designs", "v1,v2",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "published: v1 cover letter (20220519183127.3909598-1)" in out
    assert "  PageTables           +2076         +92" in out
    assert "published: RFC v2 cover letter (20220927162957.270460-1)" in out
    assert "1049688/1048688" in out and "1049968/2576" in out and "2096/44" in out
    assert "child VmRSS: RFC v2 2576 kB, mmemu 0 kB" in out


def test_without_a_version_no_published_table(capsys):
    assert main(["fork-table", "--size", "8M", "--memory", "256M", "--designs", "classic,v5",
                 "--quiet"]) == 0
    assert "published:" not in capsys.readouterr().out
