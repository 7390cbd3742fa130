# Boost fragment: loader settings (persistent workers, pinned memory on CUDA, prefetch depth).
bevboost_boosts = dict(loader=dict())
