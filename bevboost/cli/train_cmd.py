"""``bevboost train``: mmengine training with boosts applied (a thin ``tools/train.py``)."""
from __future__ import annotations

import logging
from pathlib import Path

from bevboost.cli.boost_cmd import split_variants

logger = logging.getLogger(__name__)


def add_parser(sub) -> None:
    from bevboost.cli.checks import CfgOptionsAction
    p = sub.add_parser('train', help='train a config through mmengine with boosts applied')
    p.add_argument('config', help='mmengine config')
    p.add_argument('--boosts', '--with', dest='boosts', default='',
                   help='comma-separated boosts with options, '
                        'e.g. amp=bf16,accum=2:per_gpu_batch=1')
    p.add_argument('--work-dir', help='output directory (default: the config work_dir)')
    p.add_argument('--resume', nargs='?', const='auto', metavar='CHECKPOINT',
                   help='resume from CHECKPOINT, or without one from the latest in the work dir')
    p.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction,
                   help='override config keys, key=value')
    p.set_defaults(func=run)


def run(args) -> int:
    from bevboost.cli import checks
    from bevboost.cli.phase import run_phase
    from bevboost.boosts import APPLIED_KEY
    from bevboost.runner_utils import runner_from_cfg
    cfg = _checked_config(args)  # the boosts are applied here, once
    if args.work_dir:
        cfg.work_dir = args.work_dir
    work_dir = args.work_dir or cfg.get('work_dir')
    if args.resume:
        cfg.resume = True
        if args.resume != 'auto':
            cfg.load_from = args.resume
        elif not checks.resume_checkpoint(work_dir):
            # mmengine's auto-resume meaning (preemption scripts rely on it), said visibly
            logger.warning('--resume: no checkpoint to resume in work_dir %r (no '
                           'last_checkpoint there); training starts from scratch', work_dir)
    phase = run_phase(args)
    phase.start('building', work_dir)  # from here on an error is a runtime failure
    phase.keep(Path(work_dir) / Path(args.config).name)  # the runner writes its config there
    logger.info('boosts applied: %s', ', '.join(cfg.get(APPLIED_KEY) or []) or 'none')
    runner = runner_from_cfg(cfg)
    phase.watch(runner)
    runner.train()
    return 0


def _checked_config(args):
    """The config, with every argument and the checkpoint to load checked before a build."""
    from bevboost.cli import checks
    what = f'--boosts {args.boosts!r}'
    parsed = checks.check_specs(split_variants(args.boosts), what)
    checks.check_dir_arg(args.work_dir, '--work-dir')
    cfg = checks.load_config_checked(args.config, args.cfg_options)
    checks.check_config_lr(cfg, '--cfg-options' if args.cfg_options else f'config {args.config!r}')
    cfg = checks.check_boosts_apply(cfg, parsed, what)
    work_dir = args.work_dir or cfg.get('work_dir')
    if not work_dir:
        raise ValueError(f'config {args.config!r} sets no work_dir: pass --work-dir')
    if not args.work_dir:
        checks.check_dir_arg(work_dir, f'work_dir of config {args.config!r}')
    if args.resume not in (None, 'auto'):
        checks.check_checkpoint(args.resume, '--resume')
    elif args.resume == 'auto' and checks.resume_checkpoint(work_dir):
        checks.check_checkpoint(checks.resume_checkpoint(work_dir),
                                f'--resume (latest in {work_dir})')
    elif cfg.get('load_from'):
        checks.check_checkpoint(cfg.load_from, 'load_from')
    return cfg
