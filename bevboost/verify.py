"""What is in effect on the built runner: each boost's ``verify`` and the hook that reports it.

:class:`BoostReportHook` (added to every config the kit boosts) runs before the first
iteration: it logs what a launch route changed, checks the training recipe on the
built runner (:mod:`bevboost.engine.recipe_check`), and runs every boost's
:meth:`~bevboost.boosts.Boost.verify`, logging one line of verdicts; a boost not in
effect stops training there.
"""
from __future__ import annotations

import logging
from typing import Any

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from bevboost.boosts import BoostNotInEffect, get_boost


def verify_boosts(runner: Any, requested: dict[str, dict[str, Any]]
                  ) -> tuple[list[str], list[str]]:
    """Run each boost's :meth:`Boost.verify` on ``runner``.

    Returns ``(verdicts, failures)``: one ``'name: verdict'`` per boost, and
    the ``'name: reason'`` of those not in effect.
    """
    verdicts, failures = [], []
    for name, options in requested.items():
        boost = get_boost(name)
        try:
            verdicts.append(f'{name}: {boost.verify(runner, **dict(options or {}))}')
        except BoostNotInEffect as exc:
            verdicts.append(f'{name}: NOT IN EFFECT ({exc})')
            failures.append(f'{name}: {exc}')
        except NotImplementedError:
            verdicts.append(f'{name}: unverified (the boost has no verify())')
    return verdicts, failures



@HOOKS.register_module()
class BoostReportHook(Hook):
    """Log one line listing each boost as found on the built runner; stop if one is not in effect.

    Added by :func:`~bevboost.boosts.apply_boosts`; runs in ``before_train``
    (after the optimizer wrapper, schedulers and train dataloader are built,
    before iteration 1). In ``before_run`` it checks the checkpoint the runner
    is about to load (``load_from``/``resume``): an empty or truncated file is
    refused with its path.

    Args:
        boosts: boost name -> the options it was applied with.
    """

    priority = 'VERY_LOW'

    def __init__(self, boosts: dict[str, dict] | None = None) -> None:
        self.boosts = {k: dict(v or {}) for k, v in (boosts or {}).items()}
        self.verdicts: list[str] = []
        self.recipe: str | None = None

    def before_run(self, runner) -> None:
        """An empty or truncated checkpoint is named here, before mmengine's loader fails on it
        with an error that does not say which file it read."""
        from bevboost.engine.checkpoint_safety import check_checkpoint, checkpoint_to_load
        found = checkpoint_to_load(runner)
        if found is not None:
            check_checkpoint(*found)

    def before_train(self, runner) -> None:
        from bevboost.engine.recipe_check import NOTES_KEY, check_built_recipe
        for note in runner.cfg.get(NOTES_KEY) or []:  # what the launch route changed
            print_log(f'bevboost: {note}', logger='current', level=logging.WARNING)
        self.recipe = check_built_recipe(runner)  # RecipeMismatchError stops the run here
        if self.recipe:
            warned = self.recipe.startswith('WARNING:')
            print_log(f'bevboost {self.recipe}', logger='current',
                      level=logging.WARNING if warned else logging.INFO)
        self.verdicts, failures = verify_boosts(runner, self.boosts)
        line = 'bevboost boosts in effect: ' + ('; '.join(self.verdicts) or 'none')
        print_log(line, logger='current', level=logging.ERROR if failures else logging.INFO)
        if failures:
            raise BoostNotInEffect('boosts not in effect on the built runner, stopping before '
                                   'the first iteration: ' + '; '.join(failures))
