# BEVFusion LiDAR stage: the 32-sample reference batch on 2 GPUs via accumulation.
_base_ = [
    './bevfusion_lidar_voxel0075_second_secfpn_8xb4-cyclic-20e_nus.py',
    '../_base_/boosts/accum_plan.py',
]
