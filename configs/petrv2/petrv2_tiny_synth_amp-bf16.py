# Tiny PETRv2 with bf16 autocast (slow on AVX2-only CPUs: keep runs short).
_base_ = [
    './petrv2_tiny_synth.py',
    '../_base_/boosts/amp_bf16.py',
]
