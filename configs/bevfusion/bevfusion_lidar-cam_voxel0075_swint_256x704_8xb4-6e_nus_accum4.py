# BEVFusion LiDAR+camera: the 32-sample reference batch on 2 GPUs via accumulation.
_base_ = [
    './bevfusion_lidar-cam_voxel0075_swint_256x704_8xb4-6e_nus.py',
    '../_base_/boosts/accum_plan.py',
]
