# BEVFusion LiDAR stage with fp16 autocast (CUDA).
_base_ = [
    './bevfusion_lidar_voxel0075_second_secfpn_8xb4-cyclic-20e_nus.py',
    '../_base_/boosts/amp_fp16.py',
]
