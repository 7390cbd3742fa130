# Boost fragment: decoded batches travel from loader workers through shared memory.
bevboost_boosts = dict(shm=dict())
