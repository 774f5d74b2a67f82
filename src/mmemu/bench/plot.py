"""The report's figure (needs matplotlib: the `plot` extra): fork time against populated
size on log-log axes for the kernel, classic fork, COW deferred and COW eager; and the
page-table memory the fork adds against size."""
from __future__ import annotations

SERIES = [("kernel", "kernel.fork.{s}", "Linux (this machine)", "k", "s"),
          ("classic", "fork.classic.{s}", "mmemu classic", "C0", "o"),
          ("deferred", "fork.deferred.{s}", "mmemu COW PTE deferred", "C1", "^"),
          ("eager", "fork.eager.{s}", "mmemu COW PTE eager", "C2", "v")]


def plot(results: dict, path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("mmemu bench --plot needs matplotlib: pip install 'mmemu[plot]'") from None
    from .runner import size_name
    sizes = sorted({r["size"] for r in results.values() if r.get("op") == "fork"})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for _, key, label, color, marker in SERIES:
        pts = [(s, results.get(key.format(s=size_name(s)))) for s in sizes]
        pts = [(s, r) for s, r in pts if r and "skipped" not in r]
        if not pts:
            continue
        gib = [s / 2**30 for s, _ in pts]
        ax1.plot(gib, [r["median_s"] * 1e3 for _, r in pts], marker=marker, color=color, label=label)
        if key.startswith("kernel"):
            kb = [r.get("child_VmPTE_kb") for _, r in pts]
            ax2.plot([g for g, k in zip(gib, kb) if k], [k for k in kb if k], marker=marker,
                     color=color, label="Linux: child VmPTE")
        else:
            ax2.plot(gib, [r.get("child_pgtables_kb", 0) for _, r in pts], marker=marker,
                     color=color, label=label)
    for ax, ylabel, title in ((ax1, "fork time (ms, median)", "fork latency"),
                              (ax2, "page tables added by fork (kB)", "PageTables")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("populated private anonymous memory (GiB)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
