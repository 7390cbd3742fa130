"""``bevboost plan``: map a reference recipe onto your GPUs, check one, or rewrite a config."""
from __future__ import annotations

import argparse
import json
import sys

from bevboost.cli import checks
from bevboost.cli.checks import MAX_COUNT
from bevboost.recipe import LR_RULES, Plan, Recipe, check_lr, check_proposal, plan_recipe

EPILOG = """examples:
  bevboost plan --reference 8x4 --lr 2e-4 --gpus 4 --max-per-gpu 3
  bevboost plan --reference 8x4 --gpus 4 --per-gpu 3 --accum 8      # check a proposal
  bevboost plan --config petrv2.py --gpus 4 --max-per-gpu 1 --out petrv2_4gpu.py
"""


def add_parser(sub) -> None:
    p = sub.add_parser('plan', help='map a reference batch/LR recipe onto your hardware',
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--reference', help='reference recipe GPUSxPER_GPU[xACCUM] (e.g. 8x4) or a '
                   'total batch; default: auto_scale_lr.base_batch_size of --config')
    p.add_argument('--lr', type=float, help='reference LR (default: the config optimizer LR)')
    p.add_argument('--gpus', type=int, required=True, help='GPUs you train on')
    p.add_argument('--max-per-gpu', type=int, help='largest per-GPU batch that fits in memory')
    p.add_argument('--per-gpu', type=int, help='check this per-GPU batch (with --accum)')
    p.add_argument('--accum', type=int, default=None, help='accumulation steps to check')
    p.add_argument('--rule', choices=LR_RULES, default='linear',
                   help='LR rule when the effective batch differs (default: linear)')
    p.add_argument('--config', help='mmengine config to rewrite')
    p.add_argument('--out', help='where to write the boosted config (with --config; .py, .json, '
                   '.yaml)')
    p.add_argument('--force', action='store_true',
                   help='let --out overwrite an existing file, even the input config')
    p.add_argument('--samples', type=int,
                   help='training-set size, to lint iteration-based schedules of epoch loops')
    p.add_argument('--json', action='store_true', help='print a JSON object')
    p.set_defaults(func=run)


def parse_reference(text: str) -> int:
    """``'8x4'`` -> 32; a plain integer is taken as the total batch."""
    if isinstance(text, str) and text.strip().isdigit():
        total = int(text)
        if total < 1:
            raise ValueError(f'--reference must be >= 1, got {text!r}')
    else:
        total = Recipe.parse(text, '--reference').effective_batch
    if total > MAX_COUNT:
        raise ValueError(f'--reference {text!r}: a batch of {total} is above the limit of '
                         f'{MAX_COUNT}')
    return total


def schedule_changes(plan: Plan) -> list[str]:
    if plan.exact:
        return ['none needed: same effective batch; iteration-based schedulers count optimizer '
                'steps (OptimizerStepSchedulerHook), epochs are unchanged']
    return [f'effective batch {plan.recipe.effective_batch} vs reference {plan.reference_batch}: '
            f'iteration-counted bounds (warmup end, T_max, milestones, max_iters) x '
            f'{plan.step_ratio:.4g} to cover the same samples; LR by the {plan.rule} rule']


def _check_args(args) -> None:
    """Counts in range, ``--out`` writable without losing a file: before any work."""
    checks.check_lr(args.lr, '--lr')
    checks.check_range(args.gpus, '--gpus', high=100_000)
    for what, value in (('--max-per-gpu', args.max_per_gpu), ('--per-gpu', args.per_gpu),
                        ('--accum', args.accum), ('--samples', args.samples)):
        checks.check_range(value, what)
    if args.out:
        if not args.config:
            raise ValueError(f'--out {args.out!r} needs --config')
        checks.check_out_file(args.out, inputs=[args.config], force=args.force)


def run(args) -> int:
    if args.max_per_gpu is not None and args.per_gpu is not None:
        raise ValueError('give --max-per-gpu (to plan) or --per-gpu/--accum (to check), not both')
    if args.lr is not None:
        check_lr(args.lr, '--lr')
    _check_args(args)
    cfg = None
    provenance_warnings: list[str] = []
    if args.config:
        from bevboost.planning import BATCH_KEYS, LR_KEYS, reference_lr, reference_with_source
        cfg = checks.load_config_checked(args.config)
        reference_lr(cfg)  # fails clearly when the config has no optimizer LR
        if args.lr is not None:
            lr, lr_source = args.lr, '--lr'
        else:
            lr, lr_source, warning = reference_with_source(cfg, LR_KEYS)
            provenance_warnings += [warning] if warning else []
        checks.check_lr(lr, f'the optimizer LR of {args.config!r}')
        if args.reference:
            ref, ref_source = parse_reference(args.reference), '--reference'
        else:
            ref, ref_source, warning = reference_with_source(cfg, BATCH_KEYS)
            provenance_warnings += [warning] if warning else []
        if ref is None:
            raise ValueError(f'--reference is needed: {args.config} has no '
                             f'{" or ".join(BATCH_KEYS)}')
        ref = int(ref)
    else:
        if not args.reference:
            raise ValueError('--reference is needed without --config')
        ref, lr = parse_reference(args.reference), args.lr
        ref_source, lr_source = '--reference', '--lr' if lr is not None else 'unset'
    if args.out and cfg is None:
        raise ValueError('--out needs --config')

    if args.per_gpu is not None:
        proposal = Recipe(args.gpus, args.per_gpu, 1 if args.accum is None else args.accum)
        problem = check_proposal(ref, proposal)
        if problem:
            if args.json:
                print(json.dumps(dict(ok=False, reference_batch=ref, proposal=str(proposal),
                                      effective_batch=proposal.effective_batch, error=problem)))
            print(f'bevboost plan: {problem}', file=sys.stderr)
            return 1
        plan = Plan(ref, lr, proposal, args.rule, lr)
    else:
        max_per_gpu = args.max_per_gpu
        if max_per_gpu is None:
            if cfg is None:
                raise ValueError('give --max-per-gpu (to plan) or --per-gpu (to check)')
            max_per_gpu = int(cfg.train_dataloader.batch_size)
        plan = plan_recipe(ref, args.gpus, max_per_gpu, lr, args.rule)

    result = dict(plan.to_dict(), schedule_changes=schedule_changes(plan),
                  reference_source=dict(batch=ref_source, lr=lr_source),
                  warnings=list(provenance_warnings))
    lines = [f'reference      batch {ref} (from {ref_source})'
             + (f', lr {lr:g} (from {lr_source})' if lr is not None else ''),
             f'plan           {plan.recipe.gpus} GPUs x {plan.recipe.per_gpu} per GPU x '
             f'accumulate {plan.recipe.accum} = effective batch {plan.recipe.effective_batch}'
             + (' (exact)' if plan.exact else f' (not exact: reference {ref}, LR rescaled)'),
             f'per-GPU batch  {plan.recipe.per_gpu}',
             f'accumulation   {plan.recipe.accum}']
    if plan.lr is not None:
        lines.append(f'lr             {plan.lr:.6g} ({plan.rule} rule)')
    lines += [f'schedule       {c}' for c in result['schedule_changes']]
    lines += [f'warning: {w}' for w in provenance_warnings]
    if cfg is not None:
        lines += _rewrite_config(cfg, plan, args, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print('\n'.join(lines))
    return 0


def _rewrite_config(cfg, plan: Plan, args, result: dict) -> list[str]:
    from bevboost.planning import apply_plan, config_diff, lint_schedule
    new = apply_plan(cfg, plan)
    diff = config_diff(cfg, new)
    warnings = lint_schedule(new, samples=args.samples, gpus=plan.recipe.gpus)
    result['config_changes'] = [dict(key=k, old=o, new=n) for k, o, n in diff]
    result['warnings'] += warnings
    lines = ['changes:'] + [f'  {k}: {o!r} -> {n!r}' for k, o, n in diff]
    lines += [f'warning: {w}' for w in warnings]
    if args.out:
        new.dump(args.out)
        result['out'] = args.out
        lines.append(f'wrote {args.out}')
    return lines
