# Boost fragment: a torch.profiler window (Chrome trace and TensorBoard profile in the work dir).
bevboost_boosts = dict(profile=dict())
