"""The package's structure: modules import alone and without cycles, no module calls
another module's private methods, every constant of the core is defined once (in Cython)
and every vmstat event slot has one name and a help text."""
import ast
import functools
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import mmemu
from mmemu._core import constants as C

pytestmark = pytest.mark.one_design
ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "mmemu"
CORE = ROOT / "cython_core" / "mmemu" / "_core"
# run by path in a child process with only the standard library (the live kernel's side)
STANDALONE = {"oracle/helper.py", "bench/kernel_helper.py"}


@functools.lru_cache(maxsize=None)
def modules():
    """{dotted name: path} of every Python module of the package."""
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def rel(path):
    return str(path.relative_to(SRC))


# ---------------------------------------------------------------- imports

def _import_alone(name):
    """(the mmemu modules loaded, or the error) of ``import name`` in a fresh interpreter."""
    code = f"import sys, {name}; print(' '.join(m for m in sys.modules if m.startswith('mmemu')))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return (set(r.stdout.split()), None) if r.returncode == 0 else (set(), r.stderr.strip().splitlines()[-1])


def test_every_module_imports_alone():
    """Each module in a fresh interpreter: an import cycle shows up as an ImportError in
    whichever module the cycle is entered from. ``import mmemu.x`` first runs the
    package's __init__, so the modules that one loads are imported in the same order
    whatever x is: one interpreter covers them; every other module gets its own."""
    loaded, err = _import_alone("mmemu")
    assert err is None and "mmemu.process" in loaded
    bad = {}
    for name, path in modules().items():
        if rel(path) in STANDALONE or name in loaded:
            continue
        _, err = _import_alone(name)
        if err:
            bad[name] = err
    assert bad == {}


def _resolve(modname, node, pkg):
    """The mmemu module an import statement names (the package itself for `from . import
    x` when x is a name, not a module), or None for other packages."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "mmemu"]
    if node.level == 0:
        base = node.module or ""
    else:
        base = ".".join(pkg.split(".")[:len(pkg.split(".")) - node.level + 1])
        base = f"{base}.{node.module}" if node.module else base
    if base.split(".")[0] != "mmemu":
        return []
    names = modules()
    out = []
    for a in node.names:
        sub = f"{base}.{a.name}"
        out.append(sub if sub in names or sub.startswith("mmemu._core.") else base)
    return out


def import_graph(top_level_only):
    """{module: {modules it imports}} over the package's Python modules (compiled
    mmemu._core modules are leaves)."""
    graph = {}
    for name, path in modules().items():
        pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text())
        nodes = tree.body if top_level_only else list(ast.walk(tree))
        deps = set()
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps.update(d for d in _resolve(name, node, pkg) if d in modules() and d != name)
        graph[name] = deps
    return graph


def cycles(graph):
    """The import cycles of a graph (each as a list of modules), by depth-first search."""
    found, state, stack = [], {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                found.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return found


def test_no_import_cycles_at_import_time():
    """Module-level imports form no cycle, whatever order modules are imported in."""
    assert cycles(import_graph(top_level_only=True)) == []


def test_the_syscall_modules_form_no_cycle_even_through_deferred_imports():
    """The syscall layer is layered: args/vma/flags/errors, then mm and memory, then the
    kernel-file modules, then Process, then Machine. No import inside a function loops
    back either (the cycle test above only sees module-level imports)."""
    layer = {"mmemu.args", "mmemu.memory", "mmemu.mm", "mmemu.mmap", "mmemu.mprotect",
             "mmemu.madvise", "mmemu.mremap", "mmemu.brk", "mmemu.fork", "mmemu.process",
             "mmemu.machine", "mmemu.vma", "mmemu.flags", "mmemu.errors", "mmemu.reserve"}
    graph = import_graph(top_level_only=False)
    sub = {n: graph[n] & layer for n in layer}
    assert cycles(sub) == []
    # and nothing below Process reaches up to it or to Machine
    below = layer - {"mmemu.process", "mmemu.machine"}
    assert {n: sorted(graph[n] & {"mmemu.process", "mmemu.machine"}) for n in below
            if graph[n] & {"mmemu.process", "mmemu.machine"}} == {}


# ---------------------------------------------------------------- private methods

# Calls into private methods that other helpers' work removes (kept exact: the test fails
# when an entry disappears, so the list only shrinks). Empty: PhysMem restores itself,
# frames and mm-id counter included (PhysMem.restore_state).
KNOWN_PRIVATE_CALLS = set()


def private_definitions():
    """{private name: {files defining it}} for methods and functions of the package's
    Python modules and of the Cython core (def / cpdef / cdef class methods)."""
    defs = defaultdict(set)
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.name.startswith("_") and not node.name.startswith("__"):
                    defs[node.name].add(rel(path))
    for path in CORE.glob("*.pyx"):
        for m in re.finditer(r"^\s*(?:c?p?def)\s+(?:[\w\[\]*]+\s+)*?(_[a-z]\w*)\s*\(",
                             path.read_text(), re.M):
            defs[m.group(1)].add(f"_core/{path.name}")
    return defs


def private_uses(where, text):
    """[(file, name, line)] in one module's source: calls ``obj._name(...)`` on anything
    but self/cls/super(), and imports of a private name from another mmemu module."""
    uses = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr, obj = node.func.attr, node.func.value
            if not attr.startswith("_") or attr.startswith("__"):
                continue
            if isinstance(obj, ast.Name) and obj.id in ("self", "cls"):
                continue
            if isinstance(obj, ast.Call) and getattr(obj.func, "id", None) == "super":
                continue
            uses.append((where, attr, node.lineno))
        elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("mmemu")):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    uses.append((where, a.name, node.lineno))
    return uses


def violations(uses, defs):
    """The uses of a private name in a module that does not define it."""
    return [(where, name, line) for where, name, line in uses
            if defs.get(name) and where not in defs[name]]


def test_no_module_calls_another_modules_private_methods():
    """A leading underscore makes a name private to its module: a call of ``x._name()`` or
    an import of ``_name`` is allowed only in a module that defines ``_name`` itself.
    (Names defined nowhere in mmemu, like os._exit, are not mmemu's to police; a private
    name defined in two modules is allowed in both.)"""
    defs = private_definitions()
    uses = [u for path in SRC.rglob("*.py") for u in private_uses(rel(path), path.read_text())]
    bad = violations(uses, defs)
    known = {(where, name) for where, name, _ in bad if (where, name) in KNOWN_PRIVATE_CALLS}
    assert [b for b in bad if (b[0], b[1]) not in KNOWN_PRIVATE_CALLS] == []
    assert known == KNOWN_PRIVATE_CALLS, "a listed private call is gone: drop it from the list"


def test_the_private_call_check_finds_what_it_should():
    """The check on code that breaks the rule (as if it were mprotect.py): a call of
    Process's private method and an import of file.py's private function are found; its
    own private calls, super()'s and the standard library's are not."""
    src = ("import os\nfrom .file import _pages\n"
           "def f(proc):\n    proc._check_alive()\n    os._exit(0)\n"
           "class A:\n    def g(self):\n        self._check_alive()\n        super()._x()\n")
    found = violations(private_uses("mprotect.py", src), private_definitions())
    assert found == [("mprotect.py", "_pages", 2), ("mprotect.py", "_check_alive", 4)]
    assert violations(private_uses("process.py", src), private_definitions()) == [("process.py", "_pages", 2)]


# ---------------------------------------------------------------- constants

def core_constants():
    return {k: v for k, v in vars(C).items() if k.isupper() and isinstance(v, int)}


# mmemu.reference is the independent oracle: its ABI numbers are its own on purpose
INDEPENDENT = STANDALONE | {"reference.py"}


def module_constants():
    """[(file, name, value source)] of module-level constant assignments (UPPER_CASE names,
    also _UPPER), outside the independent modules."""
    out = []
    for path in SRC.rglob("*.py"):
        if rel(path) in INDEPENDENT:
            continue
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, (ast.Assign, ast.AnnAssign)):
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Tuple) and isinstance(node.value, ast.Tuple) \
                        and len(t.elts) == len(node.value.elts):
                    pairs = list(zip(t.elts, node.value.elts))
                else:
                    pairs = [(e, None) for e in getattr(t, "elts", [t])]
                for e, v in pairs:
                    if isinstance(e, ast.Name) and e.id.lstrip("_")[:1].isupper():
                        value = v if v is not None else node.value
                        out.append((rel(path), e.id, ast.unparse(value)))
    return out


def test_no_constant_is_defined_twice():
    """The core's constants (FAULT_*, PG_*, PM_*, MM_*, BIT_*, the geometry, the events)
    are imported from mmemu._core.constants, never assigned again; no name gets the same
    value in two modules."""
    core = core_constants()
    consts = module_constants()
    assert [c for c in consts if c[1] in core] == []
    by_name = defaultdict(set)
    for where, name, value in consts:
        by_name[(name, value)].add(where)
    assert {k: sorted(v) for k, v in by_name.items() if len(v) > 1} == {}


def test_the_core_constants_come_from_the_cython_enums():
    """types.pxd / pagemap.pxd hold the numbers; constants.pyx only names them (no literal
    but the event names and help texts), and the policy layer's VM_* bits are those."""
    text = (CORE / "constants.pyx").read_text()
    code = [ln.split("#")[0] for ln in text.splitlines() if "=" in ln and not ln.lstrip().startswith("(")]
    literal = [ln for ln in code if re.search(r"=\s*-?\d", ln)]
    assert literal == []
    from mmemu.flags import VmFlags
    for bit in ("READ", "WRITE", "EXEC", "SHARED", "MAYREAD", "MAYWRITE", "MAYEXEC", "MAYSHARE",
                "GROWSDOWN"):
        assert VmFlags[bit] == core_constants()["VM_" + bit]
    assert (C.PAGE_SIZE, C.PAGE_SHIFT, C.PMD_SIZE, C.PM_PRESENT, C.PM_GUARD_ENTRY) == (
        4096, 12, 2 << 20, 1 << 63, 0x440000000000009F)


VMSTAT_EVENTS = [
    "pgfault", "fault_zero_page", "fault_anon", "fault_file", "fault_file_alloc",
    "cow_fault", "cow_zero_fault", "wp_reuse", "wp_shared", "spurious_fault",
    "pages_copied", "pages_zeroed", "pgalloc", "pgfree", "pgtable_alloc", "pgtable_free",
    "fork_ptes_copied", "fork_pte_tables_copied", "fork_ptes_wrprotected",
    "ptes_zapped", "ptes_protected",
    "cow_pte_tables_shared", "cow_pte_tables_duplicated", "cow_pte_tables_reused",
    "cow_pte_entries_copied", "nr_tlb_local_flush_all", "mremap_ptes_moved", "mremap_pmds_moved",
    "pswpin", "pswpout", "nr_tlb_local_flush_one", "nr_tlb_remote_flush",
    "nr_tlb_remote_flush_received", "fork_ptes_accounted",
    "thp_fault_alloc", "thp_fault_fallback", "thp_zero_page_alloc", "thp_split_pmd",
    "thp_deferred_split_page",
    "cow_pmd_tables_shared", "cow_pmd_tables_duplicated", "cow_pmd_tables_reused",
    "cow_pud_tables_shared", "cow_pud_tables_duplicated", "cow_pud_tables_reused",
    "thp_collapse_alloc", "thp_collapse_alloc_failed", "thp_file_mapped", "thp_split_page_failed",
    "thp_split_page",
]


def test_every_event_slot_has_one_name_and_a_help_text():
    assert sorted(C.EVENT_SLOTS) == list(range(C.NR_EVENTS))
    names = [name for name, _ in C.EVENTS]
    assert len(names) == C.NR_EVENTS == len(set(names))
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", n) for n in names)
    assert all(len(text) > 10 for _, text in C.EVENTS)
    # every EV_* of types.pxd is in the table, below NR_EVENTS
    evs = dict(re.findall(r"^\s*(EV_\w+)\s*=\s*(\d+)", (CORE / "types.pxd").read_text(), re.M))
    assert sorted(int(v) for v in evs.values()) == list(range(C.NR_EVENTS))
    assert all(f"T.{e}," in (CORE / "constants.pyx").read_text() for e in evs)


def test_vmstat_keeps_its_names_and_order():
    m = mmemu.Machine("64M")
    keys = list(m.vmstat())
    assert keys == ["nr_free_pages", "nr_anon_pages", "nr_mapped", "nr_file_pages", "nr_shmem",
                    "nr_page_table_pages"] + VMSTAT_EVENTS + [
                        "nr_anon_transparent_hugepages", "nr_file_hugepages", "nr_file_pmdmapped",
                        "nr_shmem_hugepages", "nr_shmem_pmdmapped"]
    assert len(m.phys.events()) == C.NR_EVENTS
    from mmemu import stats
    assert list(stats.EVENT_NAMES) == VMSTAT_EVENTS and set(stats.EVENT_HELP) == set(VMSTAT_EVENTS)
    p = m.spawn()
    a = p.mmap(0, 4096, 3, 0x22)
    p.touch(a, 4096)
    assert m.vmstat()["pgfault"] == 1 and m.vmstat()["fault_anon"] == 1
    m.check()
