"""``bevboost train``: mmengine training with boosts applied (a thin ``tools/train.py``)."""
from __future__ import annotations

from bevboost.cli.boost_cmd import split_variants


def add_parser(sub) -> None:
    from mmengine.config import DictAction
    p = sub.add_parser('train', help='train a config through mmengine with boosts applied')
    p.add_argument('config', help='mmengine config')
    p.add_argument('--boosts', default='', help='comma-separated boosts, e.g. amp,accum=4')
    p.add_argument('--work-dir', help='output directory (default: the config work_dir)')
    p.add_argument('--resume', action='store_true', help='resume from the latest checkpoint')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config keys, key=value')
    p.set_defaults(func=run)


def run(args) -> int:
    from bevboost.runner_utils import build_runner, load_config
    cfg = load_config(args.config, args.cfg_options)
    if args.resume:
        cfg.resume = True
    runner = build_runner(cfg, split_variants(args.boosts), work_dir=args.work_dir)
    runner.train()
    return 0
