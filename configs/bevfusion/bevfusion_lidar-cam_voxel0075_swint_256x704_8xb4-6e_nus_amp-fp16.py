# BEVFusion LiDAR+camera with fp16 autocast (CUDA).
_base_ = [
    './bevfusion_lidar-cam_voxel0075_swint_256x704_8xb4-6e_nus.py',
    '../_base_/boosts/amp_fp16.py',
]
