# Tiny PETRv2 with exact 2-step gradient accumulation.
_base_ = [
    './petrv2_tiny_synth.py',
    '../_base_/boosts/accum_plan.py',
]
bevboost_boosts = dict(accum=dict(counts=2, per_gpu_batch=1))
