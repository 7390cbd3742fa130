# Boost fragment: exact gradient accumulation in micro-batches of 1 sample, 4 per
# optimizer step. BEVFusion (4 samples/GPU): same batch, ~4x less activation
# memory. PETRv2 (1 sample/GPU): 4 samples per GPU step, i.e. the 8-sample
# reference batch on 2 GPUs. Schedulers count optimizer steps.
bevboost_boosts = dict(accum=dict(counts=4, per_gpu_batch=1))
