"""API corrections of issue 17: fork's tri-state cow_pgtable, parameters checked in one
place (mmemu.args), no user-built Process, sizes spelled as people spell them."""
import numpy as np
import pytest

import mmemu
from mmemu.args import COW_PGTABLE_MODES, format_size, parse_size
from mmemu.flags import CLONE_COW_PGTABLE, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE

pytestmark = pytest.mark.one_design
MiB = 1 << 20


def populated(**kw):
    m = mmemu.Machine("64M", **kw)
    p = m.spawn()
    a = p.mmap(0, 4 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    p.touch(a, 4 * MiB)
    return m, p


def shared_by(m, do):
    before = m.vmstat()
    child = do()
    d = m.vmstat() - before
    return child, d["cow_pte_tables_shared"], d["fork_pte_tables_copied"]


@pytest.mark.parametrize("machine_default", [False, True])
def test_fork_cow_pgtable_tristate(machine_default):
    """None follows the machine's (or prctl's) setting; True and False force the design."""
    m, p = populated(cow_pgtable=machine_default)
    _, shared, copied = shared_by(m, p.fork)
    assert (shared, copied) == ((2, 0) if machine_default else (0, 2))
    _, shared, copied = shared_by(m, lambda: p.fork(cow_pgtable=False))
    assert (shared, copied) == (0, 2)
    _, shared, copied = shared_by(m, lambda: p.fork(cow_pgtable=True))
    assert (shared, copied) == (2, 0)
    _, shared, copied = shared_by(m, lambda: p.fork(cow_pgtable=np.bool_(False)))
    assert (shared, copied) == (0, 2)
    # clone3 has no "classic" flag: without CLONE_COW_PGTABLE the setting decides
    _, shared, _ = shared_by(m, p.clone3)
    assert shared == (2 if machine_default else 0)
    _, shared, _ = shared_by(m, lambda: p.clone3(CLONE_COW_PGTABLE))
    assert shared == 2
    m.check()


def test_fork_false_overrides_prctl():
    m, p = populated()
    p.prctl(mmemu.PR_SET_COW_PTE, 1)
    _, shared, copied = shared_by(m, lambda: p.fork(cow_pgtable=False))
    assert (shared, copied) == (0, 2)
    m.check()


@pytest.mark.parametrize("bad,exc", [("yes", ValueError), ("", ValueError), (1, TypeError),
                                     (0, TypeError), (2.0, TypeError), (b"y", TypeError)])
def test_fork_cow_pgtable_refuses_other_values(bad, exc):
    m, p = populated()
    before = (len(m.processes), dict(m.meminfo()), dict(m.vmstat()))
    with pytest.raises(exc, match="cow_pgtable must be one of None, False, True"):
        p.fork(cow_pgtable=bad)
    assert (len(m.processes), dict(m.meminfo()), dict(m.vmstat())) == before
    m.check()


def test_accepted_modes_are_one_named_constant():
    assert COW_PGTABLE_MODES == (None, False, True, "pte", "pmd", "pud")
    m, p = populated()
    for mode in COW_PGTABLE_MODES:
        p.fork(cow_pgtable=mode).exit()
    m.check()


def test_process_cannot_be_built_by_users():
    m = mmemu.Machine("64M")
    free = m.meminfo()["MemFree"]
    with pytest.raises(TypeError, match="Machine.spawn"):
        mmemu.Process(m, 77)
    assert m.processes == [] and m.meminfo()["MemFree"] == free
    m.check()
    p = m.spawn()
    assert type(p) is mmemu.Process and p.pid == 1
    m.check()


@pytest.mark.parametrize("bad,exc,text", [
    (None, TypeError, "not NoneType"), (1.5, TypeError, "not float"), (True, TypeError, "bool"),
    (b"1G", TypeError, "not bytes"), ("1P", ValueError, "more than the emulator models (64T)"),
    ("lots", ValueError, "not a size"), ("1Q", ValueError, "not a size"), (-4096, ValueError, "negative"),
])
def test_machine_memory_errors(bad, exc, text):
    with pytest.raises(exc, match=text.replace("(", r"\(").replace(")", r"\)")):
        mmemu.Machine(bad)


def test_machine_flag_parameters_are_checked():
    with pytest.raises(ValueError, match="cow_pgtable must be one of None, False, True, 'pte'"):
        mmemu.Machine("1M", cow_pgtable="yes")
    with pytest.raises(TypeError, match="cow_pgtable must be one of"):
        mmemu.Machine("1M", cow_pgtable=1)
    with pytest.raises(ValueError, match="cow_pte_accounting must be one of 'deferred', 'eager'"):
        mmemu.Machine("1M", cow_pte_accounting="lazy")
    with pytest.raises(TypeError):
        mmemu.Machine("1M", cow_pte_accounting=1)
    # None (the default) means the version's accounting, or deferred without a version
    assert mmemu.Machine("1M", cow_pte_accounting=None).cow_pte_accounting == "deferred"


@pytest.mark.parametrize("text", ["1GiB", "1Gi", "1GB", "1G", "1g", "1gib", "1 G", "1024M", "1024MiB",
                                  "1048576K", "1048576k", "1073741824", "1073741824B", "0.5T"])
def test_every_spelling_of_one_gib_is_binary(text):
    want = (1 << 40) // 2 if text == "0.5T" else 1 << 30
    assert parse_size(text) == want
    assert mmemu.Machine(text).memory == want


@pytest.mark.parametrize("bad", ["1i", "1Gx", "GiB", "1GiBB", "1.G", "1,5G"])
def test_size_spellings_refused(bad):
    with pytest.raises(ValueError, match="not a size"):
        parse_size(bad)


def test_format_size():
    assert [format_size(n) for n in (64 << 20, 1 << 30, 16 << 30, 3 << 10, 4097)] == \
        ["64M", "1G", "16G", "3K", "4097"]


def test_processes_and_meminfo_convention():
    """What the machine holds is a property (a fresh list), what the kernel computes a method."""
    m = mmemu.Machine("64M")
    p = m.spawn()
    assert isinstance(type(m).processes, property) and m.processes == [p]
    assert m.processes is not m.processes
    assert callable(m.meminfo) and m.meminfo()["MemTotal"] == 64 * 1024


def test_static_all_names_every_flag():
    import mmemu.flags as flags
    assert set(flags.__all__) <= set(mmemu.__all__)
    assert all(hasattr(mmemu, n) for n in mmemu.__all__)
    src = (__import__("pathlib").Path(mmemu.__file__)).read_text()
    assert "globals()" not in src and "import *" not in src
    assert (__import__("pathlib").Path(mmemu.__file__).parent / "py.typed").exists()
