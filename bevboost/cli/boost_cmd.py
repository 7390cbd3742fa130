"""``bevboost boost``: list the boosts, or write a config with boosts applied."""
from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser('boost', help='list boosts or write a boosted config')
    p.add_argument('config', nargs='?', help='mmengine config to boost')
    p.add_argument('--with', dest='boosts', default='',
                   help='comma-separated boosts, NAME[=VALUE][:OPTION=VALUE...], e.g. '
                        'amp=bf16,accum=2:per_gpu_batch=1,fast-decode')
    p.add_argument('--out', help='where to write the boosted config (.py, .json, .yaml)')
    p.add_argument('--force', action='store_true',
                   help='let --out overwrite an existing file, even the input config')
    p.add_argument('--list', action='store_true', help='list the boosts and their cards (JSON)')
    p.add_argument('--diff', action='store_true',
                   help='print every changed config key (also with -v); default: a short '
                        'summary per boost')
    p.set_defaults(func=run)


def split_variants(text: str) -> list[str]:
    return [s.strip() for s in text.split(',') if s.strip()]


def run(args) -> int:
    from bevboost.boosts import apply_boosts, available_boosts
    from bevboost.cli.checks import check_out_file, check_specs, load_config_checked
    if args.out and not args.config:
        raise ValueError(f'--out {args.out!r} needs a CONFIG to boost')
    if args.list or not args.config:
        cards = [dict(b.card.to_dict(), unavailable=b.unavailable_reason())
                 for b in available_boosts().values()]
        print(json.dumps(cards, indent=2))
        return 0
    from bevboost.planning import config_diff
    what = f'--with {args.boosts!r}'
    specs = split_variants(args.boosts)
    parsed = check_specs(specs, what)
    if args.out:
        check_out_file(args.out, inputs=[args.config], force=args.force)
    cfg = load_config_checked(args.config)
    try:
        new = apply_boosts(cfg, parsed)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f'{what}: {exc}' if specs else str(exc)) from None
    diff = config_diff(cfg, new)
    if args.diff or getattr(args, 'verbose', False):
        for key, old, value in diff:
            print(f'{key}: {old!r} -> {value!r}')
    else:
        from bevboost.cli.boost_summary import boost_summary
        for line in boost_summary(cfg, specs):
            print(line)
        print(f'({len(diff)} config keys changed: --diff or -v lists them)')
    if new.get('bevboost_applied'):
        print('in effect or not: checked on the built runner at training start '
              '(BoostReportHook logs one line)')
    if args.out:
        new.dump(args.out)
        print(f'wrote {args.out}')
    return 0
