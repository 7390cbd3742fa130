# Tiny PETRv2 with the measurement hooks (data stall vs compute, samples/s).
_base_ = [
    './petrv2_tiny_synth.py',
    '../_base_/boosts/measure.py',
]
