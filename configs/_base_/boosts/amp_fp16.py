# Boost fragment: fp16 autocast with dynamic loss scaling (CUDA tensor cores).
bevboost_boosts = dict(amp=dict(dtype='float16'))
