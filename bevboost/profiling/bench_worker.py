"""One bench run in a fresh process: config + variant -> result JSON.

``bevboost bench`` starts ``python -m bevboost.profiling.bench_worker`` once
per (variant, repeat) so no variant inherits another's warm caches, worker
pools or allocator state. Every run uses the same config, data and seed.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def prepare_bench_config(cfg: Any, *, iters: int, warmup: int, seed: int, work_dir: str) -> Any:
    """Turn any training config into a short, iteration-based, eval-free run."""
    cfg.work_dir = work_dir
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters + warmup,
                         val_interval=10 ** 9)
    for split in ('val', 'test'):
        for key in (f'{split}_dataloader', f'{split}_cfg', f'{split}_evaluator'):
            if key in cfg:
                cfg[key] = None
    loader = cfg.train_dataloader
    sampler = dict(loader.get('sampler') or {})
    if sampler.get('type') in (None, 'DefaultSampler', 'mmengine.DefaultSampler'):
        # an epoch sampler would restart its workers mid-run: a fake stall
        loader.sampler = dict(type='InfiniteSampler', shuffle=sampler.get('shuffle', True),
                              seed=seed)
    hooks = dict(cfg.get('default_hooks') or {})
    hooks['checkpoint'] = None  # mmengine drops a default hook set to None
    hooks.pop('visualization', None)
    logger_hook = dict(hooks.get('logger') or dict(type='LoggerHook'))
    logger_hook['interval'] = max(1, (iters + warmup) // 4)
    hooks['logger'] = logger_hook
    cfg.default_hooks = hooks
    cfg.randomness = dict(seed=seed, deterministic=False)
    cfg.load_from = None
    cfg.resume = False
    return cfg


def run_variant(config: str, specs: list[str], *, iters: int, warmup: int, seed: int,
                work_dir: str, replay: int = 0) -> dict[str, Any]:
    """Train ``iters + warmup`` iterations with ``specs`` applied; return the summary."""
    import bevboost  # noqa: F401  (registers hooks and boosts)
    from bevboost.boosts import apply_boosts
    from bevboost.profiling.stall_hook import StallMonitorHook
    from bevboost.runner_utils import load_config, runner_from_cfg

    cfg = load_config(config)
    cfg = apply_boosts(cfg, list(specs) + [f'measure={warmup}'])
    cfg = prepare_bench_config(cfg, iters=iters, warmup=warmup, seed=seed, work_dir=work_dir)
    if replay:
        hooks = list(cfg.get('custom_hooks') or [])
        hooks.append(dict(type='ReplayDataHook', num_batches=replay))
        cfg.custom_hooks = hooks
    runner = runner_from_cfg(cfg)
    start = time.perf_counter()
    runner.train()
    wall = time.perf_counter() - start
    hook = next(h for h in runner.hooks if isinstance(h, StallMonitorHook))
    summary = dict(hook.summary or {})
    summary['wall_s'] = wall
    summary['applied'] = list(cfg.get('bevboost_applied') or [])
    summary['num_workers'] = cfg.train_dataloader.get('num_workers', 0)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='bevboost.profiling.bench_worker')
    parser.add_argument('--config', required=True)
    parser.add_argument('--specs', default='[]', help='JSON list of boost variant strings')
    parser.add_argument('--iters', type=int, required=True)
    parser.add_argument('--warmup', type=int, required=True)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--replay', type=int, default=0, help='cache N batches and replay')
    parser.add_argument('--work-dir', required=True)
    parser.add_argument('--out', required=True, help='result JSON path')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    try:
        result = run_variant(args.config, json.loads(args.specs), iters=args.iters,
                             warmup=args.warmup, seed=args.seed, work_dir=args.work_dir,
                             replay=args.replay)
        result['status'] = 'ok'
        code = 0
    except Exception as exc:  # reported in the bench report, never dropped
        logger.error('bench run failed: %s', exc)
        result = {'status': 'failed', 'error': f'{type(exc).__name__}: {exc}',
                  'traceback': traceback.format_exc()[-4000:]}
        code = 1
    Path(args.out).write_text(json.dumps(result))
    return code


if __name__ == '__main__':
    sys.exit(main())
