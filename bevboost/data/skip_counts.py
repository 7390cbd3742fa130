"""Samples the loaders skipped (``on_error='skip'``), totalled where the user reads the log.

A skipping transform runs in every DataLoader worker, each with its own copy
of the transform, so a plain attribute counts per worker and the main process
never sees it. :class:`SkipCounter` is one shared integer (``multiprocessing.Value``,
created with the dataset in the main process and inherited by forked or
spawned workers) that every copy adds to. :class:`SkippedSamplesHook` finds
the counters of the runner's dataloaders and reports their total (summed over
ranks too) in mmengine's log: as ``skipped_samples`` in each logging interval's
line and as one line per loader at the end of the run.

A flood of bad files is summarised, not printed: the first :data:`FIRST_IN_FULL`
skipped samples are logged in full (file and reason), later ones are counted per
logging interval; when :data:`ALL_FAIL_AFTER` samples were skipped and none loaded
(every file bad: a wrong ``data_root``, a truncated copy), loading stops with
:class:`AllSamplesSkipped`, the total and the first bad files, rather than
mmengine's refetching ending in ``Cannot find valid image after 1000!``.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
from typing import Any

import torch
from mmengine import dist
from mmengine.hooks import Hook, LoggerHook
from mmengine.registry import HOOKS

#: attribute of a transform holding its SkipCounter
COUNTER_ATTR = 'skip_counter'
_CHILD_ATTRS = ('dataset', 'datasets', 'pipeline', 'transforms', 'transform')
#: skipped samples logged in full (all workers together); later ones are counted
FIRST_IN_FULL = 5
#: skipped samples, with none loaded, after which loading stops
ALL_FAIL_AFTER = 100

logger = logging.getLogger(__name__)


class AllSamplesSkipped(RuntimeError):
    """Every sample tried failed to load: the data is wrong, skipping cannot help."""


class SkipCounter:
    """A count shared by a transform's copies in every loader worker."""

    def __init__(self) -> None:
        self._shared = mp.Value('q', 0)
        self._any_loaded = mp.Value('b', 0, lock=False)  # set once, never reset
        self._first: list[str] = []  # this process's first bad samples

    def skipped(self, reason: str) -> int:
        """Count one skipped sample; log it in full while the total is small; stop when
        :data:`ALL_FAIL_AFTER` were skipped and none loaded. Returns the total."""
        total = self.add()
        if len(self._first) < 3:
            self._first.append(reason)
        # formatted here: mmengine's logger drops a WARNING whose format string repeats
        if total <= FIRST_IN_FULL:
            logger.warning(f'skipping sample ({total} skipped so far, all workers): {reason}')
        if total == FIRST_IN_FULL:
            logger.warning(f'{FIRST_IN_FULL} samples skipped: further ones are counted '
                           '(skipped_samples in the training log), not listed')
        if total >= ALL_FAIL_AFTER and not self._any_loaded.value:
            raise AllSamplesSkipped(
                f'every sample tried failed to load: {total} skipped (all workers), none '
                f"loaded. First bad files: {'; '.join(self._first)}. The data is wrong (check "
                "data_root and the files); on_error='skip' only passes over a few bad files")
        return total

    def loaded(self) -> None:
        """Note that a sample loaded (checked before giving up on the data)."""
        if not self._any_loaded.value:
            self._any_loaded.value = 1

    def add(self, n: int = 1) -> int:
        """Add ``n``; return the total so far (all workers)."""
        with self._shared.get_lock():
            self._shared.value += n
            return self._shared.value

    @property
    def value(self) -> int:
        return int(self._shared.value)

    def __deepcopy__(self, memo: dict) -> 'SkipCounter':
        return self  # a copied pipeline still counts into the same total

    def __repr__(self) -> str:
        return f'SkipCounter({self.value})'


def find_skip_counters(root: Any, max_depth: int = 8) -> list[SkipCounter]:
    """Counters of the transforms reachable from a dataloader or dataset (wrappers included)."""
    found: dict[int, SkipCounter] = {}
    seen: set[int] = set()

    def walk(obj: Any, depth: int) -> None:
        if obj is None or id(obj) in seen or depth > max_depth:
            return
        seen.add(id(obj))
        counter = getattr(obj, COUNTER_ATTR, None)
        if isinstance(counter, SkipCounter):
            found[id(counter)] = counter
        children = obj if isinstance(obj, (list, tuple)) else [
            getattr(obj, a, None) for a in _CHILD_ATTRS]
        for child in children:
            if not isinstance(child, (str, bytes, int, float, dict)):
                walk(child, depth + 1)

    walk(root, 0)
    return list(found.values())


def total_skipped(loader: Any) -> int:
    """Samples skipped by ``loader``'s transforms, summed over workers and ranks (a collective)."""
    local = sum(c.value for c in find_skip_counters(loader))
    count = torch.tensor(local, dtype=torch.int64)
    dist.all_reduce(count)  # sum; a no-op outside distributed runs
    return int(count)


@HOOKS.register_module()
class SkippedSamplesHook(Hook):
    """Log the skipped-sample total at each logging interval and at the end of the run.

    Args:
        interval: iterations between updates; default the LoggerHook's interval.
    """

    priority = 'NORMAL'  # before LoggerHook (BELOW_NORMAL) writes the interval's line

    def __init__(self, interval: int | None = None) -> None:
        if interval is not None and (not isinstance(interval, int) or interval < 1):
            raise ValueError(f'interval must be a positive int, got {interval!r}')
        self.interval = interval
        self._train_counts = False
        self._reported = 0  # the total at the last interval

    def before_run(self, runner) -> None:
        if self.interval is None:
            loggers = [h for h in runner.hooks if isinstance(h, LoggerHook)]
            self.interval = loggers[0].interval if loggers else 50

    def before_train(self, runner) -> None:
        self._train_counts = bool(find_skip_counters(runner.train_dataloader))

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        if not self._train_counts:
            return
        # the LoggerHook's own condition, so every logged line carries the current total
        if (self.every_n_train_iters(runner, self.interval)
                or self.every_n_inner_iters(batch_idx, self.interval)
                or self.end_of_epoch(runner.train_dataloader, batch_idx)):
            total = total_skipped(runner.train_dataloader)
            runner.message_hub.update_scalar('train/skipped_samples', total)
            if total > max(self._reported, FIRST_IN_FULL):  # past those logged one by one
                runner.logger.warning(
                    f'{total - max(self._reported, FIRST_IN_FULL)} more samples skipped by '
                    f"on_error='skip' transforms up to iteration {runner.iter + 1} ({total} in "
                    'all, all workers and ranks)')
            self._reported = max(self._reported, total)

    def after_run(self, runner) -> None:
        totals = []
        for mode in ('train', 'val', 'test'):
            loop = runner.__dict__.get(f'_{mode}_loop')
            loader = getattr(loop, 'dataloader', None)
            if loader is not None and find_skip_counters(loader):
                totals.append(f'{mode} {total_skipped(loader)}')
        if totals:
            level = logging.WARNING if any(t.split()[1] != '0' for t in totals) else logging.INFO
            runner.logger.log(level, "samples skipped by on_error='skip' transforms (all "
                              f"workers and ranks): {', '.join(totals)}")
