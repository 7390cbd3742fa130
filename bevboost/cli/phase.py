"""Where a command stands: still checking its input, or running (and in which phase).

``bevboost.cli.main`` answers an error by this: raised while the input is checked, it is
bad input (one line, exit 2); raised after :meth:`RunPhase.start` it is a runtime failure
(exit 1, the full traceback on stderr and in the work-dir log, a last line naming the
phase). A bug in the user's model at iteration 3 is never shown as bad input.

The train command starts the run right before it builds the Runner and attaches a
:class:`PhaseHook` (first of all hooks) and :class:`BatchPhaseHook` (last), which
move the phase on: ``building`` until the loop starts, ``iteration N (loading its
batch)``, ``iteration N``, ``saving the checkpoint after iteration N``, ``validation
after iteration N``, ``finishing after iteration N``.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from mmengine.hooks import Hook

logger = logging.getLogger(__name__)


class RunPhase:
    """The phase of one command's run; ``None`` while its input is being checked."""

    def __init__(self) -> None:
        self.phase: str | None = None
        self.work_dir: Path | None = None
        self.runner: Any = None
        self.created: list[Path] = []  # directories this run made (removed on a refusal)
        self.kept: dict[Path, bytes | None] = {}  # files the run may write: earlier content
        self.existing: set[Path] = set()  # what the work dir held at the start

    @property
    def started(self) -> bool:
        return self.phase is not None

    def start(self, phase: str = 'building', work_dir: str | Path | None = None) -> None:
        """The input is checked: from here on an error is a runtime failure."""
        self.phase = phase
        if work_dir is not None:
            self.work_dir = Path(work_dir).resolve()
            missing = [p for p in (self.work_dir, *self.work_dir.parents) if not p.exists()]
            self.created = missing[::-1]  # outermost first
            self.existing = set(self.work_dir.iterdir()) if self.work_dir.is_dir() else set()

    def keep(self, path: str | Path) -> None:
        """Remember ``path`` as it is (or its absence): a refusal puts it back."""
        path = Path(path)
        self.kept[path] = path.read_bytes() if path.is_file() else None

    def watch(self, runner) -> None:
        """Follow ``runner``'s phases (a hook that runs before every other)."""
        self.runner = runner
        first = PhaseHook(self)
        runner.register_hook(first, priority='HIGHEST')
        runner.register_hook(BatchPhaseHook(first), priority='LOWEST')

    def log_files(self) -> list[logging.FileHandler]:
        """File handlers of the run's MMLogger that write into the work dir."""
        mm_logger = getattr(self.runner, 'logger', None)
        if mm_logger is None:
            from bevboost import current_mmlogger
            mm_logger = current_mmlogger()  # a runner whose build failed after its logger
        if mm_logger is None or self.work_dir is None:
            return []
        return [h for h in mm_logger.handlers if isinstance(h, logging.FileHandler)
                and Path(h.baseFilename).resolve().is_relative_to(self.work_dir)]

    def write_to_log(self, text: str) -> list[str]:
        """Append ``text`` (an ERROR record) to the work-dir log; the files written."""
        written = []
        for handler in self.log_files():
            record = logging.LogRecord('bevboost', logging.ERROR, __file__, 0, text, None, None)
            handler.handle(record)
            handler.flush()
            written.append(handler.baseFilename)
        return written

    def remove_created(self) -> None:
        """A refused run leaves nothing behind: drop the run's log directory, put back the
        files given to :meth:`keep`, and remove the directories :meth:`start` found missing
        when nothing else is in them."""
        import shutil
        log_dir = getattr(self.runner, 'log_dir', None)
        mm_logger = getattr(self.runner, 'logger', None)
        for handler in self.log_files():
            handler.close()
            if mm_logger is not None:
                mm_logger.removeHandler(handler)  # its file is about to go
        if log_dir and self.work_dir is not None:
            log_dir = Path(log_dir).resolve()
            # an earlier run's log dir of the same second is that run's: never removed
            if log_dir.parent == self.work_dir and log_dir not in self.existing:
                shutil.rmtree(log_dir, ignore_errors=True)
        for path, content in self.kept.items():
            if content is not None:
                path.write_bytes(content)
            else:
                path.unlink(missing_ok=True)
        for path in reversed(self.created):
            try:
                path.rmdir()  # only when empty
            except OSError:
                break


def run_phase(args: argparse.Namespace) -> RunPhase:
    """The namespace's tracker (``main`` sets one; direct callers get a fresh one)."""
    tracker = getattr(args, 'run_phase', None)
    if tracker is None:
        tracker = args.run_phase = RunPhase()
    return tracker


class PhaseHook(Hook):
    """Moves a :class:`RunPhase` along the runner's loop."""

    priority = 'HIGHEST'

    def __init__(self, tracker: RunPhase) -> None:
        self.tracker = tracker
        self.iteration = 0

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self.iteration = runner.iter + 1
        self.tracker.phase = f'iteration {self.iteration}'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        self.tracker.phase = f'saving the checkpoint after iteration {self.iteration}'

    def before_val(self, runner) -> None:
        self.tracker.phase = f'validation after iteration {self.iteration}'

    def after_val(self, runner) -> None:
        self.tracker.phase = f'iteration {self.iteration}'

    def after_train(self, runner) -> None:
        self.tracker.phase = f'finishing after iteration {self.iteration}'


class BatchPhaseHook(Hook):
    """Runs after every other hook: the loop now loads the next iteration's batch."""

    priority = 'LOWEST'

    def __init__(self, first: PhaseHook) -> None:
        self.first = first

    def before_train(self, runner) -> None:
        self.first.tracker.phase = f'iteration {runner.iter + 1} (loading its batch)'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self.first.tracker.phase = f'iteration {self.first.iteration + 1} (loading its batch)'
