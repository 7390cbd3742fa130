# PETRv2 V2-99 800x320 with the kit's fast JPEG decode and shared-memory batches.
# mmengine rejects a key defined by two files of one _base_ list, so only one
# boost fragment can be a base; further boosts are added to the merged dict here.
_base_ = [
    './petrv2_vov99_gridmask_800x320_8xb1-24e_nus.py',
    '../_base_/boosts/fast_decode.py',
]
bevboost_boosts = dict(shm=dict())
