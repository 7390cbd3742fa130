"""mmdet's DETR decoder with optional per-layer activation checkpointing.

PETRv2's recipe checkpoints every decoder layer (``with_cp=True`` in its
``PETRTransformerDecoderLayer``): the 900 queries x 12 views x (20 x 50)
keys cross-attention maps are recomputed in the backward pass instead of
kept, trading about one extra decoder forward for their memory. mmdet's
``DetrTransformerDecoder`` has no such switch; this subclass adds it and
keeps its layers, parameter names and outputs.
"""
from __future__ import annotations

import torch
import torch.utils.checkpoint as cp
from torch import Tensor

from mmdet.models.layers.transformer import DetrTransformerDecoder


class CheckpointedDetrDecoder(DetrTransformerDecoder):
    """``DetrTransformerDecoder`` + ``with_cp``: checkpoint each layer while training."""

    def __init__(self, *args, with_cp: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.with_cp = with_cp

    def forward(self, query: Tensor, key: Tensor, value: Tensor, query_pos: Tensor,
                key_pos: Tensor, key_padding_mask: Tensor, **kwargs) -> Tensor:
        if not (self.with_cp and self.training and torch.is_grad_enabled()):
            return super().forward(query, key, value, query_pos, key_pos, key_padding_mask,
                                   **kwargs)
        intermediate = []
        for layer in self.layers:
            query = cp.checkpoint(layer, query, key=key, value=value, query_pos=query_pos,
                                  key_pos=key_pos, key_padding_mask=key_padding_mask,
                                  use_reentrant=False, **kwargs)
            if self.return_intermediate:
                intermediate.append(self.post_norm(query))
        if self.return_intermediate:
            return torch.stack(intermediate)
        return self.post_norm(query).unsqueeze(0)
