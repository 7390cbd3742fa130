"""Train configs the way MMDetection3D's ``tools/train.py`` does, never importing bevboost.

Usage: ``python train_like_tools.py JOBS.json`` where JOBS is a list of
``{"config": path, "work_dir": path, "route": "tools" | "from_cfg"}``. Route
``tools`` is tools/train.py (``RUNNERS.build`` when ``runner_type`` is set,
else ``Runner.from_cfg``); ``from_cfg`` always calls ``Runner.from_cfg``.
Prints one JSON list: per job, facts read off the built runner, or the error.
"""
import json
import sys
import traceback

import torch
from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner


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
    )


def run(job: dict) -> dict:
    cfg = Config.fromfile(job['config'])
    cfg.work_dir = job['work_dir']
    out = dict(bevboost_imported_by_config='bevboost' in sys.modules)
    if job['route'] == 'tools' and 'runner_type' in cfg:
        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    runner.train()
    out.update(facts(runner))
    return out


def main() -> int:
    if 'bevboost' in sys.modules:
        raise RuntimeError('the launcher itself must not import bevboost')
    torch.set_num_threads(1)
    results = []
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    for job in jobs:
        try:
            results.append(dict(run(job), ok=True))
        except Exception as exc:  # reported to the test, which asserts on it
            results.append(dict(ok=False, error=f'{type(exc).__name__}: {exc}',
                                traceback=traceback.format_exc()[-3000:]))
    print('RESULTS ' + json.dumps(results))
    return 0


if __name__ == '__main__':
    sys.exit(main())
