# Boost fragment: JPEG decode with NVIDIA DALI (nvidia-dali): `mixed` (GPU) in the training
# process on CUDA, CPU DALI in the loader workers elsewhere; the resize/crop is folded as with
# fast_decode.
bevboost_boosts = dict(dali=dict())
