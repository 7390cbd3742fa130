"""Side-by-side timing of training runs, for the benchmark suites.

A ratio measured in one process, with the two sides interleaved, is what these
suites assert on: a 2-core machine shared with other jobs moves absolute times
by 2x, but moves both sides of an interleaved pair alike. Per run the figure
is a low quantile of the iteration times (default the 25th percentile): other
jobs only ever add time, so the fast iterations show the code's own cost.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner


class IterClock(Hook):
    """Wall and process CPU time between consecutive iterations, taken after every other hook."""

    priority = 'LOWEST'

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.marks.append((time.perf_counter(), time.process_time()))

    def iter_s(self, skip: int, quantile: float, clock: int = 0) -> float:
        marks = [m[clock] for m in self.marks[skip:]]
        gaps = sorted(b - a for a, b in zip(marks, marks[1:]))
        return gaps[int(quantile * (len(gaps) - 1))]


def iter_time_s(cfg: dict, skip: int = 5, quantile: float = 0.25, cpu: bool = False) -> float:
    """Train ``cfg``; the ``quantile`` of its iteration times after ``skip`` iterations.

    ``cpu=True``: process CPU seconds per iteration instead of wall seconds; with
    one torch thread, other jobs on the machine barely move it.
    """
    runner = Runner.from_cfg(Config(cfg))
    clock = IterClock()
    runner.register_hook(clock)
    runner.train()
    return clock.iter_s(skip, quantile, clock=1 if cpu else 0)


def interleaved_ratio(time_a: Callable[[], float], time_b: Callable[[], float],
                      pairs: int = 4) -> tuple[float, list[float]]:
    """Median over ``pairs`` of b / a; pairs alternate a-b and b-a so order effects cancel."""
    ratios = []
    for i in range(pairs):
        if i % 2:
            b = time_b()
            ratios.append(b / time_a())
        else:
            a = time_a()
            ratios.append(time_b() / a)
    return statistics.median(ratios), ratios
