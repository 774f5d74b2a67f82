"""The report's figure (needs matplotlib: the `plot` extra): fork time against populated
size on log-log axes for the kernel, classic fork, COW deferred and COW eager; and the
page-table memory the fork adds against size.

Readable as printed: the size axis is labelled in sizes (64M, 1G, 16G), every series has
its own colour, marker and line style (deferred and eager overlap in time), and a run of
one size (``bench --quick``) is drawn as grouped bars, not as one-point lines.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

from ..args import format_size

SERIES = [("kernel", "kernel.fork.{s}", "Linux (this machine)", "k", "s", "-"),
          ("classic", "fork.classic.{s}", "mmemu classic", "C0", "o", "-"),
          ("deferred", "fork.deferred.{s}", "mmemu COW PTE deferred", "C1", "^", "--"),
          ("eager", "fork.eager.{s}", "mmemu COW PTE eager", "C2", "v", ":")]


def series(results: Dict[str, Any]) -> List[Tuple[str, str, str, str, list, list, list]]:
    """(label, colour, marker, line style, sizes, fork ms, page-table kB) of each series
    the results hold (the kernel's page tables: its child's VmPTE, None where unread)."""
    from .runner import size_name
    sizes = sorted({r["size"] for r in results.values() if r.get("op") == "fork"})
    out = []
    for _, key, label, color, marker, style in SERIES:
        pts = [(s, results.get(key.format(s=size_name(s)))) for s in sizes]
        pts = [(s, r) for s, r in pts if r and "skipped" not in r]
        if not pts:
            continue
        kb = [r.get("child_VmPTE_kb") if key.startswith("kernel") else r.get("child_pgtables_kb", 0)
              for _, r in pts]
        out.append((label, color, marker, style, [s for s, _ in pts],
                    [r["median_s"] * 1e3 for _, r in pts], kb))
    return out


def size_axis(ax: Any, sizes: List[int]) -> None:
    """A log2 size axis ticked at the measured sizes, labelled 64M, 1G, 16G."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes)
    ax.set_xticklabels([format_size(s) for s in sizes])
    ax.minorticks_off()


def plot(results: Dict[str, Any], path: str) -> None:
    """Draw fork time and PageTables added against size into path (PNG, SVG, PDF)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    data = series(results)
    sizes = sorted({s for d in data for s in d[4]})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    if len(sizes) == 1:         # one size: grouped bars, one per series
        for i, (label, color, _, _, _, ms, kb) in enumerate(data):
            ax1.bar(i, ms[0], color=color, label=label)
            if kb[0] is not None:
                ax2.bar(i, kb[0], color=color, label=label)
        for ax in (ax1, ax2):
            ax.set_xticks(range(len(data)))
            ax.set_xticklabels([d[0].replace("mmemu ", "") for d in data], fontsize=8)
            ax.set_xlabel(f"populated private anonymous memory: {format_size(sizes[0])}")
    else:
        for label, color, marker, style, ss, ms, kb in data:
            ax1.plot(ss, ms, marker=marker, linestyle=style, color=color, label=label,
                     markerfacecolor="none", markersize=8)
            have = [(s, k) for s, k in zip(ss, kb) if k is not None]
            ax2.plot([s for s, _ in have], [k for _, k in have], marker=marker, linestyle=style,
                     color=color, markerfacecolor="none", markersize=8,
                     label="Linux: child VmPTE" if label.startswith("Linux") else label)
        for ax in (ax1, ax2):
            size_axis(ax, sizes)
            ax.set_xlabel("populated private anonymous memory")
    for ax, ylabel, title in ((ax1, "fork time (ms, median)", "fork latency"),
                              (ax2, "page tables added by fork (kB)", "PageTables")):
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
