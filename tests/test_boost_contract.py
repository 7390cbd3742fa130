"""One contract over every registered boost (mirrors the per-algorithm contract test).

Each boost has a well-formed card and a documented variant syntax, and TRAINS:
on the toy regressor (training-recipe boosts) or a 6-camera model that never
mentions bevboost (data boosts), with the value it needs. What it changed is
asserted twice: through its own :meth:`Boost.verify` on the built runner, and
through a direct fact read off that runner (wrapper, accumulation count, LR,
loader class, transform type, hooks). ``verify`` must also refuse the same
runner built without the boost. A boost registered without a ``verify()``, an
entry in :data:`OPTIONS` or an entry in :data:`FACTS` fails here.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from bevboost.boosts import (Boost, BoostCard, BoostNotInEffect, apply_boosts,
                             available_boosts, get_boost, parse_variant,
                             train_pipeline_transforms)
from bevboost.runner_utils import runner_from_cfg
from bevboost.seams.torch_compat import COMPILE_SGD_MOMENTUM_MIN, fused_kernel_devices
from bevboost.testing.toy import toy_config

REPO = Path(__file__).resolve().parents[1]

BOOSTS = sorted(available_boosts())
#: the options each boost trains with and the model it trains on come from its card
#: (``contract_options``, ``contract_model``): one place per boost


def _options(name: str) -> dict:
    return dict(get_boost(name).card.contract_options)


def _model(name: str) -> str:
    return get_boost(name).card.contract_model


TOY_BACKBONE = dict(type='ToyBackboneRegressor', img_backbone=dict(type='ToyMLPBackbone'))


def _saved_activation_bytes(model, cp: bool) -> int:
    """Bytes autograd saves for backward in one training forward (torch's own hooks)."""
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t
    previous = model.img_backbone.with_cp
    model.img_backbone.with_cp = cp
    model.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(torch.randn(16, 8), torch.randn(16), mode='loss')['loss']
    finally:
        model.img_backbone.with_cp = previous
    return sum(saved)


def _hook_types(runner) -> set[str]:
    return {type(h).__name__ for h in runner.hooks}


def _loader_transforms(runner) -> list:
    return [t for t in train_pipeline_transforms(runner)
            if type(t).__name__ == 'FastLoadMultiViewImageFromFiles']


#: the observable effect of each boost, read directly off the trained runner
FACTS = {
    'amp': lambda r: (type(r.optim_wrapper).__name__ == 'BoostAmpOptimWrapper'
                      and str(r.optim_wrapper.cast_dtype) == 'torch.bfloat16'
                      and 'OptimizerStepSchedulerHook' in _hook_types(r)),
    'accum': lambda r: (r.optim_wrapper._accumulative_counts == 2
                        and r.train_dataloader.batch_size == 4  # toy batch 8 / 2
                        and {'OptimizerStepSchedulerHook', 'AccumulationHook'} <= _hook_types(r)),
    'lr-scale': lambda r: r.optim_wrapper.optimizer.defaults['lr'] == pytest.approx(0.1 * 8 / 16),
    'nan-guard': lambda r: (type(r.optim_wrapper).__name__ == 'BoostOptimWrapper'
                            and r.optim_wrapper.max_consecutive_skips == 3
                            and 'NonFiniteGuardHook' in _hook_types(r)),
    'measure': lambda r: 'StallMonitorHook' in _hook_types(r),
    'profile': lambda r: 'TorchProfilerHook' in _hook_types(r),
    'fast-decode': lambda r: (bool(_loader_transforms(r))
                              and _loader_transforms(r)[0].final_dim == (32, 88)),
    'dali': lambda r: bool(_loader_transforms(r)) and _loader_transforms(r)[0].backend == 'dali',
    'shm': lambda r: (type(r.train_dataloader).__name__ == 'ShmRingLoader'
                      and r.train_dataloader.slots == 3),
    'compile': lambda r: (r.cfg.compile == dict(backend='aot_eager')
                          and hasattr(r.model.train_step, '_torchdynamo_orig_callable')),
    # fused where this torch has CPU kernels (2.4+), else its foreach fallback
    'fused-optim': lambda r: all(g.get('fused') if 'cpu' in fused_kernel_devices()
                                 else g.get('foreach') and not g.get('fused')
                                 for g in r.optim_wrapper.optimizer.param_groups),
    'channels-last': lambda r: r.model.conv.weight.is_contiguous(
        memory_format=torch.channels_last) and not r.model.conv.weight.is_contiguous(),
    # every block of the toy backbone recomputes its activations in backward
    'checkpoint': lambda r: (r.model.img_backbone.with_cp
                             and _saved_activation_bytes(r.model, cp=True)
                             < _saved_activation_bytes(r.model, cp=False)),
    'loader': lambda r: (r.train_dataloader.num_workers == 1
                         and r.train_dataloader.persistent_workers
                         and r.train_dataloader.prefetch_factor == 3),
}


@pytest.fixture(scope='module')
def camera_sources(tmp_path_factory):
    """A camera config with the stock loader + resize, and one with the user's own loader."""
    import sys
    from pathlib import Path

    from bevboost.synth import synthesize_nuscenes
    from tests.dropin.launch import PLAIN_CAMERA, PLAIN_CAMERA_OWN_LOADER
    here = str(Path(__file__).resolve().parent / 'dropin')
    if here not in sys.path:
        sys.path.insert(0, here)  # the configs import ``plainmodels``
    root = str(synthesize_nuscenes(tmp_path_factory.mktemp('contract_nus'), scenes=2,
                                   samples_per_scene=2, image_size=(128, 352),
                                   lidar_sweeps=0)) + '/'
    return {'stock': PLAIN_CAMERA.format(root=root),
            'own': PLAIN_CAMERA_OWN_LOADER.format(root=root)}


def _config(name: str, work_dir: str, camera_sources) -> Config:
    if _model(name) == 'toy':
        return Config(toy_config(work_dir, max_iters=4))
    if _model(name) == 'toy-backbone':
        return Config(toy_config(work_dir, max_iters=4, model=TOY_BACKBONE))
    # shm and channels-last need a loader built without mmdet3d; fast-decode/dali replace
    # the stock one
    text = camera_sources['own' if _model(name) == 'camera-own-loader' else 'stock']
    cfg = Config.fromstring(text, '.py')
    cfg.work_dir = work_dir
    return cfg


def _train(cfg: Config):
    runner = runner_from_cfg(cfg)
    runner.train()
    return runner


@pytest.fixture(scope='module')
def baselines(tmp_path_factory, camera_sources):
    """The toy and the own-loader camera model trained without any boost."""
    toy = _train(Config(toy_config(str(tmp_path_factory.mktemp('base_toy')), max_iters=2)))
    cam = Config.fromstring(camera_sources['own'], '.py')
    cam.work_dir = str(tmp_path_factory.mktemp('base_cam'))
    backbone = _train(Config(toy_config(str(tmp_path_factory.mktemp('base_backbone')),
                                        max_iters=2, model=TOY_BACKBONE)))
    return {'toy': toy, 'camera': _train(cam), 'toy-backbone': backbone}


def test_builtin_boosts_are_registered():
    assert {'amp', 'accum', 'lr-scale', 'measure', 'profile', 'fast-decode', 'shm'} <= set(BOOSTS)


@pytest.mark.parametrize('name', BOOSTS)
def test_card_is_well_formed(name):
    boost = get_boost(name)
    card = boost.card
    assert isinstance(card, BoostCard) and card.name == name
    assert card.summary and card.expected_effect and card.changes
    assert isinstance(card.exact, bool)
    assert card.contract_model in ('toy', 'toy-backbone', 'camera', 'camera-own-loader')
    assert bool(card.fragment) != bool(card.no_fragment_reason), \
        f'{name}: name its configs/_base_/boosts fragment or say why it has none'
    page, _, anchor = card.docs.partition('#')
    doc = REPO / page
    assert doc.is_file() and anchor, f'{name}: card.docs {card.docs!r} is not page.md#anchor'
    assert f'`{name}' in doc.read_text(), f'{name}: {page} does not document it'
    reason = boost.unavailable_reason()
    assert reason is None or reason.startswith('requires')


#: boosts whose contract options need a newer torch than the oldest supported
TORCH_FLOORS = {'compile': pytest.mark.torch_min(COMPILE_SGD_MOMENTUM_MIN,
                                                 'compile=model with SGD momentum (the toy)')}


@pytest.mark.parametrize('name', [pytest.param(n, marks=TORCH_FLOORS.get(n, ())) for n in BOOSTS])
def test_boost_trains_and_is_verified_on_the_built_runner(name, tmp_path, camera_sources,
                                                          baselines):
    boost = get_boost(name)
    assert type(boost).verify is not Boost.verify, \
        f'boost {name!r} has no verify(): the contract needs one'
    assert name in FACTS, f'boost {name!r}: add its effect on the built runner to FACTS'
    if boost.unavailable_reason():
        pytest.skip(boost.unavailable_reason())
    options = _options(name)
    cfg = apply_boosts(_config(name, str(tmp_path), camera_sources), {name: options})
    assert 'bevboost' in cfg.custom_imports['imports']
    runner = _train(cfg)
    assert runner.iter == runner.train_loop.max_iters > 0

    verdict = boost.verify(runner, **options)
    assert isinstance(verdict, str) and verdict
    report = next(h for h in runner.hooks if type(h).__name__ == 'BoostReportHook')
    assert report.verdicts == [f'{name}: {verdict}']  # logged at start, same verdict
    assert FACTS[name](runner), f'{name}: effect not found on the runner ({verdict})'
    # and verify refuses the same model trained without the boost
    plain = baselines[_model(name).replace('-own-loader', '')]
    with pytest.raises(BoostNotInEffect):
        boost.verify(plain, **options)


def test_unknown_boost_lists_known():
    with pytest.raises(ValueError, match='unknown boost .warp-speed.; known boosts: .*amp'):
        parse_variant('warp-speed')


def test_value_for_boost_without_option():
    no_value = [n for n in BOOSTS if get_boost(n).primary_option is None]
    if not no_value:
        pytest.skip('every boost takes a value')
    with pytest.raises(ValueError, match='takes no value'):
        parse_variant(f'{no_value[0]}=3')


@pytest.mark.parametrize('spec, expected', [
    ('accum=2:per_gpu_batch=1', ('accum', {'counts': '2', 'per_gpu_batch': 1})),
    ('lr-scale:reference_batch=16:rule=sqrt',
     ('lr-scale', {'reference_batch': 16, 'rule': 'sqrt'})),
    ("amp=fp16:fp32_modules=['DepthLSSTransform']",
     ('amp', {'dtype': 'fp16', 'fp32_modules': ['DepthLSSTransform']})),
])
def test_variant_options(spec, expected):
    assert parse_variant(spec) == expected


@pytest.mark.parametrize('spec, needle', [
    ('accum=2:per_gpu_batch', "'per_gpu_batch'"),
    ('accum=2:=1', "'=1'"),
    ('accum=2:per_gpu_batch=1:per_gpu_batch=2', "'per_gpu_batch' given twice"),
])
def test_bad_variant_options_name_the_option(spec, needle):
    with pytest.raises(ValueError, match=needle):
        parse_variant(spec)


def test_config_fragment_key_is_applied_and_removed(tmp_path):
    cfg = Config(toy_config(str(tmp_path), bevboost_boosts=dict(amp=dict(dtype='bf16'))))
    boosted = apply_boosts(cfg)
    assert boosted.optim_wrapper.type == 'BoostAmpOptimWrapper'
    assert 'bevboost_boosts' not in boosted and boosted.bevboost_applied == ['amp']
    hook = next(h for h in boosted.custom_hooks if h['type'] == 'BoostReportHook')
    assert hook['boosts'] == {'amp': {'dtype': 'bf16'}}


def test_fast_decode_says_when_it_could_not_fold_the_resize(tmp_path, camera_sources):
    """No resize/crop after the stock loader: the loader decodes full size, and the
    start-of-training line says the resize was not folded rather than implying it was."""
    text = camera_sources['stock']
    start = text.index("    dict(type='ResizeCropFlipImage'")
    end = text.index("    dict(type='PackCameraImages')")
    cfg = Config.fromstring(text[:start] + text[end:], '.py')
    cfg.work_dir = str(tmp_path)
    cfg.train_cfg.max_iters = 1
    runner = _train(apply_boosts(cfg, ['fast-decode']))
    verdict = get_boost('fast-decode').verify(runner)
    assert 'resize not folded' in verdict and _loader_transforms(runner)[0].final_dim is None
