# BEVFusion LiDAR+camera with GPU JPEG decode through NVIDIA DALI.
_base_ = [
    './bevfusion_lidar-cam_voxel0075_swint_256x704_8xb4-6e_nus.py',
    '../_base_/boosts/dali.py',
]
