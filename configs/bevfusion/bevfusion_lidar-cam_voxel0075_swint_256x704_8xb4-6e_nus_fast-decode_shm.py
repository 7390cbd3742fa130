# BEVFusion LiDAR+camera with fast JPEG decode and shared-memory batches.
_base_ = [
    './bevfusion_lidar-cam_voxel0075_swint_256x704_8xb4-6e_nus.py',
    '../_base_/boosts/fast_decode.py',
    '../_base_/boosts/shm_loader.py',
]
