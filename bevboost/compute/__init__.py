"""Exact compute boosts: ``compile``, ``fused-optim``, ``channels-last``, ``loader``.

Each switches on a lever PyTorch or mmengine already has (mmengine's
``compile`` key / ``torch.compile`` in place, the optimizers' ``fused`` and
``foreach`` implementations, ``channels_last`` memory format, DataLoader
worker settings), refuses where it cannot apply, and logs every fallback
through mmengine's logger. One module per boost; importing this package
registers them.
"""
from bevboost.compute import channels_last, compile_model, fused_optim, loader  # noqa: F401
