# Boost fragment: skip optimizer steps whose loss or gradients are not finite, in fp32 and bf16 as
# under fp16's loss scaler (counted and logged with the loss terms); stop after 50 in a row; never
# save a checkpoint with non-finite parameters. The amp boost includes it.
bevboost_boosts = dict(nan_guard=dict())
