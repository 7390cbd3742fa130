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


class _ToMMLogger(logging.Handler):
    """Hand the kit's log records to mmengine's current logger, when one exists.

    Under a Runner that is the runner's MMLogger (console + work-dir log file,
    each with its own level), so the kit's warnings and errors show where the
    user reads the training log. Without one, records go on to the root
    logger only, as with any library.
    """

    def emit(self, record: logging.LogRecord) -> None:
        mm_logger = current_mmlogger()
        if mm_logger is not None:
            mm_logger.handle(record)
            record.bevboost_forwarded = True  # root handlers may skip it: see not_forwarded


def not_forwarded(record: logging.LogRecord) -> bool:
    """Logging filter for root handlers: drop kit records MMLogger already printed."""
    return not getattr(record, 'bevboost_forwarded', False)


def current_mmlogger():
    """mmengine's latest MMLogger, or None before any exists (never creates one)."""
    from mmengine.logging import MMLogger
    from bevboost.seams.mmengine_runner import mmlogger_exists
    if not mmlogger_exists():
        return None
    return MMLogger.get_current_instance()


_kit_logger = logging.getLogger(__name__)
_kit_logger.addHandler(_ToMMLogger())
if _kit_logger.level == logging.NOTSET:
    _kit_logger.setLevel(logging.INFO)  # info records (summaries) exist for MMLogger to filter

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
    'bevboost.compute',
    'bevboost.runner_utils',
)


def _register_all() -> None:
    for name in _REGISTERING_MODULES:
        importlib.import_module(name)


importlib.import_module('bevboost.seams.torch_compat').import_quietly('mmengine.optim')
_register_all()
importlib.import_module('bevboost.seams').install()
