# BEVFusion LiDAR+camera with fp16 autocast (CUDA).
_base_ = [
    './bevfusion_lidar-cam_voxel0075_swint_256x704_8xb4-6e_nus.py',
    '../_base_/boosts/amp_fp16.py',
]
# The LSS view transform (frustum geometry, depth x feature outer product, BEV
# pooling of thousands of points per cell) stays in float32, as upstream's
# force_fp32 did.
bevboost_boosts = dict(amp=dict(fp32_modules=['DepthLSSTransform']))
