# Tiny PETRv2 with the kit's fast multi-view JPEG decode.
_base_ = [
    './petrv2_tiny_synth.py',
    '../_base_/boosts/fast_decode.py',
]
