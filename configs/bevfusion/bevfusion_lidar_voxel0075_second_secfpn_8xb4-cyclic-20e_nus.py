# BEVFusion stage 1 (LiDAR only, TransFusion-L), 4 samples x 8 GPUs, 20 epochs.
# Needs mmdetection3d's projects/BEVFusion: export MMDET3D_ROOT=<mmdetection3d checkout>
# (docs/bevfusion.md); bevboost_bevfusion.project raises a clear error without it.
_base_ = [
    '../_base_/default_runtime.py',
    '../_base_/models/bevfusion_lidar_voxel0075.py',
    '../_base_/datasets/nus-bevfusion.py',
    '../_base_/schedules/bevfusion_lidar_cyclic_20e.py',
]
custom_imports = dict(imports=['bevboost', 'bevboost_bevfusion.project'],
                      allow_failed_imports=False)
default_hooks = dict(logger=dict(type='LoggerHook', interval=50),
                     checkpoint=dict(type='CheckpointHook', interval=5))
custom_hooks = [dict(type='DisableObjectSampleHook', disable_after_epoch=15)]
# The published recipe this config reproduces (8 GPUs x 4 samples, AdamW lr 1e-4);
# `bevboost plan` maps it onto other hardware.
bevboost_recipe = dict(reference_batch=32, reference_lr=1e-4, gpus=8, per_gpu_batch=4)
