# Boost fragment: GPU JPEG decode/resize with NVIDIA DALI (needs CUDA + nvidia-dali).
bevboost_boosts = dict(dali=dict())
