"""Plots of reproduced figures (needs matplotlib: the `plot` extra); sizes on a log axis
ticked as 64M, 1G, 16G."""
from __future__ import annotations


def size_label(b: float) -> str:
    """64M, 1G, 16G: a byte count as the size strings mmemu accepts."""
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if b >= 1 << shift:
            v = b / (1 << shift)
            return f"{v:.0f}{unit}" if v == int(v) else f"{v:.3g}{unit}"
    return f"{b:.0f}"


def size_axis(ax) -> None:
    """A log2 x axis of sizes, ticked with size strings."""
    from matplotlib.ticker import FuncFormatter, LogLocator
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(LogLocator(base=2))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: size_label(v)))


def pyplot():
    """matplotlib.pyplot on the Agg backend, or ValueError saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ValueError("plots need matplotlib: pip install 'mmemu[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def draw(fig, path) -> None:
    """One reproduced Figure as a PNG: lines against size, or grouped bars by category."""
    plt = pyplot()
    f, ax = plt.subplots(figsize=(7, 4))
    numeric = all(isinstance(x, (int, float)) for s in fig.series.values() for x in s["x"])
    if numeric:
        for label, s in fig.series.items():
            style = dict(marker="*", markersize=12, linestyle="none") if s.get("marker") else \
                dict(marker="x", linestyle="--") if s.get("dashed") else dict(marker="o")
            ax.plot(s["x"], s["y"], label=label, **style)
        size_axis(ax)
    else:
        cats = list(dict.fromkeys(x for s in fig.series.values() for x in s["x"]))
        w = 0.8 / len(fig.series)
        for i, (label, s) in enumerate(fig.series.items()):
            ax.bar([cats.index(x) + i * w for x in s["x"]], s["y"], w, label=label)
        ax.set_xticks([c + 0.4 - w / 2 for c in range(len(cats))], cats)
        if min(y for s in fig.series.values() for y in s["y"]) > 0:
            ax.set_yscale("log")
    ax.set_title(fig.title, fontsize=10)
    ax.set_xlabel(fig.xlabel)
    ax.set_ylabel(fig.ylabel)
    ax.legend(fontsize=8)
    f.tight_layout()
    f.savefig(path, dpi=110)
    plt.close(f)
