# Boost fragment: channels-last (NHWC) memory format for the camera backbone's convolutions.
bevboost_boosts = dict(channels_last=dict())
