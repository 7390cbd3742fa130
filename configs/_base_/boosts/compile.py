# Boost fragment: torch.compile. Camera detectors (an `img_backbone` in the model): the backbone
# and neck, compiled in place (parameter names unchanged); other models: the whole train_step
# through mmengine's own `compile` key. The first iteration pays the compilation.
bevboost_boosts = dict(compile=dict())
