"""``mmemu cow-levels``: the whole-table COW study (docs/cow-upper-levels.md).

For each populated size and fork design (classic; PTE-, PMD- and PUD-level COW page tables
in deferred and eager accounting): a process writes every page of a private anonymous
mapping (no data: a fault each), forks once to warm up, then the measured forks (median
of 5, each child but the last exits); the last child
then writes 1%, 10% and 100% of its memory, spread evenly (the first pages of every 2 MiB
span: 6, 52 and 512 of 512). Reported: page-table pages the fork allocated, fork time, the
child's cumulative write time at each step with the page-table pages it allocated, and
the child's VmPTE after the fork.

    mmemu cow-levels --sizes 1G,16G,256G --doc docs/cow-upper-levels.md --plot docs/cow-upper-levels.png

regenerates the document and its figure. Timings are one run each on a shared machine.
"""
from __future__ import annotations

import gc
import json
import math
import platform
import resource
import statistics
import sys
import time

from ..compare import DESIGNS
from ..flags import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from ..machine import Machine, parse_size

STUDY_DESIGNS = ["classic", "deferred", "eager", "cow-pmd-deferred", "cow-pmd-eager",
                 "cow-pud-deferred", "cow-pud-eager"]
FRACTIONS = (0.01, 0.1, 1.0)
SPAN = 2 << 20
PG = 4096
CHUNK = 1 << 30
FORKS = 5              # the fork time is the median of this many forks (each child exits)


def _memory_for(size: int) -> int:
    """Emulated memory for a populated process, its child's copies and their tables (the
    machine is sparse: unused frames cost the host nothing)."""
    return max(4 << 30, 1 << (2 * size + (size >> 4) + (1 << 30) - 1).bit_length())


def _reset_host_peak() -> None:
    """Start a new host-memory peak for this row (clear_refs 5 resets VmHWM, Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _host_peak_mib() -> int:
    """The process's peak resident memory since _reset_host_peak (VmHWM), in MiB."""
    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) >> 10
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10


def measure(size: int, design: str, fractions=FRACTIONS) -> dict:
    """One row of the study (see the module docstring)."""
    title, accounting, cow = DESIGNS[design]
    gc.collect()        # the previous row's machine (processes and mms refer to each other)
    _reset_host_peak()
    m = Machine(_memory_for(size), cow_pte_accounting=accounting)
    p = m.spawn()
    a = p.mmap(0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    t0 = time.perf_counter()
    for off in range(0, size, CHUNK):
        p.touch(a + off, min(CHUNK, size - off), write=True)
    populate_s = time.perf_counter() - t0
    p.fork(cow_pgtable=cow).exit()
    times = []
    for _ in range(FORKS):
        ev0 = m.vmstat()
        t0 = time.perf_counter()
        c = p.fork(cow_pgtable=cow)
        times.append(time.perf_counter() - t0)
        ev1 = m.vmstat()
        if len(times) < FORKS:
            c.exit()
    row = {"design": design, "title": title, "size": size, "populate_s": populate_s,
           "fork_s": statistics.median(times), "forks": FORKS,
           "fork_pt_pages": int(ev1["pgtable_alloc"] - ev0["pgtable_alloc"]),
           "child_vmpte_kb": c.status()["VmPTE"], "writes": []}
    done, spent = 0, 0.0
    spans = range(a, a + size, SPAN)
    for f in fractions:
        k = min(512, math.ceil(f * 512))
        before = m.vmstat()["pgtable_alloc"]
        t0 = time.perf_counter()
        for s in spans:
            c.touch(s + done * PG, (k - done) * PG, write=True)
        spent += time.perf_counter() - t0
        row["writes"].append({"fraction": f, "pages_per_span": k, "cumulative_s": spent,
                              "pt_pages": int(m.vmstat()["pgtable_alloc"] - before)})
        done = k
    c.exit()
    p.exit()
    m.check()
    row["host_peak_mib"] = _host_peak_mib()
    return row


def run(sizes, designs, progress=None, all_writes_up_to=16 << 30, save=None) -> list:
    """The rows for every size and design; sizes above all_writes_up_to measure only the
    first write fraction (the others take minutes per design there). save(rows) is called
    after each row (a long run keeps what it measured)."""
    rows = []
    for size in sizes:
        for d in designs:
            if progress:
                progress(f"{_size(size)} {d}")
            rows.append(measure(size, d, FRACTIONS if size <= all_writes_up_to else FRACTIONS[:1]))
            if save:
                save(rows)
    return rows


def _ms(s: float) -> str:
    return f"{s * 1e3:.3f}" if s < 1 else f"{s * 1e3:.0f}"


def table(rows: list) -> str:
    """Markdown: one table per size."""
    out = []
    for size in sorted({r["size"] for r in rows}):
        out += [f"### {_size(size)} populated", "",
                "| design | PT pages by fork | child VmPTE (kB) | fork (ms) | write 1% (ms) | "
                "write 10% (ms) | write 100% (ms) | PT pages by the writes (1% / 10% / 100%) |",
                "|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in (r for r in rows if r["size"] == size):
            w = {x["fraction"]: x for x in r["writes"]}
            out.append(f"| {r['title']} | {r['fork_pt_pages']} | {r['child_vmpte_kb']} | "
                       f"{_ms(r['fork_s'])} | "
                       + " | ".join(_ms(w[f]["cumulative_s"]) if f in w else "-" for f in FRACTIONS)
                       + " | " + " / ".join(str(w[f]["pt_pages"]) if f in w else "-"
                                            for f in FRACTIONS) + " |")
        out.append("")
    return "\n".join(out)


def plot(rows: list, path: str) -> None:
    """Fork time and total time to write 1% / 100% after the fork, against size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    designs = list(dict.fromkeys(r["design"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    for i, d in enumerate(designs):
        pts = sorted((r["size"] / 2**30, r) for r in rows if r["design"] == d)
        x = [g for g, _ in pts]
        style = dict(marker="os^v<>D"[i % 7], color=f"C{i}", label=DESIGNS[d][0],
                     linestyle="--" if "eager" in d else "-")
        axes[0].plot(x, [r["fork_s"] * 1e3 for _, r in pts], **style)
        for ax, f in ((axes[1], FRACTIONS[0]), (axes[2], FRACTIONS[-1])):
            got = [(g, r["fork_s"] + w["cumulative_s"]) for g, r in pts
                   for w in r["writes"] if w["fraction"] == f]
            ax.plot([g for g, _ in got], [t * 1e3 for _, t in got], **style)
    for ax, title in zip(axes, ("fork", "fork + child writes 1%", "fork + child writes 100%")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("populated private anonymous memory (GiB)")
        ax.set_ylabel("ms")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


ANALYSIS = """\
## Where each level wins

Sharing one level higher divides the work a fork does by 512 again: a classic fork copies
every PTE table (and takes a reference on every page), a PTE-level COW fork touches one
PMD entry per PTE table, a PMD-level fork one PUD entry per PMD table (one per GiB), a
PUD-level fork one PGD entry per 512 GiB, so its cost does not grow with the populated
size at all. In deferred accounting that is the whole fork; in eager accounting every
holder counts every page it can reach, so the fork still visits every PTE (the upper
levels only save the tables, not the time), and its write after the fork is where the
deferred designs pay instead. The cost moves to the first write under each shared table:
after a PMD-level fork the first write in each GiB copies a PMD table (512 entries, each
PTE table's share count raised) before break_cow_pte copies the PTE table, and a PUD-level
fork adds one PUD-table copy per 512 GiB; these are a few extra table copies on top of the
PTE-level break that every COW design pays per 2 MiB, so the write cost after the fork is
within a small factor of PTE-level sharing and converges to it as the child writes more.
A child that writes 100% of its memory ends up with private tables at every level in all
designs, and then pays about what a classic fork paid up front, plus the breaks. The upper
levels win when the child touches little of a large address space before it exits or
execs (fork+exec, snapshots, fuzzing forkservers): PMD-level sharing does 1/512 of the
page-table work of PTE-level sharing (one PUD entry per GiB against one PMD entry per
2 MiB), so its fork costs a fork's fixed cost (about 10 us here: the syscall path, the
child's mm and VMAs) plus one entry per GiB, and the factor in time over PTE-level sharing
grows with the size (the table: {pte_over_pmd}). PUD-level sharing's
fork is the fixed cost alone at every size ({pud_vs_pmd}); it costs one more table copy on the first write under each
512 GiB, lost in the noise of the 131,072 PTE-table copies that follow. Eligibility is coarser
too: one shared, DONTCOPY, WIPEONFORK or heap VMA (or a swap entry) anywhere in a GiB
(or in 512 GiB) sends that whole range back to the level below.
"""


def _size(n: int) -> str:
    return f"{n >> 30} GiB" if n >= 1 << 30 else f"{n >> 20} MiB"


def _arg(n: int) -> str:
    """A size as --sizes takes it (16G, 8M)."""
    return f"{n >> 30}G" if n >= 1 << 30 and n % (1 << 30) == 0 else f"{n >> 20}M"


MECHANISM = """\
## The mechanism

- **Choosing the level.** `p.fork(cow_pgtable=...)`: `False` / `None` (the process's
  setting), `True` or `"pte"` (PTE tables, the COW page table series), `"pmd"`, `"pud"`;
  `Machine(cow_pgtable=...)` sets the default of spawned processes. mmemu's own values
  for the interfaces Linux never had: clone3 flags `CLONE_COW_PGTABLE_PMD` (bit 35) and
  `CLONE_COW_PGTABLE_PUD` (bit 36), at most one, never with `CLONE_VM`; `prctl` options
  `PR_SET_COW_PGTABLE` (0x434F5752, arg2 = 0 classic, 1 PTE, 2 PMD, 3 PUD) and
  `PR_GET_COW_PGTABLE` (0x434F5753); `PR_SET_COW_PTE, 1` is level 1 and `PR_GET_COW_PTE`
  says whether any level is set. The level is inherited at fork and kept by execve and
  snapshots. `mmemu fork-table --designs cow-pmd,cow-pud` (both accounting modes, or
  `cow-pmd-deferred` ...) and the benchmarks take the same designs.
- **Fork.** A PGD entry (PUD level) or PUD entry (PMD level) is shared when no 2 MiB span
  under it is blocked by the PTE-level rules (a shared, DONTCOPY, WIPEONFORK, I/O, PFN-map
  or heap VMA with a PTE table there, or a table holding swap entries); otherwise the range
  falls back a level, down to PTE sharing and then the classic copy, span by span. The
  child's entry links the parent's table read-only, the parent's entry loses RW, the
  table's `pt_share` rises once (0 on a never-shared upper table means 1). Nothing below
  is touched: the effective RW of an entry is the AND along the walk.
- **Breaks, top down.** Everything that changes a table under a read-only upper entry goes
  through the two places that already broke PTE tables: the fault path
  (`break_cow_pgtable`, before `handle_mm_fault` allocates anything, and in the MMU's fast
  path when the path is read-only) and the syscalls' `cow_range` walk (its new `pgd_entry`
  and `pud_entry`), which munmap, exit, mprotect, madvise, mremap, truncate, guard
  regions and swap-out already call. A table with share count 1 is reused (its entries
  write-protected, so the tables below are COW-shared in turn); otherwise it is copied:
  each entry of the copy links the same lower table read-only and that table's share count
  rises. A range that covers a shared table whole (munmap, exit) drops the link instead.
  Frames for every copy are counted and reserved first, so an allocation failure leaves
  the machine as it was (the OOM sweep runs at both levels in both modes).
- **Accounting.** Per table, as for PTE tables: eager, every holder counts every table it
  reaches (VmPTE = mm_pgtables_bytes: PUD, PMD and PTE tables) and every page in them (the
  fork counts the subtree for the child and write-protects its PTEs); deferred, each table
  (and a PTE table's pages) is counted by its owner alone, and an owner that drops a
  shared table hands it, and everything below it that it owns, to another holder. vmstat:
  `cow_pmd_tables_shared / _duplicated / _reused`, the same for PUD, `tlb_flush` once per
  upper-level break or drop.
- **Checked.** `m.check()` recounts `pt_share` at every level (each entry counted once,
  however many mms reach it through a shared table), requires a shared table's path to be
  read-only and a private table to be its mm's own, and the per-mode accounting; the
  debug build aborts on any write into a table shared more than once. The lockstep fuzzer
  (`tests/cow_pgtable/test_upper_designs_agree.py`) runs seven designs (with a 1 GiB region
  moved whole by aligned mremaps), the reference-model
  fuzzer runs at both levels, and with a level's break switched off the fuzzer fails.
- **mremap.** The shared tables of both ranges are broken first, top down (break before
  change), then an aligned move relinks whole tables as Linux does (`move_normal_pud`: the
  PMD table under a PUD entry for a 1 GiB-aligned move; `move_normal_pmd`: each PTE table
  for a 2 MiB-aligned one): no PTE moves one by one
  (`tests/cow_pgtable/test_cow_pgtable_mremap.py`, exact counters per level). A table is
  never relinked at another address while it is shared: every holder reaches a shared
  table at the same address (the deferred accounting finds the other holders there), so
  an aligned move of shared memory pays the breaks (a 1 GiB move after a PMD-level fork:
  the PMD table and its 512 PTE tables copied) before the relink.
- **Left out.** A huge (leaf) PMD is never under a shared table: a PMD or PUD table
  holding one falls back a level at fork (its deposited table belongs to one mm).

"""


SIZES = """\
## Sizes

The emulated machine is sparse (a MAP_NORESERVE host mapping, per-frame metadata touched
only where frames are used) and the experiment writes no data into the pages (a fault per
page: the frames stay all-zero and unbacked on the host), so the host holds only the page
tables and the metadata of the frames in use: {peak} GiB at the peak of this run (VmHWM,
reset for each row; largest size {big}). {above}{why}
"""


def _designs_left_out(rows: list) -> str:
    """The designs the largest size was not measured in, and what they would have cost
    there, scaled from the next size down."""
    big = max(r["size"] for r in rows)
    there = {r["design"] for r in rows if r["size"] == big}
    out = [d for d in dict.fromkeys(r["design"] for r in rows) if d not in there]
    smaller = [r for r in rows if r["size"] < big and r["design"] in out]
    if not out or not smaller:
        return ""
    top = max(r["size"] for r in smaller)
    forks = [r["fork_s"] for r in smaller if r["size"] == top]
    pop = [r["populate_s"] for r in rows if r["size"] == big and "populate_s" in r]
    return (f"At {_size(big)} the {', '.join(DESIGNS[d][0] for d in out)} designs were not "
            f"measured: every row there repopulates {big >> 12 >> 20} Mi pages "
            f"({min(pop):.0f}-{max(pop):.0f} s of the row on the shared machine) before its six "
            f"forks, and these designs' forks visit every PTE ({min(forks) * 1e3:.0f}-"
            f"{max(forks) * 1e3:.0f} ms at {_size(top)}, {big // top} times that at "
            f"{_size(big)}); the round's time did not allow them. "
            if pop else "")


def _why_first_write_only(rows: list, limit: int) -> str:
    """Why the sizes above limit stop at the 1% write, in this run's own numbers: the rows
    of the largest size with every write, scaled to the largest size."""
    big = max(r["size"] for r in rows)
    full = [r for r in rows if r["size"] <= limit and len(r["writes"]) == len(FRACTIONS)]
    if big <= limit or not full:
        return ""
    top = max(r["size"] for r in full)
    full = [r for r in full if r["size"] == top]
    k = big / top
    t = [r["writes"][-1]["cumulative_s"] for r in full]
    host = max(r.get("host_peak_mib", 0) for r in full) / 1024
    small = max(r.get("host_peak_mib", 0) for r in rows if r["size"] == big) / 1024
    return (f"At {_size(top)} writing 100% took the child {min(t):.1f}-{max(t):.1f} s per "
            f"design (its copies: {top >> 12 >> 20} Mi COW faults) and the rows peaked at "
            f"{host:.1f} GiB of host memory; at {_size(big)} that is {k:.0f} times as much: "
            f"{min(t) * k:.0f}-{max(t) * k:.0f} s of writes per design and about "
            f"{host * k:.0f} GiB of host memory, against a 24 GiB host shared with other jobs "
            f"(the {_size(big)} rows with 1% written peaked at {small:.1f} GiB). "
            f"`mmemu cow-levels --sizes {_arg(big)} --all-writes-up-to {_arg(big)}` measures "
            f"them on a larger host.")


def _fork_ratios(rows: list) -> dict:
    """The analysis's numbers, read off the rows: PTE-level over PMD-level deferred fork
    time per size, and PUD-level's fork against PMD-level's at the largest size."""
    fork = {(r["design"], r["size"]): r["fork_s"] for r in rows}
    sizes = sorted({r["size"] for r in rows if r["size"] > 1 << 30})
    pairs = [(n, fork[("deferred", n)] / fork[("cow-pmd-deferred", n)]) for n in sizes
             if ("deferred", n) in fork and ("cow-pmd-deferred", n) in fork]
    big = max(r["size"] for r in rows)
    pmd, pud = fork.get(("cow-pmd-deferred", big)), fork.get(("cow-pud-deferred", big))
    return {
        "pte_over_pmd": ", ".join(f"{k:.0f}x at {_size(n)}" for n, k in pairs) or "not measured",
        "pud_vs_pmd": (f"at {_size(big)} {pud * 1e3:.3f} ms against PMD-level's {pmd * 1e3:.3f} ms, "
                       f"whose {big >> 30} entries have begun to count" if pmd and pud
                       else "PMD-level's was not measured beside it"),
    }


def document(rows: list, plot_name: str = None, from_rows: bool = False) -> str:
    """The study's markdown; the sizes measured with every write are read off the rows.
    from_rows: the rows were saved by --json runs and the document drawn by --rows."""
    drawn = (", drawn with `--rows` from the rows of runs that saved them with `--json`"
             if from_rows else "")
    limit = max((r["size"] for r in rows if len(r["writes"]) == len(FRACTIONS)),
                default=min(r["size"] for r in rows))
    sizes = ", ".join(map(_size, sorted({r["size"] for r in rows})))
    big = max(r["size"] for r in rows)
    upto = "" if limit == 16 << 30 or limit == big < 16 << 30 \
        else f" --all-writes-up-to {_arg(limit)}"
    above = f' Above {_size(limit)} only the 1% write is measured (see "Sizes" below).' \
        if big > limit else ""
    head = f"""# Copy-on-write of whole page-table levels (PMD and PUD tables)

mmemu's own design (the COW page table series' TODO "COW to the entire page table"):
`fork(cow_pgtable="pmd")` shares PMD tables, `"pud"` PUD tables, `True` PTE tables; see
`cython_core/mmemu/_core/cow_pgtable.pyx` for the mechanism (share counts, level-by-level
breaks, accounting) and the README of the COW page tables for the accounting modes.

Measured by `mmemu cow-levels --sizes {",".join(map(_arg, sorted({r["size"] for r in rows})))}{upto} \
--doc docs/cow-upper-levels.md --plot docs/cow-upper-levels.png` (this file is its output{drawn})
on {platform.machine()}, Python {platform.python_version()}, one run per cell on a
2-core machine: sizes {sizes}. A process writes every page of a private anonymous mapping
(a fault per page, no data), forks once to warm up, then forks ({{forks}}); a child then
writes 1%, 10% and 100% of its memory spread over every 2 MiB span (cumulative times).
"PT pages" are page-table pages allocated (vmstat pgtable_alloc), by the fork and by the
child's writes.{above}

"""
    forks = max(r.get("forks", 1) for r in rows)
    head = head.replace("{forks}", f"the median of {forks}" if forks > 1 else "once, timed")
    fig = f"![fork and write cost against size]({plot_name})\n\n" if plot_name else ""
    peak = max(r.get("host_peak_mib", 0) for r in rows)
    sizes_note = SIZES.format(peak=f"{peak / 1024:.1f}", big=_size(big),
                              above=(f'Above {_size(limit)} only the 1% write is measured ("-" '
                                     f"in the table). ") if big > limit else "",
                              why=_designs_left_out(rows) + _why_first_write_only(rows, limit))
    return (head + MECHANISM + "## Results\n\n" + table(rows) + "\n" + fig
            + ANALYSIS.format(**_fork_ratios(rows)) + "\n" + sizes_note)


def _save(rows: list, path: str) -> None:
    with open(path, "w") as f:
        json.dump(rows, f, indent=1)


ROW_KEYS = {"design", "title", "size", "fork_s", "fork_pt_pages", "child_vmpte_kb", "writes"}


def _saved_rows(path: str):
    """The rows of a --json file, or None if it does not hold study rows."""
    try:
        with open(path) as f:
            rows = json.load(f)
    except (OSError, ValueError):
        return None
    ok = isinstance(rows, list) and rows and all(
        isinstance(r, dict) and ROW_KEYS <= r.keys() and r["design"] in DESIGNS for r in rows)
    return rows if ok else None


def add_parser(sub) -> None:
    what = "the whole-table COW study: fork and write cost per page-table level shared"
    c = sub.add_parser("cow-levels", help=what, description=what + " (docs/cow-upper-levels.md)")
    c.add_argument("--sizes", default="1G,16G", help="populated sizes (default 1G,16G)")
    c.add_argument("--designs", default=",".join(STUDY_DESIGNS),
                   help=f"comma-separated designs (default {','.join(STUDY_DESIGNS)})")
    c.add_argument("--all-writes-up-to", default="16G", metavar="SIZE",
                   help="larger sizes measure only the 1%% write (default 16G)")
    c.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    c.add_argument("--rows", metavar="FILE.json",
                   help="measure nothing: write the document and figure from rows saved by --json")
    c.add_argument("--doc", metavar="FILE.md", help="write the study document")
    c.add_argument("--plot", metavar="FILE.png", help="draw the figure (needs matplotlib)")
    c.add_argument("--quiet", action="store_true", help="no progress output")
    c.set_defaults(func=cmd_cow_levels)


def cmd_cow_levels(args) -> int:
    designs = [d.strip() for d in args.designs.split(",") if d.strip()]
    bad = [d for d in designs if d not in DESIGNS]
    if bad or not designs:
        print(f"mmemu: unknown design(s) {bad}; choose from {', '.join(DESIGNS)}", file=sys.stderr)
        return 2
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError as e:
        print(f"mmemu: --sizes: {e}", file=sys.stderr)
        return 2
    if not sizes or any(s <= 0 or s % SPAN for s in sizes):
        print("mmemu: --sizes must be positive multiples of 2 MiB", file=sys.stderr)
        return 2
    try:
        limit = parse_size(args.all_writes_up_to)
    except ValueError as e:
        print(f"mmemu: --all-writes-up-to: {e}", file=sys.stderr)
        return 2
    from ..cliutil import input_path, output_path, require
    for opt in ("json", "doc", "plot"):
        output_path(getattr(args, opt), "--" + opt)
    input_path(args.rows, "--rows")
    if args.plot:
        require("matplotlib", "--plot", "plot")
    show = None if args.quiet else (lambda label: print(f"measuring {label}", file=sys.stderr))
    if args.rows:
        rows = _saved_rows(args.rows)
        if rows is None:
            print(f"mmemu: --rows {args.rows}: not a list of rows written by --json", file=sys.stderr)
            return 2
    else:
        rows = run(sizes, designs, show, limit, save=args.json and (lambda r: _save(r, args.json)))
    if args.json:
        _save(rows, args.json)
    if args.plot:
        plot(rows, args.plot)
    if args.doc:
        import os
        name = os.path.relpath(args.plot, os.path.dirname(args.doc) or ".") if args.plot else None
        with open(args.doc, "w") as f:
            f.write(document(rows, name, bool(args.rows)))
    print(table(rows))
    return 0
