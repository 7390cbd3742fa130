# Boost fragment: the optimizer's fused kernel (fused=True: Adam, AdamW, SGD, on CUDA and CPU),
# else its foreach implementation; refuses what neither takes (e.g. differentiable=True).
bevboost_boosts = dict(fused_optim=dict())
