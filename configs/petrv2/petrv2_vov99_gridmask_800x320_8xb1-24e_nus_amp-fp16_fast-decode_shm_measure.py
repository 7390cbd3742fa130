# PETRv2 V2-99 800x320, all exact GPU boosts on, with the measurement hooks.
# One fragment per _base_ list (mmengine rejects keys repeated among bases); the
# other boosts merge into its bevboost_boosts dict here.
_base_ = ['./petrv2_vov99_gridmask_800x320_8xb1-24e_nus_fast-decode_shm.py']
bevboost_boosts = dict(amp=dict(dtype='float16', loss_scale=512.), measure=dict())  # as published
