# Boost fragment: the kit's fast multi-view JPEG decode. Replaces the stock loader, folds the
# model's resize/crop/flip/rotate into it (bevboost.data.fold), and where the training process
# has CUDA + nvJPEG/DALI ships encoded bytes from the workers and decodes on the GPU there.
bevboost_boosts = dict(fast_decode=dict())
