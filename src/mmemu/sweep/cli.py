"""`mmemu sweep CONFIG`: run a grid of designs x sizes x workloads on Dask, save the table."""
from __future__ import annotations

HELP = "run a grid of designs x sizes x workloads on Dask; one table (Parquet)"


def add_parser(sub) -> None:
    s = sub.add_parser("sweep", help=HELP, description=HELP)
    s.add_argument("config", help='JSON: {"designs": [...], "sizes": ["64M", ...], "workloads": [...]}')
    s.add_argument("-o", "--output", default="sweep.parquet", help="the table (default sweep.parquet)")
    s.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler (default: a LocalCluster)")
    s.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    s.add_argument("--profile", metavar="PROFILE.json", help="cost profile (default: the shipped one)")
    s.add_argument("--plots", metavar="DIR", help="also draw the sweep's figures into DIR")
    s.add_argument("--kernel-points", action="store_true",
                   help="with --plots: measure the live kernel's fork at the sweep's sizes")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    from .grid import load_config
    from .run import sweep
    if args.workers < 1:
        raise ValueError("--workers must be at least 1")
    res = sweep(load_config(args.config), args.output, scheduler=args.scheduler,
                workers=args.workers, profile=args.profile, progress=not args.quiet)
    t = res.table
    print(f"{len(t)} cells in {args.output}: {res.computed} computed, {res.reused} reused from "
          f"earlier runs, {res.failed} failed ({res.seconds:.1f} s)")
    if res.failed:
        bad = t[t["error"].notna()]
        for _, r in bad.iterrows():
            print(f"  FAILED {r['design']} {r['size']} {r['workload']} stride {r['stride']}: {r['error']}")
    if args.plots:
        from .plot import kernel_forks, plot_all
        points = kernel_forks(t["size"][t["error"].isna()]) if args.kernel_points else None
        for path in plot_all(t, args.plots, points):
            print(f"plot: {path}")
    return 1 if res.failed else 0
