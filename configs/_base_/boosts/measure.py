# Boost fragment: per-iteration data-stall vs compute, samples/s and memory.
bevboost_boosts = dict(measure=dict())
