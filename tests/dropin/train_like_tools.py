"""Train configs the way MMDetection3D's ``tools/train.py`` does, never importing bevboost.

Usage: ``python train_like_tools.py JOBS.json`` where JOBS is a list of
``{"config": path, "work_dir": path, "route": "tools" | "from_cfg"}``. Route
``tools`` is tools/train.py (``RUNNERS.build`` when ``runner_type`` is set,
else ``Runner.from_cfg``); ``from_cfg`` always calls ``Runner.from_cfg``.
Optional job keys reproduce what MMDetection3D v1.4.0's ``tools/train.py``
flags do to the config before the build (written from its public behaviour):
``"cfg_options": ["key=value", ...]`` (``--cfg-options``, parsed by mmengine's
``DictAction`` and merged first), ``"amp": true`` (``--amp``: an ``OptimWrapper``
becomes ``AmpOptimWrapper`` with ``loss_scale='dynamic'``; any other type is
refused with an AssertionError; an ``AmpOptimWrapper`` is left with a warning),
``"auto_scale_lr": true`` (``--auto-scale-lr``: ``auto_scale_lr.enable = True``,
a RuntimeError when the config lacks ``enable`` or ``base_batch_size``),
``"resume": true`` (``--resume``). ``"world_size": N`` runs the job in N
processes joined by a gloo group opened before the build (mmengine's own
``init_dist`` needs CUDA); facts are rank 0's, plus every rank's LRs.
Prints one JSON list: per job, facts read off the built runner, or the error.
"""
import argparse
import json
import os
import socket
import sys
import tempfile
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.config import Config, DictAction
from mmengine.hooks import Hook
from mmengine.registry import RUNNERS
from mmengine.runner import Runner


class FirstIterationLR(Hook):
    """Records each param group's LR as iteration 1 runs (after every other hook)."""
    priority = 'LOWEST'

    def __init__(self):
        self.lrs = None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if self.lrs is None:
            self.lrs = [g['lr'] for g in runner.optim_wrapper.optimizer.param_groups]


def facts(runner) -> dict:
    wrapper = runner.optim_wrapper
    loader = runner.train_dataloader
    dataset = loader.dataset
    while not hasattr(dataset, 'pipeline') and hasattr(dataset, 'dataset'):
        dataset = dataset.dataset
    transforms = getattr(getattr(dataset, 'pipeline', None), 'transforms', [])
    report = [h for h in runner.hooks if type(h).__name__ == 'BoostReportHook']
    return dict(
        runner=type(runner).__name__,
        iter=runner.iter,
        wrapper=type(wrapper).__name__,
        cast_dtype=str(getattr(wrapper, 'cast_dtype', None)),
        accumulative_counts=getattr(wrapper, '_accumulative_counts', None),
        lr=wrapper.optimizer.defaults['lr'],
        loader=type(loader).__name__,
        batch_size=getattr(loader, 'batch_size', None),
        transforms=[type(t).__name__ for t in transforms],
        final_dims=[list(t.final_dim) for t in transforms
                    if getattr(t, 'final_dim', None) is not None],
        hooks=[type(h).__name__ for h in runner.hooks],
        verdicts=report[0].verdicts if report else None,
        recipe=getattr(report[0], 'recipe', None) if report else None,
        world_size=runner.world_size,
        loss_scale=str(getattr(wrapper, 'loss_scale', None)),
        group_lrs_initial=[g.get('initial_lr', g['lr'])
                           for g in wrapper.optimizer.param_groups],
        launch_notes=list(runner.cfg.get('bevboost_launch_notes') or []),
    )


def apply_flags(cfg: Config, job: dict) -> None:
    """What tools/train.py's flags do to the loaded config, in its order."""
    cfg.launcher = 'none'
    if job.get('cfg_options'):
        parser = argparse.ArgumentParser()
        parser.add_argument('--cfg-options', nargs='+', action=DictAction)
        cfg.merge_from_dict(parser.parse_args(['--cfg-options', *job['cfg_options']]).cfg_options)
    cfg.work_dir = job['work_dir']
    if job.get('amp'):
        if cfg.optim_wrapper.type == 'AmpOptimWrapper':
            print('AMP training is already enabled in your config.', file=sys.stderr)
        else:
            assert cfg.optim_wrapper.type == 'OptimWrapper', (
                f'--amp is only supported with OptimWrapper, got {cfg.optim_wrapper.type}')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if job.get('auto_scale_lr'):
        auto = cfg.get('auto_scale_lr')
        if not auto or 'enable' not in auto or 'base_batch_size' not in auto:
            raise RuntimeError('Can not find "auto_scale_lr" or "auto_scale_lr.enable" or '
                               '"auto_scale_lr.base_batch_size" in your configuration file.')
        cfg.auto_scale_lr.enable = True
    cfg.resume = bool(job.get('resume'))


def run(job: dict) -> dict:
    cfg = Config.fromfile(job['config'])
    out = dict(bevboost_imported_by_config='bevboost' in sys.modules)
    apply_flags(cfg, job)
    if job['route'] == 'tools' and 'runner_type' in cfg:
        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    first = FirstIterationLR()
    runner.register_hook(first)
    runner.train()
    out.update(facts(runner))
    out['first_iteration_lrs'] = first.lrs
    return out


def _rank_main(rank: int, world: int, port: int, job: dict, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try:
        result = dict(run(job), ok=True)
    except Exception as exc:
        result = dict(ok=False, error=f'{type(exc).__name__}: {exc}',
                      traceback=traceback.format_exc()[-3000:])
    with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(result, f)
    # no group teardown: a gloo group's destructor once hung joining its threads on a 2-core
    # machine; the result is written, the process ends here
    os._exit(0)


def run_distributed(job: dict) -> dict:
    world = int(job['world_size'])
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_rank_main, args=(world, port, job, out_dir), nprocs=world, join=True)
        ranks = [json.load(open(os.path.join(out_dir, f'rank{r}.json'))) for r in range(world)]
    first = dict(ranks[0])
    if first.get('ok'):
        first['rank_first_iteration_lrs'] = [r.get('first_iteration_lrs') for r in ranks]
        first['rank_errors'] = [r.get('error') for r in ranks]
    return first


def main() -> int:
    if 'bevboost' in sys.modules:
        raise RuntimeError('the launcher itself must not import bevboost')
    torch.set_num_threads(1)
    results = []
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    for job in jobs:
        try:
            if job.get('world_size'):
                results.append(run_distributed(job))
                continue
            results.append(dict(run(job), ok=True))
        except Exception as exc:  # reported to the test, which asserts on it
            results.append(dict(ok=False, error=f'{type(exc).__name__}: {exc}',
                                traceback=traceback.format_exc()[-3000:]))
    print('RESULTS ' + json.dumps(results))
    return 0


if __name__ == '__main__':
    sys.exit(main())
