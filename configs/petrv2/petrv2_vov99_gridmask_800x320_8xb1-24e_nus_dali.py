# PETRv2 V2-99 800x320 with GPU JPEG decode through NVIDIA DALI.
_base_ = [
    './petrv2_vov99_gridmask_800x320_8xb1-24e_nus.py',
    '../_base_/boosts/dali.py',
]
