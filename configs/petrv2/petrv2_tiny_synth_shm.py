# Tiny PETRv2 with shared-memory batch transport from loader workers.
_base_ = [
    './petrv2_tiny_synth.py',
    '../_base_/boosts/shm_loader.py',
]
