# PETRv2 V2-99 800x320 with the kit's fast JPEG decode and shared-memory batches.
_base_ = [
    './petrv2_vov99_gridmask_800x320_8xb1-24e_nus.py',
    '../_base_/boosts/fast_decode.py',
    '../_base_/boosts/shm_loader.py',
]
