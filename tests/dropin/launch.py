"""Launching configs the way a user does, for the drop-in tests: the user's configs and a
fresh process that trains them like MMDetection3D's ``tools/train.py`` (never importing
bevboost itself). Shared by the drop-in, recipe-route and contract tests; ``plainmodels``
and ``train_like_tools.py`` beside it are the user's side and never import bevboost.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

PLAIN_TOY = '''
custom_imports = dict(imports=['plainmodels'], allow_failed_imports=False)
default_scope = 'mmengine'
model = dict(type='PlainRegressor')
train_dataloader = dict(batch_size=4, num_workers=0,
                        sampler=dict(type='InfiniteSampler', shuffle=False),
                        dataset=dict(type='PlainRegressionDataset', num_samples=32),
                        collate_fn=dict(type='default_collate'))
train_cfg = dict(by_epoch=False, max_iters=3, val_interval=1000)
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
param_scheduler = [dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=2)]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1000))
auto_scale_lr = dict(enable=False, base_batch_size=8)
randomness = dict(seed=0)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
log_level = 'WARNING'
'''

#: the toy on the user's own backbone with a with_cp switch (the checkpoint boost)
PLAIN_BACKBONE = PLAIN_TOY.replace(
    "model = dict(type='PlainRegressor')",
    "model = dict(type='PlainBackboneRegressor', img_backbone=dict(type='PlainMLPBackbone'))")

PLAIN_CAMERA = '''
custom_imports = dict(imports=['plainmodels'], allow_failed_imports=False)
default_scope = 'mmengine'
model = dict(type='PlainCameraNet')
train_pipeline = [
    dict(type='LoadMultiViewImageFromFiles', to_float32=False, num_views=6),
    dict(type='ResizeCropFlipImage', training=True,
         data_aug_conf=dict(final_dim=(32, 88), resize_lim=(0.25, 0.3), bot_pct_lim=(0.0, 0.0),
                            rot_lim=(0.0, 0.0), rand_flip=True)),
    dict(type='PackCameraImages'),
]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        sampler=dict(type='InfiniteSampler', shuffle=True),
                        dataset=dict(type='PlainCameraDataset', data_root={root!r},
                                     ann_file='nuscenes_infos_train.pkl', serialize_data=False,
                                     pipeline=train_pipeline),
                        collate_fn=dict(type='default_collate'))
train_cfg = dict(by_epoch=False, max_iters=2, val_interval=1000)
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01))
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1000))
randomness = dict(seed=0)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
log_level = 'WARNING'
'''

#: the camera config with the user's own loader (shm alone: nothing mmdet3d to build)
PLAIN_CAMERA_OWN_LOADER = PLAIN_CAMERA.replace(
    """    dict(type='LoadMultiViewImageFromFiles', to_float32=False, num_views=6),
    dict(type='ResizeCropFlipImage', training=True,
         data_aug_conf=dict(final_dim=(32, 88), resize_lim=(0.25, 0.3), bot_pct_lim=(0.0, 0.0),
                            rot_lim=(0.0, 0.0), rand_flip=True)),""",
    "    dict(type='PlainLoadMultiViewImages', size=(32, 88)),")


def train_fresh(jobs: list[dict], tmp_path: Path) -> list[dict]:
    """Run ``jobs`` in one new interpreter that imports only what the configs import."""
    path = tmp_path / 'jobs.json'
    path.write_text(json.dumps(jobs))
    env = dict(os.environ, PYTHONPATH=str(HERE), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, str(HERE / 'train_like_tools.py'), str(path)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('RESULTS ')]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len('RESULTS '):])


