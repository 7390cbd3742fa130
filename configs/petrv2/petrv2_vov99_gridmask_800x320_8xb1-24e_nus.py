# PETRv2, VoVNetV2-99, two frames, 800x320, 1 sample x 8 GPUs, 24 epochs.
# Initialise the backbone from the published FCOS3D-pretrained V2-99 weights: set
#   load_from = 'ckpts/fcos3d_vovnet_imgbackbone-remapped.pth'
# (PETR's file, keys under img_backbone.) or give the backbone
#   init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.bottom_up.')
# for a DD3D checkpoint. Published key names are renamed on load; the log says
# "img_backbone: N of N tensors loaded" and an incomplete backbone is an error
# (img_backbone.allow_partial_weights=True accepts it).
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
