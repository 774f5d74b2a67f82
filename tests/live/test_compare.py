"""`mmemu compare PID` and `mmemu import PID --save FILE` on live helper processes."""
import json

import pytest

import mmemu
from mmemu.cli import main
from mmemu.compare import format_compare
from mmemu.oracle.live import LiveHelper, linux_proc_available, pfns_available

pytestmark = pytest.mark.one_design
_why = linux_proc_available() or pfns_available()
live = pytest.mark.skipif(bool(_why), reason=_why or "live kernel available")

BASE = 0x200000000000
GiB = 1 << 30


@pytest.fixture(scope="module")
def helper_1g():
    if _why:
        pytest.skip(_why)
    h = LiveHelper()
    r = h.call("mmap", addr=BASE, len=GiB, prot=3, flags=0x22 | 0x100000)
    assert r.get("ret") == BASE, r
    assert h.call("fill", addr=BASE, len=GiB) == {"ret": 0}
    yield h
    h.close()


@live
def test_compare_1g_matches_the_seed(helper_1g, capsys):
    """Classic: about 2 MB more page tables (seed +2076 kB); COW page tables: tens of kB
    (seed +92 kB). The deferred child's VmPTE counts only its own tables."""
    assert main(["compare", str(helper_1g.pid), "--json", "--check"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["import"]["mismatches"] == {}
    d = res["designs"]
    pt = {k: v["delta"]["PageTables"] for k, v in d.items()}
    assert 2048 <= pt["classic"] <= 2300
    assert 8 <= pt["deferred"] <= 100 and 8 <= pt["eager"] <= 100
    assert d["classic"]["child"]["VmPTE"] >= 2048
    assert d["deferred"]["child"]["VmPTE"] < 100
    assert d["eager"]["child"]["VmPTE"] == d["classic"]["child"]["VmPTE"]
    assert d["classic"]["child"]["RssAnon"] >= GiB >> 10
    assert d["classic"]["work"]["fork_ptes_copied"] >= 262144
    assert d["deferred"]["work"]["cow_pte_tables_shared"] >= 512
    text = format_compare(res)
    assert "COW PTE deferred" in text and "PageTables delta" in text


@live
def test_compare_text_output(helper_1g, capsys):
    assert main(["compare", str(helper_1g.pid), "--designs", "classic,deferred"]) == 0
    out = capsys.readouterr().out
    assert "classic fork" in out and "COW PTE deferred" in out and "eager" not in out


def test_compare_missing_pid(capsys):
    if linux_proc_available():
        pytest.skip(linux_proc_available())
    assert main(["compare", str(2 ** 22 + 4321)]) == 1
    assert "cannot import" in capsys.readouterr().err


@live
def test_import_save(tmp_path, capsys):
    h = LiveHelper()
    try:
        h.call("mmap", addr=BASE, len=1 << 20, prot=3, flags=0x22 | 0x100000)
        h.call("fill", addr=BASE, len=1 << 20)
        path = tmp_path / "snap.mmemu"
        assert main(["import", str(h.pid), "--save", str(path)]) == 0
        m = mmemu.Machine.load(str(path))
        (p,) = m.processes
        assert p.status()["RssAnon"] >= 1024
        m.check()
    finally:
        h.close()


@live
def test_import_without_save(capsys):
    h = LiveHelper()
    try:
        assert main(["import", str(h.pid)]) == 0
        out = capsys.readouterr().out
        assert "RssAnon" in out and "imported process" in out
    finally:
        h.close()
