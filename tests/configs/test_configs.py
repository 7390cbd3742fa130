"""Every bundled config parses, carries its published recipe, and composes with every boost."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from mmengine.config import Config

from bevboost.boosts import apply_boosts, boosts_in_config

CONFIGS = Path(__file__).resolve().parents[2] / 'configs'
BOOST_FRAGMENTS = sorted((CONFIGS / '_base_' / 'boosts').glob('*.py'))
ALL_CONFIGS = sorted(p for d in ('petrv2', 'bevfusion') for p in (CONFIGS / d).glob('*.py'))
#: model configs: the ones that request no boost
MODEL_CONFIGS = [p for p in ALL_CONFIGS
                 if not Config.fromfile(str(p), import_custom_modules=False).get('bevboost_boosts')]
PETR_V99 = CONFIGS / 'petrv2' / 'petrv2_vov99_gridmask_800x320_8xb1-24e_nus.py'
PETR_TINY = CONFIGS / 'petrv2' / 'petrv2_tiny_synth.py'
BEVF_LIDAR = CONFIGS / 'bevfusion' / 'bevfusion_lidar_voxel0075_second_secfpn_8xb4-cyclic-20e_nus.py'
BEVF_CAM = CONFIGS / 'bevfusion' / 'bevfusion_lidar-cam_voxel0075_swint_256x704_8xb4-6e_nus.py'


def load(path: Path) -> Config:
    # custom_imports are not run: BEVFusion's need a user checkout (tested separately)
    return Config.fromfile(str(path), import_custom_modules=False)


def _name(p: Path) -> str:
    return p.stem


def _sched(cfg: Config, type_: str) -> list[dict]:
    return [s for s in cfg.param_scheduler if s['type'] == type_]


def test_expected_configs_are_bundled():
    assert {PETR_V99, PETR_TINY, BEVF_LIDAR, BEVF_CAM} <= set(MODEL_CONFIGS)


def test_every_registered_boost_has_its_fragment():
    """The fragment a boost's card names exists and asks for that boost (or the card says
    why it has none)."""
    from bevboost.boosts import available_boosts
    for name, boost in available_boosts().items():
        if boost.card.fragment is None:
            assert boost.card.no_fragment_reason, f'{name}: no fragment and no reason'
            continue
        path = CONFIGS / '_base_' / 'boosts' / boost.card.fragment
        assert path.is_file(), f'{name}: card.fragment {path} does not exist'
        assert name in boosts_in_config(load(path)), f'{path} does not ask for {name}'


@pytest.mark.parametrize('path', ALL_CONFIGS, ids=_name)
def test_config_parses_with_plugin_imports(path):
    cfg = load(path)
    imports = cfg.custom_imports['imports']
    assert cfg.custom_imports['allow_failed_imports'] is False
    assert 'bevboost' in imports
    assert ('bevboost_petr' if 'petrv2' in path.parts else 'bevboost_bevfusion.project') in imports
    assert cfg.default_scope == 'mmdet3d'


@pytest.mark.parametrize('path', ALL_CONFIGS, ids=_name)
def test_base_batch_size_is_the_reference_batch(path):
    """``8xb4`` in a name means 8 GPUs x 4 samples: auto_scale_lr must say 32."""
    cfg = load(path)
    match = re.search(r'_(\d+)xb(\d+)', path.stem)
    gpus, per_gpu = (int(match[1]), int(match[2])) if match else (1, None)
    assert cfg.train_dataloader.batch_size == (per_gpu or cfg.train_dataloader.batch_size)
    assert cfg.auto_scale_lr.base_batch_size == gpus * cfg.train_dataloader.batch_size


def test_petrv2_vov99_recipe():
    cfg = load(PETR_V99)
    opt = cfg.optim_wrapper
    assert opt.type == 'OptimWrapper'
    assert (opt.optimizer.type, opt.optimizer.lr, opt.optimizer.weight_decay) == ('AdamW', 2e-4, 0.01)
    assert opt.paramwise_cfg.custom_keys['img_backbone'] == dict(lr_mult=0.1)
    assert opt.clip_grad == dict(max_norm=35, norm_type=2)
    (warmup,) = _sched(cfg, 'LinearLR')
    assert warmup.start_factor == pytest.approx(1 / 3) and warmup.end == 500
    assert warmup.by_epoch is False
    (cosine,) = _sched(cfg, 'CosineAnnealingLR')
    assert cosine.eta_min_ratio == 1e-3 and cosine.T_max == cosine.end == 24
    assert cfg.train_cfg.max_epochs == 24
    assert cfg.train_dataloader.batch_size == 1 and cfg.auto_scale_lr.base_batch_size == 8
    model = cfg.model
    assert model.type == 'PETRv2' and model.img_backbone.spec_name == 'V-99-eSE'
    assert model.use_grid_mask is True
    head = model.pts_bbox_head
    assert head.num_query == 900 and head.with_fpe is True and head.lid is True
    assert head.decoder.num_layers == 6
    assert head.loss_cls.type == 'mmdet.FocalLoss' and head.loss_bbox.type == 'mmdet.L1Loss'
    assert model.train_cfg.assigner.type == 'mmdet.HungarianAssigner'
    resize = next(t for t in cfg.train_dataloader.dataset.pipeline
                  if t['type'] == 'MultiViewResizeCropFlip')
    assert tuple(resize.final_dim) == (320, 800)
    load_imgs = cfg.train_dataloader.dataset.pipeline[0]
    assert load_imgs.num_views == 12 and cfg.train_dataloader.dataset.num_prev_frames == 1
    assert cfg.val_evaluator.type == 'NuScenesMetric'


def test_petrv2_tiny_is_cpu_sized():
    cfg = load(PETR_TINY)
    head = cfg.model.pts_bbox_head
    assert head.num_query <= 100 and head.decoder.num_layers <= 2 and head.embed_dims <= 64
    resize = next(t for t in cfg.train_dataloader.dataset.pipeline
                  if t['type'] == 'MultiViewResizeCropFlip')
    assert resize.final_dim[0] * resize.final_dim[1] <= 160 * 400
    assert cfg.train_dataloader.dataset.data_root == 'data/synth_nuscenes/'
    assert cfg.train_dataloader.dataset.metainfo.version == 'v1.0-mini'
    assert cfg.model.img_backbone.type == 'mmdet.ResNet'


def test_bevfusion_lidar_recipe():
    cfg = load(BEVF_LIDAR)
    assert cfg.optim_wrapper.optimizer.type == 'AdamW' and cfg.optim_wrapper.optimizer.lr == 1e-4
    assert cfg.train_cfg.max_epochs == 20
    assert cfg.train_dataloader.batch_size == 4 and cfg.auto_scale_lr.base_batch_size == 32
    assert cfg.model.data_preprocessor.voxelize_cfg.voxel_size == [0.075, 0.075, 0.2]
    assert cfg.train_dataloader.dataset.type == 'CBGSDataset'
    lr_peaks = [s.eta_min for s in _sched(cfg, 'CosineAnnealingLR')]
    assert lr_peaks == [pytest.approx(1e-3), pytest.approx(1e-8)]
    assert len(_sched(cfg, 'CosineAnnealingMomentum')) == 2


def test_bevfusion_lidar_cam_recipe():
    cfg = load(BEVF_CAM)
    assert cfg.optim_wrapper.optimizer.type == 'AdamW' and cfg.optim_wrapper.optimizer.lr == 2e-4
    assert cfg.train_cfg.max_epochs == 6
    assert cfg.train_dataloader.batch_size == 4 and cfg.auto_scale_lr.base_batch_size == 32
    backbone = cfg.model.img_backbone
    assert backbone.type == 'mmdet.SwinTransformer' and backbone.embed_dims == 96
    assert backbone.depths == [2, 2, 6, 2]
    assert cfg.model.view_transform.image_size == [256, 704]
    assert cfg.model.data_preprocessor.voxelize_cfg.voxel_size == [0.075, 0.075, 0.2]
    (cosine,) = _sched(cfg, 'CosineAnnealingLR')
    assert cosine.T_max == 6 and cosine.eta_min_ratio == 1e-4
    momentum = _sched(cfg, 'CosineAnnealingMomentum')
    assert [m.end for m in momentum] == [2.4, 6]
    aug = next(t for t in cfg.train_dataloader.dataset.dataset.pipeline if t['type'] == 'ImageAug3D')
    assert aug.final_dim == [256, 704]
    assert cfg.train_dataloader.dataset.dataset.modality.use_camera is True


def _train_pipeline(cfg: Config) -> list[dict]:
    dataset = cfg.train_dataloader.dataset
    return (dataset.get('dataset') or dataset).pipeline


def _compose(model_cfg: Path, fragment: Path, tmp_path: Path) -> Config:
    f = tmp_path / f'{model_cfg.stem}__{fragment.stem}.py'
    f.write_text(f"_base_ = ['{model_cfg}', '{fragment}']\n")
    return load(f)


def _without_with_cp(node):
    if isinstance(node, dict):
        return {k: _without_with_cp(v) for k, v in node.items() if k != 'with_cp'}
    return node


@pytest.mark.parametrize('fragment', BOOST_FRAGMENTS, ids=_name)
@pytest.mark.parametrize('model_cfg', MODEL_CONFIGS, ids=_name)
def test_every_boost_fragment_composes_with_every_model(model_cfg, fragment, tmp_path):
    """Fails loudly when a fragment names a boost that is not registered."""
    cfg = _compose(model_cfg, fragment, tmp_path)
    requested = boosts_in_config(cfg)  # ValueError on an unknown boost name
    assert len(requested) == 1
    pipeline = _train_pipeline(cfg)
    if not any('MultiViewImage' in t['type'] for t in pipeline):
        # a LiDAR-only recipe: camera boosts (images, image backbone) refuse clearly, naming
        # what the recipe lacks; the others apply
        try:
            boosted = apply_boosts(cfg)
        except ValueError as exc:
            assert 'MultiViewImage' in str(exc) or "has no ['img_backbone'" in str(exc)
            return
    else:
        boosted = apply_boosts(cfg)
    assert list(requested) == boosted.bevboost_applied
    assert 'bevboost_boosts' not in boosted
    # boosts change the recipe, not the network; fast-decode/dali may put the main-process
    # decode stage in front of the model's own data preprocessor, which stays as it was;
    # checkpoint turns on with_cp switches (the same math), nothing else
    def network(model):
        model = {k: v for k, v in model.items() if k != 'data_preprocessor'}
        return _without_with_cp(model) if 'checkpoint' in requested else model
    assert network(boosted.model) == network(cfg.model)
    pre, original = boosted.model.get('data_preprocessor'), cfg.model.get('data_preprocessor')
    if pre != original:
        assert pre['type'] == 'MainProcessDecodePreprocessor'
        hoisted = {k: pre[k] for k in ('voxelize_cfg',) if k in pre}
        assert dict(pre['preprocessor'], **hoisted) == original


@pytest.mark.parametrize('path', [p for p in ALL_CONFIGS if p not in MODEL_CONFIGS], ids=_name)
def test_boosted_variants_apply(path):
    cfg = load(path)
    requested = boosts_in_config(cfg)
    assert requested
    assert set(apply_boosts(cfg).bevboost_applied) == set(requested)
