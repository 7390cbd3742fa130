# PETRv2 published schedule: 1 sample x 8 GPUs, AdamW 2e-4 (backbone x0.1),
# weight decay 0.01, grad-norm clip 35, 500-iteration linear warmup from 1/3,
# cosine annealing to 1e-3 of the base LR over 24 epochs.
num_epochs = 24
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'img_backbone': dict(lr_mult=0.1)}),
    clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=num_epochs, T_max=num_epochs,
         eta_min_ratio=1e-3, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=num_epochs, val_interval=num_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# The reference batch is 1 sample x 8 GPUs = 8 (mmdet3d's PETR config says 32).
auto_scale_lr = dict(enable=False, base_batch_size=8)
