# PETRv2 V2-99 800x320, all exact GPU boosts on, with the measurement hooks.
_base_ = [
    './petrv2_vov99_gridmask_800x320_8xb1-24e_nus.py',
    '../_base_/boosts/amp_fp16.py',
    '../_base_/boosts/fast_decode.py',
    '../_base_/boosts/shm_loader.py',
    '../_base_/boosts/measure.py',
]
