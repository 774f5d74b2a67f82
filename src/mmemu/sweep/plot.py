"""The sweep's figures from its table, by one call: fork time against size per design
(emulated and predicted, with the live kernel's measured points), PageTables against size
per design, and predicted time per workload as bars."""
from __future__ import annotations

from pathlib import Path

from ..reproduce.plot import pyplot, size_axis


def _ok(table):
    return table[table["error"].isna()]


def fork_time(table, path, kernel_points=None) -> None:
    """Fork time (ms) against size per design: emulated (solid), predicted (dashed); the
    kernel's measured points {size: seconds} as stars."""
    plt = pyplot()
    t = _ok(table)
    t = t[t["workload"] == "fork"] if (t["workload"] == "fork").any() else t
    f, ax = plt.subplots(figsize=(7, 4))
    for design, g in t.groupby("design"):
        g = g.groupby("size").median(numeric_only=True).reset_index()
        line, = ax.plot(g["size"], g["emulated_fork_s"] * 1e3, marker="o", label=f"{design} (mmemu)")
        ax.plot(g["size"], g["predicted_fork_s"] * 1e3, marker="x", linestyle="--",
                color=line.get_color(), label=f"{design} (predicted kernel)")
    if kernel_points:
        xs = sorted(kernel_points)
        ax.plot(xs, [kernel_points[x] * 1e3 for x in xs], "k*", markersize=11, label="kernel (measured)")
    size_axis(ax)
    ax.set_yscale("log")
    ax.set_xlabel("mapping size")
    ax.set_ylabel("fork (ms)")
    ax.legend(fontsize=7)
    f.tight_layout()
    f.savefig(path, dpi=110)
    plt.close(f)


def pagetables(table, path) -> None:
    """/proc/meminfo PageTables after the fork against size, per design."""
    plt = pyplot()
    t = _ok(table)
    f, ax = plt.subplots(figsize=(7, 4))
    for design, g in t.groupby("design"):
        g = g.groupby("size").median(numeric_only=True).reset_index()
        ax.plot(g["size"], g["PageTables_kB"], marker="o", label=design)
    size_axis(ax)
    ax.set_yscale("log")
    ax.set_xlabel("mapping size")
    ax.set_ylabel("PageTables after fork (kB)")
    ax.legend(fontsize=8)
    f.tight_layout()
    f.savefig(path, dpi=110)
    plt.close(f)


def workloads(table, path) -> None:
    """Predicted kernel time per workload (largest size of the sweep), one bar per design."""
    plt = pyplot()
    t = _ok(table)
    t = t[t["size"] == t["size"].max()]
    pivot = t.pivot_table(index="workload", columns="design", values="predicted_s", aggfunc="median")
    f, ax = plt.subplots(figsize=(7, 4))
    w = 0.8 / max(1, len(pivot.columns))
    for i, design in enumerate(pivot.columns):
        ax.bar([j + i * w for j in range(len(pivot.index))], pivot[design] * 1e3, w, label=design)
    ax.set_xticks([j + 0.4 - w / 2 for j in range(len(pivot.index))], list(pivot.index))
    ax.set_yscale("log")
    ax.set_ylabel("predicted kernel time (ms)")
    ax.set_title(f"per workload at {int(t['size'].max()) >> 20} MiB", fontsize=10)
    ax.legend(fontsize=8)
    f.tight_layout()
    f.savefig(path, dpi=110)
    plt.close(f)


def kernel_forks(sizes, repeats: int = 5) -> dict:
    """{size: seconds}: the live kernel's fork of each size (populated, MADV_NOHUGEPAGE),
    the helper's CPU time, minimum of `repeats`; sizes the host cannot hold are left out."""
    from ..bench import kernel
    return {int(s): min(kernel.measure_op("fork", int(s), repeats)["cpu_times"])
            for s in sorted(set(sizes)) if kernel.can_measure(int(s), False)}


def plot_all(table, directory, kernel_points=None) -> list:
    """All three figures into `directory`; returns their paths."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = [d / "sweep-fork-time.png", d / "sweep-pagetables.png", d / "sweep-workloads.png"]
    fork_time(table, paths[0], kernel_points)
    pagetables(table, paths[1])
    workloads(table, paths[2])
    return paths
