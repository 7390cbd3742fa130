# Boost fragment: exact gradient accumulation, 4 micro-batches per optimizer
# step, e.g. the 8-GPU reference batch on 2 GPUs with the same per-GPU batch.
# Schedulers count optimizer steps; auto_scale_lr sees the effective batch.
bevboost_boosts = dict(accum=dict(counts=4))
