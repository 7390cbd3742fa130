"""bevboost: performance kit for BEV 3D detector training on MMEngine.

``custom_imports = dict(imports=['bevboost'])`` in an mmengine/mmdet3d config
registers the kit's hooks, optimizer wrappers and transforms in mmengine's
root registries, reachable from every downstream scope (mmdet3d included).
Importing it pulls in torch and mmengine only; DALI, mmdet3d and NVML are
imported lazily where they are used.
"""
import importlib
import logging

__version__ = '0.1.0'

logging.getLogger(__name__).addHandler(logging.NullHandler())

# Modules that register things (hooks, wrappers, transforms, boosts) on import.
# Each optimization lives in its own module; listing one here switches on its
# registration.
_REGISTERING_MODULES = (
    'bevboost.engine.checkpoint_safety',
    'bevboost.engine.amp',
    'bevboost.engine.accumulation',
    'bevboost.engine.lr_scaling',
    'bevboost.data',
    'bevboost.profiling',
)


def _register_all() -> None:
    for name in _REGISTERING_MODULES:
        importlib.import_module(name)


_register_all()
