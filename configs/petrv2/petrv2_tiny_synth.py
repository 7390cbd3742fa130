# Tiny PETRv2 on the kit's synthetic nuScenes (bevboost.synth): trains on a
# CPU in minutes; the subject of `bevboost bench`. 6 cameras x 2 frames at 96x256.
_base_ = [
    '../_base_/default_runtime.py',
    '../_base_/models/petrv2_tiny.py',
    '../_base_/datasets/nus-petrv2_800x320.py',
    '../_base_/schedules/petrv2_adamw_cosine_24e.py',
]
custom_imports = dict(imports=['bevboost', 'bevboost_petr'], allow_failed_imports=False)

data_root = 'data/synth_nuscenes/'
metainfo = dict(classes={{_base_.class_names}}, version='v1.0-mini')
ida_aug_conf = dict(final_dim=(96, 256), resize_lim=(1.0, 1.1), bot_pct_lim=(0.0, 0.0),
                    rand_flip=True)
train_pipeline = [
    dict(type='LoadMultiViewImageFromFiles', to_float32=False, num_views=12),
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True, with_attr_label=False),
    dict(type='ObjectRangeFilter', point_cloud_range={{_base_.point_cloud_range}}),
    dict(type='ObjectNameFilter', classes={{_base_.class_names}}),
    dict(type='MultiViewResizeCropFlip', training=True, **ida_aug_conf),
    dict(type='Pack3DDetInputs', keys=['img', 'gt_bboxes_3d', 'gt_labels_3d'],
         meta_keys={{_base_.meta_keys}}),
]
test_pipeline = [
    dict(type='LoadMultiViewImageFromFiles', to_float32=False, num_views=12),
    dict(type='MultiViewResizeCropFlip', training=False, **ida_aug_conf),
    dict(type='Pack3DDetInputs', keys=['img'], meta_keys={{_base_.meta_keys}}),
]
train_dataloader = dict(
    batch_size=2, num_workers=2,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2, num_workers=2,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(data_root=data_root, ann_file=data_root + 'nuscenes_infos_val.pkl')
test_evaluator = val_evaluator

num_epochs = 12
# the backbone starts random here: it trains at the full LR (the recipe's x0.1 is for
# pretrained weights)
optim_wrapper = dict(optimizer=dict(lr=2e-3),
                     paramwise_cfg=dict(custom_keys={'img_backbone': dict(lr_mult=1.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=num_epochs, T_max=num_epochs,
         eta_min_ratio=1e-3, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=num_epochs, val_interval=num_epochs)
auto_scale_lr = dict(enable=False, base_batch_size=2)
default_hooks = dict(logger=dict(interval=5), visualization=dict(type='Det3DVisualizationHook'))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
log_processor = dict(window_size=5)
# Its own reference recipe: 1 CPU process x 2 samples, lr 2e-3.
bevboost_recipe = dict(reference_batch=2, reference_lr=2e-3, gpus=1, per_gpu_batch=2)
