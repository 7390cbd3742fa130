"""One contract over every registered boost (mirrors the per-algorithm contract test).

Each boost has a well-formed card, a documented variant syntax, and on the toy
task either trains through mmengine's Runner or refuses the config with a
ValueError that says what is missing -- never a crash deep inside mmengine.
"""
import pytest
from mmengine.config import Config

from bevboost.boosts import BoostCard, apply_boosts, available_boosts, get_boost, parse_variant
from bevboost.testing.toy import toy_config
from tests.engine.runner_helpers import run_toy

BOOSTS = sorted(available_boosts())


def test_builtin_boosts_are_registered():
    assert {'amp', 'accum', 'lr-scale'} <= set(BOOSTS)


@pytest.mark.parametrize('name', BOOSTS)
def test_card_is_well_formed(name):
    boost = get_boost(name)
    card = boost.card
    assert isinstance(card, BoostCard) and card.name == name
    assert card.summary and card.expected_effect and card.changes
    assert isinstance(card.exact, bool)
    reason = boost.unavailable_reason()
    assert reason is None or reason.startswith('requires')


@pytest.mark.parametrize('name', BOOSTS)
def test_boost_trains_toy_or_refuses_clearly(name, tmp_path):
    options = {'lr-scale': dict(reference_batch=16)}.get(name, {})
    boost = get_boost(name)
    if boost.unavailable_reason():
        pytest.skip(boost.unavailable_reason())
    try:
        apply_boosts(Config(toy_config(str(tmp_path))), {name: options})
    except ValueError as exc:
        assert str(exc)  # refused with a message (e.g. no camera pipeline to replace)
        return
    runner, rec = run_toy(tmp_path, boosts={name: options}, max_iters=6)
    assert runner.iter == runner.train_loop.max_iters
    assert rec.lrs, 'no optimizer step was taken'


def test_unknown_boost_lists_known():
    with pytest.raises(ValueError, match='unknown boost .warp-speed.; known boosts: .*amp'):
        parse_variant('warp-speed')


def test_value_for_boost_without_option():
    no_value = [n for n in BOOSTS if get_boost(n).primary_option is None]
    if not no_value:
        pytest.skip('every boost takes a value')
    with pytest.raises(ValueError, match='takes no value'):
        parse_variant(f'{no_value[0]}=3')


def test_config_fragment_key_is_applied_and_removed(tmp_path):
    cfg = Config(toy_config(str(tmp_path), bevboost_boosts=dict(amp=dict(dtype='bf16'))))
    boosted = apply_boosts(cfg)
    assert boosted.optim_wrapper.type == 'BoostAmpOptimWrapper'
    assert 'bevboost_boosts' not in boosted and boosted.bevboost_applied == ['amp']
