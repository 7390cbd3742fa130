"""Shared fixtures: a small synthetic nuScenes tree and a CPU-sized PETRv2 config."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / 'configs' / 'petrv2' / 'petrv2_tiny_synth.py'


@pytest.fixture(scope='session')
def synth_root(tmp_path_factory) -> Path:
    """2 scenes x 8 samples (8 train, 8 val) at 128x352, written once per session."""
    synth = pytest.importorskip('bevboost.synth')
    out = tmp_path_factory.mktemp('synth_nuscenes')
    return synth.synthesize_nuscenes(out, scenes=2, samples_per_scene=8, image_size=(128, 352))


def tiny_config(data_root: Path, work_dir: Path, *, max_iters: int, lr: float = 2e-3,
                config: Path = TINY_CONFIG, num_workers: int = 0, batch_size: int = 2):
    """The bundled tiny config pointed at ``data_root``, iteration-based, no workers."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(config))
    root = str(data_root) + '/'
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg[key]
        loader.dataset.data_root = root
        loader.num_workers = num_workers
        loader.persistent_workers = False
        loader.batch_size = batch_size
    for key in ('val_evaluator', 'test_evaluator'):
        cfg[key].data_root = root
        cfg[key].ann_file = root + 'nuscenes_infos_val.pkl'
    cfg.train_dataloader.sampler = dict(type='InfiniteSampler', shuffle=True)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=10 ** 9)
    cfg.optim_wrapper.optimizer.lr = lr
    cfg.param_scheduler = [dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False,
                                begin=0, end=max(1, max_iters // 4))]
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1)
    cfg.default_hooks.visualization = dict(type='Det3DVisualizationHook')
    cfg.log_processor = dict(type='LogProcessor', window_size=1, by_epoch=False)
    cfg.log_level = 'WARNING'
    cfg.randomness = dict(seed=0)
    cfg.work_dir = str(work_dir)
    if batch_size * 1 != cfg.bevboost_recipe.reference_batch:
        # these tests compare runs at one batch among themselves, not against the published
        # recipe: the kit's recipe check says so in a WARNING line instead of stopping
        cfg.bevboost_recipe_check = 'warn'
    return cfg


@pytest.fixture
def make_tiny_config():
    """:func:`tiny_config` as a fixture (test folders are not packages)."""
    return tiny_config


@pytest.fixture
def one_torch_thread():
    """Train with one intra-op thread: on a shared 2-core box, two OpenMP threads
    competing with another busy process ran the tiny model ~20x slower (measured)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
