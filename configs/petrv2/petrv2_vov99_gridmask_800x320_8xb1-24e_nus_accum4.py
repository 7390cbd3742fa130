# PETRv2 V2-99 800x320: the 8-sample reference batch on 2 GPUs via 4-step accumulation.
_base_ = [
    './petrv2_vov99_gridmask_800x320_8xb1-24e_nus.py',
    '../_base_/boosts/accum_plan.py',
]
