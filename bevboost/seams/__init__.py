"""Seams: the one place where the kit depends on what differs between versions of libraries
it does not own.

:mod:`bevboost.seams.torch_compat` holds every torch-version difference (torch 2.1 to the
newest): version flags computed once, and one small named function per difference, each
saying what it relies on and on which torch versions it was checked. ``tests/seams`` pins
their shape, so a torch upgrade fails there and nowhere else.

The same goes for every touch of mmengine's and torch's private state and every patch
of their classes: :mod:`~bevboost.seams.mmengine_runner` (the launch routes' ``from_cfg``
and ``__init__``, a runner's checkpoint request, loops, loggers),
:mod:`~bevboost.seams.mmengine_optim` (accumulation counters, clipping),
:mod:`~bevboost.seams.mmengine_loops` (the iteration loop's worker iterator),
:mod:`~bevboost.seams.mmengine_checkpoint` (``HistoryBuffer`` pickling),
:mod:`~bevboost.seams.mmengine_cli` (``DictAction`` value parsing) and
:mod:`~bevboost.seams.torch_internals` (GradScaler's found-inf, the fused finiteness
check, worker info, worker shutdown). :func:`install` applies the patches.
"""


def install() -> bool:
    """Every patch the kit makes to mmengine's classes, in one call (idempotent).

    Called once by ``bevboost/__init__.py``; no module patches anything when it is
    imported. Returns False when a launch-route wrapper could not be installed
    (logged as an error; ``tests/seams`` fails loudly then).
    """
    from bevboost.engine.checkpoint_safety import install as allow_list_checkpoints
    from bevboost.runner_utils import install_config_boosts_route
    from bevboost.seams.mmengine_checkpoint import patch_history_buffer
    patch_history_buffer()
    allow_list_checkpoints()
    return install_config_boosts_route()
