"""Models, datasets and a transform that know nothing of bevboost: the user's side of a drop-in.

The drop-in tests write configs that import only this module (``custom_imports =
dict(imports=['plainmodels'])``, with this folder on ``PYTHONPATH``), the way a
user's own project or an mmdet3d ``projects/`` plugin is imported. Nothing here
imports bevboost; a boosted config must import it by itself.
"""
from __future__ import annotations

import os
import pickle

import numpy as np
import torch
import torch.utils.checkpoint
from mmengine.dataset import BaseDataset
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, MODELS, TRANSFORMS
from torch import nn


@MODELS.register_module()
class PlainRegressor(BaseModel):
    """Two-layer MLP with mean-squared error; ``use_bn`` adds a BatchNorm1d."""

    def __init__(self, in_features: int = 8, hidden: int = 16, use_bn: bool = False,
                 data_preprocessor: dict | None = None):
        super().__init__(data_preprocessor=data_preprocessor)
        layers: list[nn.Module] = [nn.Linear(in_features, hidden)]
        if use_bn:
            layers.append(nn.BatchNorm1d(hidden))
        self.net = nn.Sequential(*layers, nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, inputs, targets=None, mode: str = 'tensor', **unused):
        pred = self.net(inputs.float()).squeeze(-1)
        if mode == 'loss':
            return {'loss': ((pred.float() - targets.float()) ** 2).mean()}
        return pred


@MODELS.register_module()
class PlainMLPBackbone(nn.Module):
    """MLP blocks with the usual ``with_cp`` switch (checkpoint each block while training)."""

    def __init__(self, in_features: int = 8, hidden: int = 32, blocks: int = 2,
                 with_cp: bool = False):
        super().__init__()
        self.with_cp = with_cp
        self.stem = nn.Linear(in_features, hidden)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU())
                                    for _ in range(blocks))
        self.out_features = hidden

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            if self.with_cp and self.training and x.requires_grad:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


@MODELS.register_module()
class PlainBackboneRegressor(BaseModel):
    """A regressor on a configurable ``img_backbone`` (the user's own, with ``with_cp``)."""

    def __init__(self, img_backbone: dict, data_preprocessor: dict | None = None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.img_backbone = MODELS.build(img_backbone)
        self.head = nn.Linear(self.img_backbone.out_features, 1)

    def forward(self, inputs, targets=None, mode: str = 'tensor', **unused):
        pred = self.head(self.img_backbone(inputs.float())).squeeze(-1)
        if mode == 'loss':
            return {'loss': ((pred.float() - targets.float()) ** 2).mean()}
        return pred


@DATASETS.register_module()
class PlainRegressionDataset(BaseDataset):
    """``y = w.x`` from a fixed seed."""

    def __init__(self, num_samples: int = 64, **kwargs):
        self.num_samples = num_samples
        kwargs.setdefault('serialize_data', False)
        super().__init__(**kwargs)

    def load_data_list(self) -> list[dict]:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(self.num_samples, 8, generator=gen)
        y = x @ torch.randn(8, generator=gen)
        return [dict(inputs=x[i], targets=y[i]) for i in range(self.num_samples)]


@DATASETS.register_module()
class PlainCameraDataset(BaseDataset):
    """nuScenes-style infos: per camera ``img_path`` (made absolute), ``cam2img``, ``lidar2cam``."""

    def load_data_list(self) -> list[dict]:
        with open(self.ann_file, 'rb') as f:
            infos = pickle.load(f)['data_list']
        out = []
        for info in infos:
            images = {cam: dict(v, img_path=os.path.join(self.data_root, 'samples', cam,
                                                         v['img_path']))
                      for cam, v in info['images'].items()}
            out.append(dict(images=images, token=info['token']))
        return out


@TRANSFORMS.register_module()
class PlainLoadMultiViewImages:
    """The user's own loader: read every view with OpenCV, resize to ``(H, W)``."""

    def __init__(self, size: tuple[int, int] = (32, 88)):
        self.size = tuple(size)

    def __call__(self, results: dict) -> dict:
        import cv2
        results['img'] = [cv2.resize(cv2.imread(cam['img_path']), self.size[::-1])
                          for cam in results['images'].values()]
        return results


@TRANSFORMS.register_module()
class PackCameraImages:
    """``img`` (list of HxWx3 arrays) -> ``inputs['img']`` (V, 3, H, W) uint8, as mmdet3d packs."""

    def __call__(self, results: dict) -> dict:
        imgs = np.stack([np.asarray(im) for im in results['img']])
        return dict(inputs=dict(img=torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()))


@MODELS.register_module()
class PlainCameraNet(BaseModel):
    """Strided conv over every view, pooled, regressed to 0: a camera model in 20 lines."""

    def __init__(self, data_preprocessor: dict | None = None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.conv = nn.Conv2d(3, 4, kernel_size=4, stride=4)
        self.head = nn.Linear(4, 1)

    def forward(self, inputs, mode: str = 'tensor', **unused):
        imgs = inputs['img']
        b, v = imgs.shape[:2]
        x = imgs.flatten(0, 1).float() / 255.0
        feat = self.conv(x).mean(dim=(2, 3)).view(b, v, -1).mean(1)
        pred = self.head(feat).squeeze(-1)
        if mode == 'loss':
            return {'loss': (pred.float() ** 2).mean()}
        return pred
