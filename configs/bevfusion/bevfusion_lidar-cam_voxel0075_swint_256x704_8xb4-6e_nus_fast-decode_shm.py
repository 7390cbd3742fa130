# BEVFusion LiDAR+camera with fast JPEG decode and shared-memory batches.
# One fragment per _base_ list (mmengine rejects keys repeated among bases).
_base_ = [
    './bevfusion_lidar-cam_voxel0075_swint_256x704_8xb4-6e_nus.py',
    '../_base_/boosts/fast_decode.py',
]
bevboost_boosts = dict(shm=dict())
