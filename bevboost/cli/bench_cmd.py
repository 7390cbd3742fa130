"""``bevboost bench [CONFIG]``: measure every optimization side by side.

Without CONFIG it runs the embedded default (the tiny PETRv2 config on the
synthetic nuScenes set, generated into a cache directory on first use).
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from bevboost.cli import checks
from bevboost.cli.checks import MAX_COUNT, int_range

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
#: the config ``bevboost bench`` runs when none is given
DEFAULT_CONFIG = REPO_ROOT / 'configs' / 'petrv2' / 'petrv2_tiny_synth.py'
#: without --variants: the baseline, every boost that switches on by name alone, accum=2, all
DEFAULT_VARIANTS = 'baseline,<every boost that needs no value>,accum=2,all'
#: synthetic data for the default config: where, and how much
SYNTH_CACHE = Path(os.environ.get('BEVBOOST_CACHE', Path.home() / '.cache' / 'bevboost'))
SYNTH_KWARGS = dict(scenes=3, samples_per_scene=8, seed=0)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        'bench', help='benchmark boosts side by side (fresh process per variant)',
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', nargs='?', default=None,
                   help=f'training config (default: {DEFAULT_CONFIG.relative_to(REPO_ROOT)})')
    p.add_argument('--variants', default=None,
                   help='comma-separated: baseline, a boost name or name=value, several joined '
                        "by '+', all (every exact boost available here), ceiling (data-free "
                        f'replay, always added). Default: {DEFAULT_VARIANTS}')
    p.add_argument('--iters', type=int, default=20, help='measured iterations per run (20)')
    p.add_argument('--warmup', type=int, default=5, help='warm-up iterations, not measured (5)')
    p.add_argument('--repeats', type=int, default=3,
                   help='runs per variant, interleaved; medians and min-max spreads (3)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default='bench_out',
                   help='report directory (bench_out): report.json, report.md, *.png, runs/')
    p.add_argument('--force', action='store_true',
                   help='let --out overwrite an earlier report there')
    p.add_argument('--no-ceiling', action='store_true', help='skip the data-free ceiling run')
    p.add_argument('--threads', type=int_range(0, 1024), default=0,
                   help='torch threads of each run\'s main process (0: cores minus loader '
                        'workers, at least 1; workers run 1 thread each)')
    p.add_argument('--trace-iters', type=int_range(0, 100), default=2,
                   help='iterations the first baseline run profiles after its measured ones: '
                        'trace.json + tb_profiler/ in --out (2; 0: no trace)')
    p.add_argument('--timeout', type=float, default=900.0,
                   help='seconds per run (900)')
    p.set_defaults(func=run)


def _default_config(out: Path) -> Path:
    """The default config, with its synthetic data generated into the cache if missing."""
    if not DEFAULT_CONFIG.is_file():
        raise FileNotFoundError(f'default bench config missing: {DEFAULT_CONFIG}')
    from bevboost.runner_utils import load_config
    data_root = load_config(DEFAULT_CONFIG).train_dataloader.dataset.data_root
    root = Path(data_root)
    if not root.is_absolute():
        root = Path.cwd() / root
    if not (root / 'nuscenes_infos_train.pkl').is_file():
        root = SYNTH_CACHE / 'synth_nuscenes'
        if not (root / 'nuscenes_infos_train.pkl').is_file():
            from bevboost.synth import synthesize_nuscenes
            logger.info('generating the synthetic nuScenes set for the default config into %s '
                        '(%s; once)', root, SYNTH_KWARGS)
            synthesize_nuscenes(root, **SYNTH_KWARGS)
    derived = out / 'bench_config.py'
    derived.write_text(f'_base_ = [{str(DEFAULT_CONFIG)!r}]\n'
                       f'train_dataloader = dict(dataset=dict(data_root={str(root) + "/"!r}))\n')
    logger.info('default config %s on data %s', DEFAULT_CONFIG, root)
    return derived


#: what ``bench --out`` holds; a name ending like one of these is taken for a file
REPORT_SUFFIXES = ('.json', '.md', '.png', '.txt', '.csv', '.html', '.pdf', '.yaml', '.yml')


def check_out_name(out: str) -> None:
    """``--out`` is a directory: refuse a new one named like a report file (``x.txt``)."""
    path = Path(out)
    if not path.is_dir() and path.suffix.lower() in REPORT_SUFFIXES:
        raise ValueError(f'--out {out!r} looks like a file name: --out is the report directory '
                         'that bench fills with report.json, report.md, chart.png, curves.png '
                         'and runs/; give a directory name')


#: files of a finished report: ``--out`` holding one is refused without ``force``
REPORT_FILES = ('report.json', 'report.md')


def check_no_report(out: str | Path, force: bool = False) -> None:
    """Refuse an ``out`` holding an earlier report (it would be overwritten) unless ``force``."""
    found = [name for name in REPORT_FILES if (Path(out) / name).is_file()]
    if found and not force:
        raise ValueError(f'--out {str(out)!r} holds an earlier report ({", ".join(found)}); '
                         'pass --force to overwrite it, or give another --out')


def missing_data(cfg: Any) -> list[tuple[str, str | None]]:
    """``(annotation file, data_root)`` of every training dataset whose annotation file does
    not exist (wrappers' inner datasets included); relative paths are from the working
    directory, as the runs see them."""
    found: list[tuple[str, str | None]] = []

    def walk(ds: Any) -> None:
        if isinstance(ds, (list, tuple)):
            for item in ds:
                walk(item)
            return
        if not isinstance(ds, dict):
            return
        ann_file, root = ds.get('ann_file'), ds.get('data_root')
        if isinstance(ann_file, str) and ann_file and '://' not in ann_file:
            # mmengine's BaseDataset._join_prefix: a relative ann_file is under data_root
            path = ann_file if (not root or os.path.isabs(ann_file)) \
                else os.path.join(str(root), ann_file)
            if not os.path.exists(path):
                found.append((path, root if isinstance(root, str) else None))
        walk(ds.get('dataset'))
        walk(ds.get('datasets'))

    walk((cfg.get('train_dataloader') or {}).get('dataset'))
    return found


def check_data_exists(cfg: Any, config: str | Path) -> None:
    """``FileNotFoundError`` naming the missing training data of ``config`` and the command
    that makes the kit's synthetic set, before any run starts."""
    missing = missing_data(cfg)
    if missing:
        path, root = missing[0]
        make = f'bevboost data synth {root.rstrip("/") if root else os.path.dirname(path)}'
        raise FileNotFoundError(
            f'config {str(config)!r}: its training data {path!r} does not exist; for the '
            f"kit's synthetic nuScenes set make it with `{make}`, else set data_root in the "
            'config to where the data is')


def _checked_variants(args: argparse.Namespace) -> tuple[list, Any]:
    """Every variant resolved and applied to the config, before anything runs.

    An unknown boost, a bad value (``amp=fp8``), a boost given twice in one
    variant or a config that cannot be read fails here, with one line, instead of
    after the baseline and ceiling runs. A variant the user did not name (the
    default list, ``all``) that does not fit the config is reported as unable to
    run, with the reason, rather than stopping the bench.
    """
    from bevboost.bench.harness import resolve_variants
    for what, value, low, high in (('--iters', args.iters, 1, MAX_COUNT),
                                   ('--warmup', args.warmup, 0, MAX_COUNT),
                                   ('--repeats', args.repeats, 1, 1000),
                                   ('--seed', args.seed, 0, 2**32 - 1)):
        checks.check_range(value, what, low, high)
    checks.check_seconds(args.timeout, '--timeout')
    lenient = args.variants is None
    if lenient:
        from bevboost.bench.harness import default_variants
    text = ','.join(default_variants()) if lenient else args.variants
    names = text.split(',')
    if not all(n.strip() for n in names):
        raise ValueError(f'--variants {text!r}: empty variant name; give comma-separated '
                         f'names, e.g. {DEFAULT_VARIANTS}')
    try:
        variants = resolve_variants(names, ceiling=not args.no_ceiling, lenient=lenient)
    except ValueError as exc:
        raise ValueError(f'--variants {text!r}: {exc}') from None
    cfg = checks.load_config_checked(args.config or DEFAULT_CONFIG, what='config')
    from bevboost.bench.harness import ALL
    for variant in variants:
        if variant.reason is not None or not variant.specs:
            continue
        try:
            checks.check_boosts_apply(cfg, variant.specs, f'--variants {variant.name!r}')
        except ValueError as exc:
            if not (lenient or variant.name == ALL):
                raise
            variant.reason = f'does not fit this config: {exc}'
    return variants, cfg


def run(args: argparse.Namespace) -> int:
    from bevboost.bench.harness import check_out_dir, run_bench
    from bevboost.bench.report import write_report

    check_out_name(args.out)
    checks.check_dir_arg(args.out, '--out')
    check_no_report(args.out, force=args.force)
    with checks.quiet_info():  # resolving rehearses boosts on a copy: the runs log them
        variants, cfg = _checked_variants(args)
    if args.config is not None:  # the default config's data is made on first use
        check_data_exists(cfg, args.config)
    from bevboost.cli.phase import run_phase
    phase = run_phase(args)
    phase.start('benchmarking', args.out)  # from here on: runtime failures
    out = check_out_dir(args.out)
    config = Path(args.config) if args.config is not None else _default_config(out)

    runnable = sum(v.reason is None for v in variants)
    total = runnable * max(args.repeats, 1)
    from tqdm import tqdm
    with tqdm(total=total, desc='bench', unit='run') as bar:
        def progress(label: str) -> None:
            phase.phase = f'benchmarking (last run: {label})'
            bar.set_postfix_str(label, refresh=False)
            bar.update(1)

        report = run_bench(config, variants, iters=args.iters, warmup=args.warmup,
                           repeats=args.repeats, out=out, seed=args.seed,
                           timeout=args.timeout, threads=args.threads,
                           trace_iters=args.trace_iters, progress=progress)
    phase.phase = 'writing the report'
    files = write_report(report, out)
    for row in report['variants']:
        if row['status'] == 'ok':
            speedup, verdict = row['speedup'], row.get('verdict') or {}
            spread = (f" ({speedup['min']:.2f}-{speedup['max']:.2f})"
                      if speedup['median'] is not None and row['repeats'] > 1 else '')
            print(f"{row['name']:>16}: {row['samples_per_s']['median']:8.2f} samples/s  "
                  f"speedup {speedup['median'] or 0:.2f}x{spread}  "
                  f"stall {100 * (row['stall_share']['median'] or 0):.0f}%"
                  + ('  data-bound' if verdict.get('data_bound') else ''))
        else:
            print(f"{row['name']:>16}: {row['status']}: {row['reason']}")
    print('report:', ', '.join(str(p) for p in files.values()))
    return 1 if report['failed'] else 0
