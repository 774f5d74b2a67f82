"""Benchmarks of mmemu's hot paths against baselines measured in the same run.

- ``scenarios``: the timed mmemu operations (fork, faults, COW, break_cow_pte, munmap, exit, read)
- ``kernel`` / ``kernel_helper``: the real kernel under the benchmark (stdlib-only helper process)
- ``lower_bound``: numpy lower bounds for the same data movement
- ``reference``: the pure-Python reference model (``mmemu.reference``) on the same workload
- ``runner``: the plan, one fresh process per mmemu scenario (peak host RSS per scenario)
- ``report`` / ``plot``: ratios, targets, the text table, the figure
- ``counters`` / ``track``: CI's exact work-counter baseline and the 2x timing-ratio rule
- ``cli``: ``mmemu bench``
"""
