# PETRv2 V2-99 800x320 as published: fp16 autocast with a static loss scale of 512
# (the published Fp16OptimizerHook(loss_scale=512.)), through the kit's amp boost:
# overflowing steps are skipped and counted, the scale stays 512 (CUDA).
_base_ = [
    './petrv2_vov99_gridmask_800x320_8xb1-24e_nus.py',
    '../_base_/boosts/amp_fp16.py',
]
bevboost_boosts = dict(amp=dict(dtype='float16', loss_scale=512.))
