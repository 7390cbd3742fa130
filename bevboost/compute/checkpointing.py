"""The ``checkpoint`` boost: activation checkpointing through the components' own ``with_cp``.

The memory lever for people on fewer or smaller GPUs: the image backbone and the
transformer decoder keep only their block inputs in the forward pass and recompute the
rest in the backward pass (same math; more compute). It switches on the ``with_cp``
switch the components already have (mmdet's ResNet/Swin, the kit's VoVNet and PETRv2
decoder, any registered module taking ``with_cp``); it never wraps modules itself. A
part whose class takes no ``with_cp`` is refused by name, and the built model is
checked: every ``with_cp`` flag under the part must be on.
"""
from __future__ import annotations

import inspect
from typing import Any

from mmengine.config import Config

from bevboost.boosts import Boost, BoostCard, BoostNotInEffect, register_boost
from bevboost.compute._common import module_names

#: part name -> where its config sits under ``model`` (first found wins)
PARTS: dict[str, tuple[str, ...]] = {
    'backbone': ('img_backbone',),
    'decoder': ('pts_bbox_head.decoder', 'pts_bbox_head.transformer.decoder'),
}


def _lookup(node: Any, dotted: str) -> Any:
    for key in dotted.split('.'):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _takes_with_cp(component: dict) -> bool | None:
    """Whether the component's registered class takes ``with_cp`` (None: not resolvable
    from the config alone, e.g. a sub-config its parent builds; checked on the built model)."""
    from mmengine.registry import MODELS
    kind = component.get('type')
    if not isinstance(kind, str):
        return None if kind is None else 'with_cp' in inspect.signature(kind).parameters
    try:
        cls = MODELS.get(kind)
    except KeyError:  # a scope whose package is not imported here
        cls = None
    if cls is None:
        return None
    params = inspect.signature(cls.__init__).parameters
    return 'with_cp' in params or any(p.kind is p.VAR_KEYWORD for p in params.values()) or None


def config_parts(cfg: Config, parts: tuple[str, ...]) -> dict[str, tuple[str, dict]]:
    """part -> (config path, component dict) for the requested parts the model config has."""
    model = cfg.get('model')
    found = {}
    for part in parts:
        for path in PARTS[part]:
            component = _lookup(model, path)
            if isinstance(component, dict):
                found[part] = (f'model.{path}', component)
                break
    return found


def apply_checkpoint(cfg: Config, parts: Any = 'backbone/decoder') -> None:
    """Set ``with_cp=True`` on the image backbone and the transformer decoder configs.

    ``parts``: ``'backbone'``, ``'decoder'`` or both (``'backbone/decoder'``, the
    default, takes those the model has). ValueError when none is there, or when a
    named part's class takes no ``with_cp``.
    """
    names = module_names(parts, option='parts', boost='checkpoint')
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        raise ValueError(f'checkpoint: unknown parts {unknown}; known: {sorted(PARTS)}')
    found = config_parts(cfg, names)
    explicit = parts != 'backbone/decoder'
    missing = [n for n in names if n not in found]
    if not found or (explicit and missing):
        paths = [p for n in (missing or names) for p in PARTS[n]]
        raise ValueError(f'checkpoint: the model config has no {paths}: no image backbone or '
                         'transformer decoder to checkpoint')
    for part, (path, component) in found.items():
        if _takes_with_cp(component) is False:
            raise ValueError(f"checkpoint: {path} ({component.get('type')}) takes no with_cp "
                             'switch; activation checkpointing needs one')
        component['with_cp'] = True


def _built_part(model: Any, part: str) -> tuple[str, Any] | None:
    for path in PARTS[part]:
        node = model
        for key in path.split('.'):
            node = getattr(node, key, None)
        if node is not None:
            return path, node
    return None


def checkpointed_flags(module: Any) -> list[bool]:
    """The ``with_cp`` flags of ``module`` and its submodules (blocks carry their own)."""
    return [bool(m.with_cp) for m in module.modules() if hasattr(m, 'with_cp')]


@register_boost
class CheckpointBoost(Boost):
    card = BoostCard(
        name='checkpoint',
        contract_options=dict(parts='backbone'), contract_model='toy-backbone',
        fragment='checkpoint.py', docs='docs/compute.md#activation-checkpointing-checkpoint',
        summary='activation checkpointing of the image backbone and the transformer decoder '
                'through their own with_cp switches: activations recomputed in backward',
        changes=('model.img_backbone.with_cp', 'model.pts_bbox_head.decoder.with_cp',
                 'model.pts_bbox_head.transformer.decoder.with_cp'),
        expected_effect='less activation memory for the checkpointed parts (tiny PETRv2: '
                        'benchmarks/test_bench_compute.py), a slower step (recomputation)',
        exact=True, order=57)
    primary_option = 'parts'

    def apply(self, cfg: Config, **options: Any) -> None:
        apply_checkpoint(cfg, **options)

    def verify(self, runner: Any, parts: Any = 'backbone/decoder', **options: Any) -> str:
        model = getattr(runner.model, 'module', runner.model)
        names = module_names(parts, option='parts', boost='checkpoint')
        verdicts = []
        for part in names:
            built = _built_part(model, part)
            if built is None:
                if parts != 'backbone/decoder':
                    raise BoostNotInEffect(f'the model has no {part} ({PARTS[part]})')
                continue
            path, module = built
            flags = checkpointed_flags(module)
            if not flags or not all(flags):
                raise BoostNotInEffect(f'{path}: {flags.count(True)} of {len(flags)} with_cp '
                                       'switches on')
            verdicts.append(f'{path} with_cp ({len(flags)} switches on)')
        if not verdicts:
            raise BoostNotInEffect('no backbone or decoder with a with_cp switch on the model')
        return ', '.join(verdicts)
