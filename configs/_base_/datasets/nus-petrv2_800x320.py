# nuScenes, 6 cameras x 2 frames (current + previous, ego-motion aligned), 800x320.
dataset_type = 'PETRv2NuScenesDataset'
data_root = 'data/nuscenes/'
class_names = [
    'car', 'truck', 'construction_vehicle', 'bus', 'trailer', 'barrier',
    'motorcycle', 'bicycle', 'pedestrian', 'traffic_cone'
]
metainfo = dict(classes=class_names)
input_modality = dict(use_lidar=False, use_camera=True)
backend_args = None
num_views = 12  # 6 cameras x (current, previous)
# images stay uint8 through resize and worker IPC (4x less); the data preprocessor casts
# resize_lim is relative to the scale that covers final_dim: 0.47-0.625 at 1600x900
ida_aug_conf = dict(final_dim=(320, 800), resize_lim=(0.94, 1.25), bot_pct_lim=(0.0, 0.0),
                    rand_flip=True)
meta_keys = ('img_path', 'ori_shape', 'img_shape', 'pad_shape', 'lidar2img', 'cam2img',
             'box_type_3d', 'sample_idx', 'token', 'timestamp', 'num_views', 'has_prev_frame',
             'prev_time_gap')
data_prefix = dict(
    pts='samples/LIDAR_TOP', sweeps='sweeps/LIDAR_TOP',
    CAM_FRONT='samples/CAM_FRONT', CAM_FRONT_LEFT='samples/CAM_FRONT_LEFT',
    CAM_FRONT_RIGHT='samples/CAM_FRONT_RIGHT', CAM_BACK='samples/CAM_BACK',
    CAM_BACK_RIGHT='samples/CAM_BACK_RIGHT', CAM_BACK_LEFT='samples/CAM_BACK_LEFT')

train_pipeline = [
    dict(type='LoadMultiViewImageFromFiles', to_float32=False, num_views=num_views,
         backend_args=backend_args),
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True, with_attr_label=False),
    dict(type='ObjectRangeFilter', point_cloud_range=[-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]),
    dict(type='ObjectNameFilter', classes=class_names),
    dict(type='MultiViewResizeCropFlip', training=True, **ida_aug_conf),
    dict(type='BEVRandomRotScale', rot_range=(-0.3925, 0.3925), scale_ratio_range=(0.95, 1.05),
         training=True),
    dict(type='Pack3DDetInputs', keys=['img', 'gt_bboxes_3d', 'gt_labels_3d'],
         meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='LoadMultiViewImageFromFiles', to_float32=False, num_views=num_views,
         backend_args=backend_args),
    dict(type='MultiViewResizeCropFlip', training=False, **ida_aug_conf),
    dict(type='Pack3DDetInputs', keys=['img'], meta_keys=meta_keys),
]

train_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type, data_root=data_root, ann_file='nuscenes_infos_train.pkl',
        data_prefix=data_prefix, pipeline=train_pipeline, metainfo=metainfo,
        modality=input_modality, test_mode=False, use_valid_flag=True, box_type_3d='LiDAR',
        num_prev_frames=1, backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type, data_root=data_root, ann_file='nuscenes_infos_val.pkl',
        data_prefix=data_prefix, pipeline=test_pipeline, metainfo=metainfo,
        modality=input_modality, test_mode=True, box_type_3d='LiDAR',
        num_prev_frames=1, backend_args=backend_args))
test_dataloader = val_dataloader
val_evaluator = dict(type='NuScenesMetric', data_root=data_root,
                     ann_file=data_root + 'nuscenes_infos_val.pkl', metric='bbox',
                     backend_args=backend_args)
test_evaluator = val_evaluator
