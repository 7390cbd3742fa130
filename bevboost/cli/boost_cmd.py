"""``bevboost boost``: list the boosts, or write a config with boosts applied."""
from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser('boost', help='list boosts or write a boosted config')
    p.add_argument('config', nargs='?', help='mmengine config to boost')
    p.add_argument('--with', dest='boosts', default='',
                   help='comma-separated boosts, e.g. amp=bf16,accum=4,fast-decode')
    p.add_argument('--out', help='where to write the boosted config')
    p.add_argument('--list', action='store_true', help='list the boosts and their cards (JSON)')
    p.set_defaults(func=run)


def split_variants(text: str) -> list[str]:
    return [s.strip() for s in text.split(',') if s.strip()]


def run(args) -> int:
    from bevboost.boosts import apply_boosts, available_boosts
    if args.list or not args.config:
        cards = [dict(b.card.to_dict(), unavailable=b.unavailable_reason())
                 for b in available_boosts().values()]
        print(json.dumps(cards, indent=2))
        return 0
    from bevboost.planning import config_diff
    from bevboost.runner_utils import load_config
    cfg = load_config(args.config)
    new = apply_boosts(cfg, split_variants(args.boosts))
    for key, old, value in config_diff(cfg, new):
        print(f'{key}: {old!r} -> {value!r}')
    if args.out:
        new.dump(args.out)
        print(f'wrote {args.out}')
    return 0
