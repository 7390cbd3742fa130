"""PETRv2 detector: image backbone + neck per view, then the PETRv2 head.

Inputs are ``(B, N*F, 3, H, W)``: N cameras for each of F frames (current
first), each view with its own ``lidar2img`` in the current LiDAR frame, so the
detector itself is frame-agnostic; the temporal alignment lives in the
dataset (:mod:`.dataset`) and the position encoder.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor

from mmdet3d.models.detectors.base import Base3DDetector
from mmdet3d.registry import MODELS
from mmdet3d.structures import Det3DDataSample

from .grid_mask import GridMask
from .petrv2_weights import attach_part_loading


@MODELS.register_module()
class PETRv2(Base3DDetector):
    """Multi-view, multi-frame camera-only 3D detector (arXiv 2206.01256).

    Args:
        img_backbone: image backbone (``VoVNet`` or mmdet ``ResNet``).
        img_neck: FPN-style neck; ``allow_partial_weights=True`` in it accepts a
            checkpoint that covers the neck partly (the keys are checked on load
            like the backbone's and the head's, see :mod:`.petrv2_weights`).
        pts_bbox_head: :class:`PETRv2Head` config.
        use_grid_mask: GridMask augmentation on training images.
        grid_mask: options of :class:`GridMask`.
    """

    def __init__(self, img_backbone: dict, pts_bbox_head: dict, img_neck: dict | None = None,
                 use_grid_mask: bool = False, grid_mask: dict | None = None,
                 train_cfg: dict | None = None, test_cfg: dict | None = None,
                 data_preprocessor: dict | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.img_backbone = MODELS.build(img_backbone)
        self.img_neck = None
        if img_neck:
            neck = dict(img_neck)
            allow_partial = bool(neck.pop('allow_partial_weights', False))
            self.img_neck = MODELS.build(neck)
            attach_part_loading(self.img_neck, 'img_neck', allow_partial)
        head = dict(pts_bbox_head)
        head.setdefault('train_cfg', train_cfg)
        head.setdefault('test_cfg', test_cfg)
        self.pts_bbox_head = MODELS.build(head)
        self.use_grid_mask = use_grid_mask
        self.grid_mask = GridMask(**(grid_mask or {}))

    def extract_feat(self, batch_inputs_dict: dict, metas: Sequence[dict]) -> list[Tensor]:
        """Per-view features reshaped to ``(B, N, C, H, W)`` per neck level."""
        imgs = batch_inputs_dict.get('imgs')
        if imgs is None:
            raise ValueError("PETRv2 needs camera images in inputs['imgs']")
        if imgs.dim() != 5:
            raise ValueError(f'expected images (B, N, C, H, W), got shape {tuple(imgs.shape)}')
        b, n = imgs.shape[:2]
        x = imgs.flatten(0, 1)
        if self.use_grid_mask and self.training:
            x = self.grid_mask(x)
        feats = self.img_backbone(x)
        if isinstance(feats, dict):
            feats = list(feats.values())
        if self.img_neck is not None:
            feats = self.img_neck(feats)
        return [f.view(b, n, *f.shape[1:]) for f in feats]

    @staticmethod
    def _metas(batch_data_samples: Sequence[Det3DDataSample]) -> list[dict]:
        return [s.metainfo for s in batch_data_samples]

    def loss(self, batch_inputs_dict: dict, batch_data_samples: Sequence[Det3DDataSample],
             **kwargs) -> dict[str, Tensor]:
        metas = self._metas(batch_data_samples)
        feats = self.extract_feat(batch_inputs_dict, metas)
        gts = [s.gt_instances_3d for s in batch_data_samples]
        return self.pts_bbox_head.loss(feats, metas, gts)

    def predict(self, batch_inputs_dict: dict, batch_data_samples: Sequence[Det3DDataSample],
                **kwargs) -> list[Det3DDataSample]:
        metas = self._metas(batch_data_samples)
        feats = self.extract_feat(batch_inputs_dict, metas)
        results = self.pts_bbox_head.predict(feats, metas)
        return self.add_pred_to_datasample(batch_data_samples, data_instances_3d=results)

    def _forward(self, batch_inputs_dict: dict,
                 batch_data_samples: Sequence[Det3DDataSample] | None = None, **kwargs):
        metas = self._metas(batch_data_samples or [])
        return self.pts_bbox_head(self.extract_feat(batch_inputs_dict, metas), metas)
