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
    specs = check_specs(split_variants(args.boosts), what)
    if args.out:
        check_out_file(args.out, inputs=[args.config], force=args.force)
    cfg = load_config_checked(args.config)
    try:
        new = apply_boosts(cfg, specs)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f'{what}: {exc}' if specs else str(exc)) from None
    for key, old, value in config_diff(cfg, new):
        print(f'{key}: {old!r} -> {value!r}')
    for line in static_verdicts(cfg, new):
        print(line)
    if args.out:
        new.dump(args.out)
        print(f'wrote {args.out}')
    return 0


def static_verdicts(before, after) -> list[str]:
    """Per applied boost, what the written config sets for it (its card's keys).

    What is in effect is only known on a built runner: the config's
    ``BoostReportHook`` checks it before the first iteration and logs the line.
    """
    from bevboost.boosts import get_boost
    from bevboost.planning import config_diff
    changed = config_diff(before, after)
    lines = []
    for name in after.get('bevboost_applied') or []:
        keys = get_boost(name).card.changes
        sets = [f'{k}={v!r}' for k, _, v in changed
                if any(k == c or k.startswith(c + '.') for c in keys)
                and not (k.startswith('custom_hooks.') and not k.endswith('.type'))
                and v != 'BoostReportHook']
        lines.append(f"verdict {name}: config sets {', '.join(sets) or 'nothing new'}; "
                     'whether it is in effect is only known on a built runner: checked on the '
                     'built runner at training start (BoostReportHook logs one line)')
    return lines
