"""Boosts never drop a user's setting: each rewrites only the keys its card lists.

Every boost that applies to an optimizer-bearing config is applied to one that
carries the settings users give (an fp16 ``AmpOptimWrapper`` with a static
``loss_scale=512.``, ``clip_grad``, ``paramwise_cfg``, ``accumulative_counts``);
the diff against the original must stay inside the card's ``changes`` (plus what
every boosted config gets: ``custom_imports``, the report hook, ``bevboost_applied``)
and must leave those settings as they were.
"""
from __future__ import annotations

import pytest
from mmengine.config import Config

from bevboost.boosts import apply_boosts, available_boosts
from bevboost.planning import config_diff
from bevboost.seams.torch_compat import COMPILE_SGD_MOMENTUM_MIN
from bevboost.testing.toy import toy_config

USER_WRAPPER = dict(type='AmpOptimWrapper', dtype='float16', loss_scale=512.,
                    clip_grad=dict(max_norm=10.0), accumulative_counts=2,
                    paramwise_cfg=dict(custom_keys={'net.2': dict(lr_mult=0.1)}),
                    optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
#: keys of the user's wrapper no boost may drop or change (unless its option asks)
USER_SETTINGS = ('optim_wrapper.dtype', 'optim_wrapper.loss_scale', 'optim_wrapper.clip_grad',
                 'optim_wrapper.paramwise_cfg', 'optim_wrapper.accumulative_counts',
                 'optim_wrapper.optimizer.lr', 'optim_wrapper.optimizer.momentum')
#: what ``--with`` gets per boost here; camera-pipeline boosts cannot apply to this config
SPECS = {'amp': 'amp', 'accum': 'accum=4', 'lr-scale': 'lr-scale:reference_batch=8',
         'nan-guard': 'nan-guard', 'measure': 'measure', 'profile': 'profile',
         'compile': 'compile', 'fused-optim': 'fused-optim', 'loader': 'loader=1'}
#: user settings a boost's own option asks to change
ASKED = {'accum': ('optim_wrapper.accumulative_counts',)}
#: keys the launch reconciliation may change, each only with a line saying so
#: (``bevboost_launch_notes``): AmpOptimWrapper -> the kit's, where the kit counts steps
ANNOUNCED = {'optim_wrapper.type': 'AmpOptimWrapper (e.g. --amp) -> BoostAmpOptimWrapper'}
#: boosts the toy cannot take (camera pipeline, image backbone)
NOT_ON_TOY = {'fast-decode', 'dali', 'shm', 'channels-last', 'checkpoint'}
ALWAYS = ('custom_imports', 'custom_hooks', 'bevboost_applied', 'bevboost_launch_notes')


def _user_config(tmp_path) -> Config:
    return Config(toy_config(str(tmp_path), batch_size=4, optim_wrapper=dict(USER_WRAPPER)))


def test_every_registered_boost_is_covered():
    assert set(available_boosts()) == set(SPECS) | NOT_ON_TOY
    for name in NOT_ON_TOY:  # they touch no optimizer setting, by their own card
        assert not any(k.startswith('optim_wrapper') for k in available_boosts()[name].card.changes)


#: compile=model on this SGD-momentum config needs torch 2.2 (refused by name before)
TORCH_FLOORS = {'compile': pytest.mark.torch_min(COMPILE_SGD_MOMENTUM_MIN,
                                                 'compile=model with SGD momentum')}


@pytest.mark.parametrize('name', [pytest.param(n, marks=TORCH_FLOORS.get(n, ()))
                                  for n in sorted(SPECS)])
def test_a_boost_rewrites_only_its_cards_keys_and_keeps_user_settings(tmp_path, name):
    before = _user_config(tmp_path)
    after = apply_boosts(before, [SPECS[name]])
    changed = [key for key, _, _ in config_diff(before, after)]
    allowed = available_boosts()[name].card.changes + ALWAYS
    notes = ' '.join(after.get('bevboost_launch_notes') or [])
    allowed += tuple(k for k, line in ANNOUNCED.items() if line in notes)
    outside = [k for k in changed if not any(k == a or k.startswith(a + '.') for a in allowed)]
    assert not outside, f'{name} changed keys its card does not list: {outside}'
    kept = [k for k in changed if k in USER_SETTINGS and k not in ASKED.get(name, ())]
    assert not kept, f'{name} rewrote the user settings {kept}'
    if name in ('amp', 'nan-guard'):  # the wrapper type changes, the user's scale stays
        assert after.optim_wrapper.type == 'BoostAmpOptimWrapper'


def test_an_option_that_asks_otherwise_wins_and_says_so_in_the_diff(tmp_path):
    before = _user_config(tmp_path)
    after = apply_boosts(before, ['amp=bf16:loss_scale=1024.0'])
    diff = {k: (a, b) for k, a, b in config_diff(before, after)}
    assert diff['optim_wrapper.dtype'] == ('float16', 'bf16')
    assert diff['optim_wrapper.loss_scale'] == (512.0, 1024.0)
