# Boost fragment: activation checkpointing of the image backbone and the transformer decoder
# through their own with_cp switches. Less activation memory, a slower step (recomputation):
# the lever when the per-GPU batch does not fit. Exact (same math).
bevboost_boosts = dict(checkpoint=dict())
