"""The core's seams hold, read from the Cython sources:

- every store into a page table goes through the entry writers of pgtable.pxd (set_pte_at,
  ptep_get_and_clear, pmd_populate, ...): no `t[i] = e`, `pmdp[0] |= x`, `table_ptr(..)[i] =`
  or memset/memcpy into a table anywhere else, but for the whole-table clear of a table
  being freed (pgtable_free);
- the walker of pagewalk.pxd is the one descent from the PGD: the PGD is indexed only there
  and in the single-address lookups listed below, and the old hand-written range descent
  (pmd_walk_next) is gone.

The scanner is tested on snippets first, so that a store it cannot see fails here too.
"""
import re
from pathlib import Path

import pytest

ROOT = next(d for d in Path(__file__).resolve().parents if (d / "cython_core").is_dir())
CORE = ROOT / "cython_core" / "mmemu" / "_core"
WRITERS = "pgtable.pxd"
# (file, function) allowed to fill a whole table frame: the clear of a table being freed
WHOLE_TABLE_WRITES = {("pagetable.pyx", "pgtable_free")}
# (file, function) that index the PGD besides the walker: lookups of one address
PGD_LOOKUPS = {
    ("pagetable.pyx", "pmd_offset"),          # pgd_offset + pud_offset + pmd_offset
    ("pagetable.pyx", "pmd_offset_alloc"),    # pud_alloc + pmd_alloc
    ("pagetable.pyx", "tables_needed"),       # what pte_offset_alloc(addr) would allocate
    ("pagetable.pyx", "walk"),                # MMCore.walk(addr): the MMU's view of one address
    ("pagetable.pyx", "validate_tables"),     # names the bad entry's indexes in the error
    ("mremap.pyx", "alloc_new_pud"),          # mm/mremap.c alloc_new_pud (pgd_offset + pud_alloc)
}

_TRIPLE = re.compile(r'("""|\'\'\')[\s\S]*?\1')
_STRING = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'')
_COMMENT = re.compile(r"#.*")
_DEF = re.compile(r"^\s*(?:cdef|cpdef|def)\b[^=\n]*?\b(\w+)\s*\(")
_SUBSCRIPT = r"\[(?:[^\[\]]|\[[^\]]*\])*\]"
_ASSIGN = r"\s*(?:[-+|&^]|<<|>>)?=(?!=)"
_STORE = re.compile(r"\b(\w+)\s*" + _SUBSCRIPT + _ASSIGN)
_DIRECT_STORE = re.compile(r"\b(?:table_ptr|_next_table)\s*\([^()]*\)\s*" + _SUBSCRIPT + _ASSIGN)
_CAST_STORE = re.compile(r"\(\s*<\s*pte_t\s*\*\s*>[^()]*\)\s*" + _SUBSCRIPT + _ASSIGN)
_ENTRY_PTR = re.compile(r"\bpte_t\s*\*\s*(\w+)")                 # pte_t* name (not pte_t**)
_TABLE_ALIAS = re.compile(r"\b(\w+)\s*=\s*(?:<[^>]*>\s*)?&?\s*(?:table_ptr|_next_table)\s*\(")
_BULK = re.compile(r"\b(?:memset|memcpy|memmove|copy_page_nt)\s*\(([^,]*),")
_TABLE_EXPR = re.compile(r"\b(?:table_ptr|_next_table)\s*\(|<\s*pte_t\s*\*\s*>")


def _code(text: str) -> list[str]:
    """The source's lines with strings and comments blanked (line numbers kept)."""
    text = _TRIPLE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return [_COMMENT.sub("", _STRING.sub("''", line)) for line in text.split("\n")]


def _functions(lines: list[str]):
    """(function name, [(line number, code)]) chunks: each def/cdef up to the next one."""
    name, chunk = "<module>", []
    for no, line in enumerate(lines, 1):
        m = _DEF.match(line)
        if m:
            yield name, chunk
            name, chunk = m.group(1), []
        chunk.append((no, line))
    yield name, chunk


def table_stores(filename: str, text: str) -> list[str]:
    """Every store into a page-table entry or frame outside the allowed places, as
    'file:line (function): code'."""
    if filename == WRITERS:
        return []
    found = []
    for func, chunk in _functions(_code(text)):
        body = "\n".join(code for _, code in chunk)
        entries = set(_ENTRY_PTR.findall(body)) | set(_TABLE_ALIAS.findall(body))
        for no, code in chunk:
            bad = (any(m.group(1) in entries for m in _STORE.finditer(code))
                   or _DIRECT_STORE.search(code) or _CAST_STORE.search(code))
            for m in _BULK.finditer(code):
                dest = m.group(1)
                if ((_TABLE_EXPR.search(dest) or set(re.findall(r"\w+", dest)) & entries)
                        and (filename, func) not in WHOLE_TABLE_WRITES):
                    bad = True
            if bad:
                found.append(f"{filename}:{no} ({func}): {code.strip()}")
    return found


def pgd_descents(filename: str, text: str) -> list[str]:
    """Places that index the PGD outside the walker and the listed single-address lookups."""
    if filename == "pagewalk.pxd" or filename == "types.pxd":
        return []
    return [f"{filename}:{no} ({func}): {code.strip()}"
            for func, chunk in _functions(_code(text)) for no, code in chunk
            if re.search(r"\bpgd_index\s*\(|\bpmd_walk_next\b", code)
            and (filename, func) not in PGD_LOOKUPS]


def _sources():
    files = sorted(CORE.glob("*.pyx")) + sorted(CORE.glob("*.pxd"))
    assert len(files) >= 15 and (CORE / WRITERS).exists() and (CORE / "pagewalk.pxd").exists()
    return [(f.name, f.read_text()) for f in files]


BARE_STORES = [
    "cdef void f(pte_t* t, int i) noexcept nogil:\n    t[i] = 0\n",
    "cdef void f(physmem_t* pm,\n            pte_t* pmdp) noexcept nogil:\n    pmdp[0] |= 2\n",
    "cdef void f(physmem_t* pm, pfn_t x) noexcept nogil:\n"
    "    cdef pte_t* t = table_ptr(pm, x)\n    t[pte_index(a)] = e\n",
    "cdef void f(physmem_t* pm, pfn_t x) noexcept nogil:\n    table_ptr(pm, x)[7] = 0\n",
    "cdef void f(physmem_t* pm, pfn_t x) noexcept nogil:\n    memset(table_ptr(pm, x), 0, 4096)\n",
    "cdef void f(pte_t* dst, pte_t* src) noexcept nogil:\n    memcpy(&dst[0], src, 4096)\n",
    "cdef void f(physmem_t* pm, pfn_t x) noexcept nogil:\n"
    "    cdef uint64_t* w = <uint64_t*>table_ptr(pm, x)\n    w[0] = 1\n",
    "cdef void f(void* p) noexcept nogil:\n    (<pte_t*>p)[0] = 1\n",
    "cdef void f(pte_t* src, pte_t* dst, int k) noexcept nogil:\n    dst[idx[k]] = src[k]\n",
]

NOT_STORES = [
    "cdef void f(physmem_t* pm, pte_t* t, int i) noexcept nogil:\n"
    "    set_pte_at(pm, &t[i], 0)\n    if t[2] != 0 and t[1] >= 0 and t[0] == 1:\n        pass\n",
    "cdef pte_t* f(pte_t** pmdp, pte_t* pmd) noexcept nogil:\n    pmdp[0] = pmd\n",
    "def f(uint64_t[::1] o, pte_t* t):\n    o[i] = t[i]  # t[i] = 0 in a comment\n"
    "    s = \"t[i] = 0\"\n    '''\n    t[i] = 0 in a docstring\n    '''\n",
    "cdef void g(pte_t* t) noexcept nogil:\n    pass\n"
    "cdef void f(uint64_t* t) noexcept nogil:\n    memset(frame_ptr(pm, p), 0, 4096)\n",
]


@pytest.mark.one_design
@pytest.mark.parametrize("snippet", BARE_STORES)
def test_the_scanner_finds_a_bare_store(snippet):
    assert table_stores("x.pyx", snippet), snippet
    assert not table_stores(WRITERS, snippet)


@pytest.mark.one_design
@pytest.mark.parametrize("snippet", NOT_STORES)
def test_the_scanner_passes_reads_helpers_and_other_memory(snippet):
    assert table_stores("x.pyx", snippet) == []


@pytest.mark.one_design
def test_every_table_store_goes_through_the_entry_writers():
    found = [hit for name, text in _sources() for hit in table_stores(name, text)]
    assert not found, ("stores into a page table outside pgtable.pxd's entry writers:\n  "
                       + "\n  ".join(found))


@pytest.mark.one_design
def test_the_scanner_sees_the_writers_themselves():
    """pgtable.pxd is exempt because it holds the stores: the scanner would flag them."""
    text = (CORE / WRITERS).read_text()
    hits = table_stores("not_" + WRITERS, text)
    assert len(hits) >= 10 and any("ptep[0] = e" in h for h in hits)


@pytest.mark.one_design
def test_the_walker_is_the_only_descent_from_the_pgd():
    found = [hit for name, text in _sources() for hit in pgd_descents(name, text)]
    assert not found, ("PGD indexed outside pagewalk.pxd and the single-address lookups:\n  "
                       + "\n  ".join(found))
    assert pgd_descents("x.pyx", "cdef void f() noexcept nogil:\n    g = pgdt[pgd_index(a)]\n")
    assert pgd_descents("x.pyx", "def f():\n    p = pmd_walk_next(pm, mm, &a, e)\n")


def _indexes(a, levels):
    return "/".join(str((a >> s) & 511) for s in (39, 30, 21, 12)[:levels])


@pytest.mark.one_design
def test_the_walker_hands_leaf_pmds_and_every_level_to_its_callbacks():
    """validate_tables is a walk with a callback at every level (pte_entry included): a
    leaf (PSE) PMD reaches pmd_entry and is not descended into; a PTE mapping a page-table
    frame reaches pte_entry; each is named by its indexes."""
    import mmemu
    from mmemu import MAP_ANONYMOUS, MAP_PRIVATE

    m = mmemu.Machine("64M", cow_pgtable=False)
    p = m.spawn()
    a = p.mmap(0, 8 * 4096, 3, MAP_PRIVATE | MAP_ANONYMOUS) + 3 * 4096
    p.write(a, b"x")
    core = p.mm.core
    pgd_e, pud_e, pmd_e, pte_e = core.walk(a)
    core.validate_tables()
    core._debug_set_pmd(a, pmd_e | 1 << 7)
    with pytest.raises(ValueError, match=f"bad PMD entry {_indexes(a, 3)}: {pmd_e | 1 << 7:#x}$"):
        core.validate_tables()
    core._debug_set_pmd(a, pmd_e)
    bad = (pte_e & ~(((1 << 40) - 1) << 12)) | (pud_e & (((1 << 40) - 1) << 12))
    core._debug_set_pte(a, bad)                      # maps the PMD table's frame
    with pytest.raises(ValueError, match=f"bad PTE {_indexes(a, 4)}: {bad:#x}$"):
        core.validate_tables()
    core._debug_set_pte(a, pte_e)
    core.validate_tables()
    m.check()
