# PETRv2, VoVNetV2-99, two frames, 800x320, 1 sample x 8 GPUs, 24 epochs.
# Initialise the backbone from FCOS3D-pretrained V2-99 weights (load_from).
_base_ = [
    '../_base_/default_runtime.py',
    '../_base_/models/petrv2_vov99.py',
    '../_base_/datasets/nus-petrv2_800x320.py',
    '../_base_/schedules/petrv2_adamw_cosine_24e.py',
]
custom_imports = dict(imports=['bevboost', 'bevboost_petr'], allow_failed_imports=False)
randomness = dict(seed=1, deterministic=False, diff_rank_seed=False)
find_unused_parameters = False
# The published recipe this config reproduces (PETRv2 VoVNet-99 800x320: 8 GPUs x 1 sample,
# AdamW lr 2e-4); `bevboost plan` maps it onto other hardware.
bevboost_recipe = dict(reference_batch=8, reference_lr=2e-4, gpus=8, per_gpu_batch=1)
