"""One bench run in a fresh process: config + variant -> result JSON.

``bevboost bench`` starts ``python -m bevboost.bench.worker`` once
per (variant, repeat) so no variant inherits another's warm caches, worker
pools or allocator state. Every run uses the same config, data and seed.

Threads: loader workers run one thread each (torch's default in workers; the
bench starts this process with OMP/OpenBLAS/MKL at one thread, which workers
inherit); the main process gets ``cores - num_workers`` torch threads (at
least one) unless ``--threads`` says otherwise, so workers and the train step
do not oversubscribe the machine.
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


def main_threads(num_workers: int, cores: int) -> int:
    """Torch threads for the main process: the cores the workers leave free, at least one."""
    return max(1, cores - num_workers)


def run_variant(config: str, specs: list[str], *, iters: int, warmup: int, seed: int,
                work_dir: str, replay: int = 0, threads: int = 0,
                trace_iters: int = 0) -> dict[str, Any]:
    """Train ``warmup + iters`` measured iterations with ``specs`` applied; return the summary.

    Args:
        threads: main-process torch threads (0: :func:`main_threads`).
        trace_iters: profile this many iterations after the measured ones
            (one profiler warm-up step first); 0: no trace.
    """
    import torch

    import bevboost  # noqa: F401  (registers hooks and boosts)
    from bevboost.boosts import apply_boosts, parse_variant
    from bevboost.profiling.stall_hook import StallMonitorHook, available_cores
    from bevboost.runner_utils import load_config, runner_from_cfg

    cfg = load_config(config)
    wanted = dict(parse_variant(spec) for spec in specs)
    wanted['measure'] = dict(warmup_iters=warmup, measure_iters=iters)
    tail = 0
    if trace_iters:
        wanted['profile'] = dict(skip_first=warmup + iters, wait=0, warmup=1, active=trace_iters)
        tail = 1 + trace_iters
    cfg = apply_boosts(cfg, wanted)
    cfg = prepare_bench_config(cfg, iters=iters + tail, warmup=warmup, seed=seed,
                               work_dir=work_dir)
    if replay:
        hooks = list(cfg.get('custom_hooks') or [])
        hooks.append(dict(type='ReplayDataHook', num_batches=replay))
        cfg.custom_hooks = hooks
    num_workers = int(cfg.train_dataloader.get('num_workers', 0) or 0)
    cores = available_cores()
    torch.set_num_threads(threads or main_threads(num_workers, cores))
    runner = runner_from_cfg(cfg)
    start = time.perf_counter()
    runner.train()
    wall = time.perf_counter() - start
    hook = next(h for h in runner.hooks if isinstance(h, StallMonitorHook))
    summary = dict(hook.summary or {})
    summary['wall_s'] = wall
    summary['applied'] = list(cfg.get('bevboost_applied') or [])
    summary['num_workers'] = num_workers
    # first iteration of a `compile` run (compilation included; None without compile)
    summary['compile_first_iter_s'] = runner.message_hub.get_info('compile/first_iter_s')
    summary['threads'] = {'main': torch.get_num_threads(), 'per_worker': 1,
                          'workers': num_workers, 'cores': cores,
                          'policy': 'given' if threads else 'cores - workers'}
    if trace_iters:
        from bevboost.profiling.profiler_hook import TorchProfilerHook
        prof = next(h for h in runner.hooks if isinstance(h, TorchProfilerHook))
        summary['trace'] = {'files': list(prof.trace_files), 'tb_run_dir': prof.run_dir}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='bevboost.bench.worker')
    parser.add_argument('--config', required=True)
    parser.add_argument('--specs', default='[]', help='JSON list of boost variant strings')
    parser.add_argument('--iters', type=int, required=True)
    parser.add_argument('--warmup', type=int, required=True)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--replay', type=int, default=0, help='cache N batches and replay')
    parser.add_argument('--threads', type=int, default=0, help='main torch threads (0: auto)')
    parser.add_argument('--trace-iters', type=int, default=0,
                        help='profile N iterations after the measured ones')
    parser.add_argument('--work-dir', required=True)
    parser.add_argument('--out', required=True, help='result JSON path')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    try:
        result = run_variant(args.config, json.loads(args.specs), iters=args.iters,
                             warmup=args.warmup, seed=args.seed, work_dir=args.work_dir,
                             replay=args.replay, threads=args.threads,
                             trace_iters=args.trace_iters)
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
