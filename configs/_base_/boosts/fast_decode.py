# Boost fragment: the kit's fast multi-view JPEG decode in the loading transform.
bevboost_boosts = dict(fast_decode=dict())
