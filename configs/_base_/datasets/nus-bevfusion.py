# nuScenes for BEVFusion's LiDAR stage: 10 sweeps, GT-paste, CBGS, 4 samples x 8 GPUs.
dataset_type = 'NuScenesDataset'
data_root = 'data/nuscenes/'
class_names = [
    'car', 'truck', 'construction_vehicle', 'bus', 'trailer', 'barrier',
    'motorcycle', 'bicycle', 'pedestrian', 'traffic_cone'
]
metainfo = dict(classes=class_names)
point_cloud_range = [-54.0, -54.0, -5.0, 54.0, 54.0, 3.0]
input_modality = dict(use_lidar=True, use_camera=False)
backend_args = None
data_prefix = dict(
    pts='samples/LIDAR_TOP', sweeps='sweeps/LIDAR_TOP',
    CAM_FRONT='samples/CAM_FRONT', CAM_FRONT_LEFT='samples/CAM_FRONT_LEFT',
    CAM_FRONT_RIGHT='samples/CAM_FRONT_RIGHT', CAM_BACK='samples/CAM_BACK',
    CAM_BACK_RIGHT='samples/CAM_BACK_RIGHT', CAM_BACK_LEFT='samples/CAM_BACK_LEFT')
meta_keys = [
    'cam2img', 'ori_cam2img', 'lidar2cam', 'lidar2img', 'cam2lidar', 'ori_lidar2img',
    'img_aug_matrix', 'box_type_3d', 'sample_idx', 'lidar_path', 'img_path',
    'transformation_3d_flow', 'pcd_rotation', 'pcd_scale_factor', 'pcd_trans',
    'lidar_aug_matrix', 'num_pts_feats'
]
test_meta_keys = meta_keys + ['num_views']
points_loader = dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=5, use_dim=5,
                     backend_args=backend_args)
sweeps_loader = dict(type='LoadPointsFromMultiSweeps', sweeps_num=9, load_dim=5, use_dim=5,
                     pad_empty_sweeps=True, remove_close=True, backend_args=backend_args)
db_sampler = dict(
    data_root=data_root,
    info_path=data_root + 'nuscenes_dbinfos_train.pkl',
    rate=1.0,
    prepare=dict(filter_by_difficulty=[-1],
                 filter_by_min_points={name: 5 for name in class_names}),
    classes=class_names,
    sample_groups=dict(car=2, truck=3, construction_vehicle=7, bus=4, trailer=6, barrier=2,
                       motorcycle=6, bicycle=6, pedestrian=2, traffic_cone=2),
    points_loader=dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=5,
                       use_dim=[0, 1, 2, 3, 4], backend_args=backend_args))
train_pipeline = [
    points_loader,
    sweeps_loader,
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True, with_attr_label=False),
    dict(type='ObjectSample', db_sampler=db_sampler),
    dict(type='GlobalRotScaleTrans', scale_ratio_range=[0.9, 1.1],
         rot_range=[-0.78539816, 0.78539816], translation_std=0.5),
    dict(type='BEVFusionRandomFlip3D'),
    dict(type='PointsRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ObjectRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ObjectNameFilter', classes=class_names),
    dict(type='PointShuffle'),
    dict(type='Pack3DDetInputs',
         keys=['points', 'img', 'gt_bboxes_3d', 'gt_labels_3d', 'gt_bboxes', 'gt_labels'],
         meta_keys=meta_keys),
]
test_pipeline = [
    points_loader,
    sweeps_loader,
    dict(type='PointsRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='Pack3DDetInputs', keys=['img', 'points', 'gt_bboxes_3d', 'gt_labels_3d'],
         meta_keys=test_meta_keys),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='CBGSDataset',
        dataset=dict(
            type=dataset_type, data_root=data_root, ann_file='nuscenes_infos_train.pkl',
            pipeline=train_pipeline, metainfo=metainfo, modality=input_modality,
            test_mode=False, data_prefix=data_prefix, use_valid_flag=True,
            box_type_3d='LiDAR', backend_args=backend_args)))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type, data_root=data_root, ann_file='nuscenes_infos_val.pkl',
        pipeline=test_pipeline, metainfo=metainfo, modality=input_modality,
        data_prefix=data_prefix, test_mode=True, box_type_3d='LiDAR',
        backend_args=backend_args))
test_dataloader = val_dataloader
val_evaluator = dict(type='NuScenesMetric', data_root=data_root,
                     ann_file=data_root + 'nuscenes_infos_val.pkl', metric='bbox',
                     backend_args=backend_args)
test_evaluator = val_evaluator
