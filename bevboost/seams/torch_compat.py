"""Every difference between the torch versions the kit supports (2.1 to the newest), in one file.

Version flags are computed once from ``torch.__version__`` (parsed into numbers, never
compared as strings; pre-releases and local builds count as their release, so
``2.6.0a0+git`` is 2.6). Each shim below is one small function that says what it relies on
and on which torch versions it was checked. A feature this torch lacks is refused with
:class:`TorchTooOldError` naming the minimum version, or falls back with a warning log line;
never a crash deep inside torch and never a silent downgrade.

Checked on torch 2.1.2 (CPU; the oldest supported), 2.13.0 (the pinned one) and 2.14.1.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Iterable

import torch

logger = logging.getLogger(__name__)


def parse_version(text: str) -> tuple[int, int, int]:
    """``'2.1.2+cu121'`` -> ``(2, 1, 2)``; ``'2.6.0a0+git1234'`` -> ``(2, 6, 0)``."""
    match = re.match(r'\s*(\d+)\.(\d+)(?:\.(\d+))?', str(text))
    if match is None:
        raise ValueError(f'cannot parse a version from {text!r}')
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


TORCH_VERSION: tuple[int, int, int] = parse_version(torch.__version__)


def torch_at_least(major: int, minor: int, patch: int = 0) -> bool:
    """True when this torch is ``major.minor.patch`` or newer (its release numbers)."""
    return TORCH_VERSION >= (major, minor, patch)


#: the oldest torch the kit's core tests pass on (pyproject's floor)
MIN_TORCH = (2, 1)
#: dynamo compiles a whole mmengine train_step with SGD momentum
TORCH_GE_2_2 = torch_at_least(2, 2)
#: ``torch.amp.GradScaler(device)`` and ``torch.amp.GradScaler('cpu')``
TORCH_GE_2_3 = torch_at_least(2, 3)
#: ``torch.serialization.add_safe_globals``
TORCH_GE_2_4 = torch_at_least(2, 4)
#: ``torch.optim.optimizer._device_dtype_check_for_fused``
TORCH_GE_2_5 = torch_at_least(2, 5)
#: ``add_safe_globals`` takes ``(obj, 'module.name')`` pairs; ``torch.load`` defaults to
#: ``weights_only=True``
TORCH_GE_2_6 = torch_at_least(2, 6)


def version_text(version: tuple[int, ...]) -> str:
    return '.'.join(str(v) for v in version)


class TorchTooOldError(ValueError):
    """A feature the user asked for needs a newer torch; the message names the minimum."""

    def __init__(self, feature: str, minimum: tuple[int, ...], hint: str = '') -> None:
        self.feature, self.minimum = feature, minimum
        super().__init__(f'{feature} needs torch>={version_text(minimum)}; this is torch '
                         f'{torch.__version__}' + (f'. {hint}' if hint else ''))


def require_torch(feature: str, minimum: tuple[int, ...], hint: str = '') -> None:
    """Raise :class:`TorchTooOldError` unless this torch is ``minimum`` or newer."""
    if TORCH_VERSION < tuple(minimum) + (0,) * (3 - len(minimum)):
        raise TorchTooOldError(feature, minimum, hint)


# --- import-time warnings ----------------------------------------------------------------

#: deprecations torch raises while mmengine is imported: about torch internals, nothing a
#: kit user can act on (exact message starts)
IMPORT_DEPRECATIONS = ('`TorchScript` support for functional optimizers is deprecated',)


def import_quietly(module: str) -> Any:
    """Import ``module`` without printing :data:`IMPORT_DEPRECATIONS`; other warnings show.

    torch 2.4-2.5 warn when ``import mmengine.optim`` imports ``torch.distributed.optim``,
    forcing it through every filter (``simplefilter('always')`` inside the warning's own
    ``catch_warnings``): three lines on stderr before anything the CLI prints, so a one-line
    error became three. Recording the import's warnings catches it; the rest are shown as
    they would have been. Called by ``import bevboost`` for ``mmengine.optim``, before its
    modules import it. Checked: 2.4.1 (warns), 2.1.2, 2.13.0 and 2.14.1 (no such warning).
    """
    import importlib
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        imported = importlib.import_module(module)
    for w in caught:
        if not str(w.message).startswith(IMPORT_DEPRECATIONS):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)
    return imported


# --- checkpoints -------------------------------------------------------------------------

def add_safe_globals(objects: Iterable[Any]) -> bool:
    """Allow-list classes/functions for ``torch.load(weights_only=True)``; False when this
    torch has no allow-list.

    * torch >= 2.6: everything as given, ``(fn, 'module.name')`` pairs included (a pair
      registers ``fn`` under a name other than its own, e.g. numpy 1.x's
      ``numpy.core.multiarray`` on numpy 2.x).
    * torch 2.4-2.5: pairs are not understood there (every later ``weights_only`` load in
      the process crashes on them), so each pair's object goes in alone, under its own
      ``__module__.__name__`` (numpy 1.x: ``numpy.core.multiarray._reconstruct``);
      checkpoints written under another numpy major then need ``weights_only=False``.
      ``_codecs.encode`` (how pickle protocol 2, ``torch.save``'s, stores bytes such as a
      numpy array's data), which torch 2.6 allows by default, is added too.
    * torch < 2.4: no allow-list exists, and ``torch.load`` defaults to
      ``weights_only=False`` there (mmengine's loader does not ask for it), so mmengine
      checkpoints load without one; logged at debug level.

    Checked: 2.1.2 (no allow-list), 2.4.1 (objects), 2.13.0 and 2.14.1 (pairs).
    """
    objects = list(objects)
    if not TORCH_GE_2_4:
        logger.debug('torch %s has no weights_only allow-list (torch>=2.4); mmengine '
                     'checkpoints load with its default weights_only=False', torch.__version__)
        return False
    if not TORCH_GE_2_6:
        import _codecs
        plain = [obj[0] if isinstance(obj, tuple) else obj for obj in objects]
        plain.append(_codecs.encode)
        objects = list({id(obj): obj for obj in plain}.values())
    torch.serialization.add_safe_globals(objects)
    return True


# --- mixed precision ---------------------------------------------------------------------

#: CPU fp16 in the kit is fp16 autocast on CPU (torch 2.1: bf16 only) plus a CPU loss
#: scaler (``torch.amp.GradScaler('cpu')``, torch 2.3)
CPU_FP16_MIN = (2, 3)


def check_autocast(device_type: str, dtype: torch.dtype) -> None:
    """Refuse an autocast dtype this torch cannot run on ``device_type``.

    torch 2.1's CPU autocast accepts only bfloat16: for fp16 it warns, then raises a
    RuntimeError entering the context (inside the first training step); fp16 on CPU also
    needs the CPU loss scaler of torch 2.3. Checked: 2.1.2 (refused), 2.13.0 and 2.14.1
    (allowed).
    """
    if device_type == 'cpu' and dtype == torch.float16:
        require_torch('fp16 mixed precision on CPU (autocast fp16 + a CPU loss scaler)',
                      CPU_FP16_MIN, "use dtype='bfloat16' on CPU")


def grad_scaler(device_type: str, enabled: bool = True, **kwargs: Any):
    """A loss scaler for ``device_type``: ``torch.amp.GradScaler(device_type, ...)``.

    Below torch 2.3 there is no ``torch.amp.GradScaler``: CUDA uses
    ``torch.cuda.amp.GradScaler`` (same arguments without the device); an *enabled* CPU
    scaler does not exist there (torch.cuda's would disable itself on a CPU-only machine)
    and is refused. A disabled scaler (bf16/fp32) is built on every version.
    Checked: 2.1.2, 2.13.0, 2.14.1.
    """
    if TORCH_GE_2_3:
        return torch.amp.GradScaler(device_type, enabled=enabled, **kwargs)
    if enabled and device_type != 'cuda':
        require_torch(f'a loss scaler on {device_type!r} (torch.amp.GradScaler)', (2, 3),
                      "use dtype='bfloat16' there")
    return torch.cuda.amp.GradScaler(enabled=enabled, **kwargs)


def _sharded_scaler_takes_device() -> bool:
    import inspect
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
    return 'device' in inspect.signature(ShardedGradScaler.__init__).parameters


def sharded_grad_scaler(device_type: str, enabled: bool = True, **kwargs: Any):
    """FSDP's ``ShardedGradScaler`` for ``device_type``.

    Newer torch takes ``device`` as its first argument; torch 2.1's takes none (a device
    passed positionally lands in ``init_scale``) and is CUDA-only (it subclasses
    ``torch.cuda.amp.GradScaler``, which disables itself without CUDA), so an enabled
    non-CUDA sharded scaler is refused there. Which form applies is read from the
    signature once. Checked: 2.1.2 (no device), 2.13.0 and 2.14.1 (device).
    """
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
    if _SHARDED_SCALER_TAKES_DEVICE:
        return ShardedGradScaler(device_type, enabled=enabled, **kwargs)
    if enabled and device_type != 'cuda':
        require_torch(f'FSDP loss scaling on {device_type!r} (ShardedGradScaler(device=...))',
                      (2, 3), "use dtype='bfloat16' there")
    return ShardedGradScaler(enabled=enabled, **kwargs)


_SHARDED_SCALER_TAKES_DEVICE = _sharded_scaler_takes_device()


# --- fused optimizers --------------------------------------------------------------------

#: fused Adam/AdamW/SGD kernels on CPU
FUSED_CPU_MIN = (2, 4)


def fused_kernel_devices() -> tuple[str, ...]:
    """Device types torch's fused optimizer kernels run on (torch's own list:
    ``torch.utils._foreach_utils._get_fused_kernels_supported_devices``).

    Checked: 2.1.2 (cuda, xpu: no CPU), 2.13.0 and 2.14.1 (cpu included).
    """
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    return tuple(_get_fused_kernels_supported_devices())


def fused_param_problem(param: torch.Tensor) -> str | None:
    """Why torch's fused kernel would reject ``param`` (None when it takes it).

    torch >= 2.5 runs its own check (``torch.optim.optimizer._device_dtype_check_for_fused``,
    the one the optimizer runs at its first step); torch 2.1-2.4 made the same test inline in
    the optimizer's constructor (floating point, on a device of
    :func:`fused_kernel_devices`), which is what is done here.
    Checked: 2.1.2 (inline), 2.13.0 and 2.14.1 (torch's function).
    """
    if TORCH_GE_2_5:
        from torch.optim.optimizer import _device_dtype_check_for_fused
        try:
            _device_dtype_check_for_fused(param)
        except RuntimeError as exc:
            return str(exc)
        return None
    devices = fused_kernel_devices()
    if param.device.type in devices and torch.is_floating_point(param):
        return None
    return ('`fused=True` requires all the params to be floating point Tensors of supported '
            f'devices: {list(devices)} but {param.dtype} and {param.device.type}')


# --- torch.compile -----------------------------------------------------------------------

#: dynamo compiles mmengine's whole ``train_step`` with an SGD-momentum optimizer
COMPILE_SGD_MOMENTUM_MIN = (2, 2)


def check_compile_train_step(optimizer_cls: type | None, optimizer_cfg: dict) -> None:
    """Refuse compiling the whole ``train_step`` where this torch's dynamo crashes on it.

    torch 2.1's dynamo fails inside ``SGD.step`` with momentum (the momentum buffers are
    created on the first step, inside the graph) when mmengine compiles
    ``model.train_step`` (``compile=model``). Scoped compiles (``compile=backbone``) leave
    the optimizer outside the graph and are unaffected.
    Checked: 2.1.2 (crash, refused), 2.13.0 and 2.14.1 (compiles).
    """
    if optimizer_cls is None or not issubclass(optimizer_cls, torch.optim.SGD):
        return
    if not optimizer_cfg.get('momentum'):
        return
    require_torch('compile=model (the whole train_step) with SGD momentum',
                  COMPILE_SGD_MOMENTUM_MIN,
                  'Compile a submodule scope instead (compile=backbone or compile=a/b)')


def dynamo_graph_count() -> int:
    """Graphs dynamo has captured in this process so far.

    Reads ``torch._dynamo.utils.counters['stats']['unique_graphs']`` (torch-internal; a
    graph taken from dynamo's cache is not counted again). Checked: 2.1.2, 2.13.0.
    """
    from torch._dynamo.utils import counters
    return int(counters['stats']['unique_graphs'])


def _is_compiling() -> bool:
    """``torch.compiler.is_compiling()`` (torch >= 2.3; ``torch._dynamo.is_compiling`` before):
    True while dynamo traces, which folds it to a constant; False when run eagerly."""
    fn = getattr(torch.compiler, 'is_compiling', None) or torch._dynamo.is_compiling
    return fn()


#: the attribute :func:`compile_in_place` leaves on a module: a one-item list, the count
#: of calls that ran eagerly
_EAGER_RUNS = '_bevboost_eager_runs'


def compile_in_place(module: torch.nn.Module, **kwargs: Any) -> None:
    """Compile ``module``'s forward in place, so that dynamo traces it whatever its class.

    ``nn.Module.compile`` compiles the bound ``module._call_impl``; dynamo skips that frame
    (torch's own code) and compiles the next frame it meets, normally the module's
    ``forward``. When that forward is torch's too (``nn.Sequential``, and its children
    ``nn.Conv2d``, ``nn.ReLU``...), every frame is skipped: nothing is traced and the module
    runs eagerly, yet it is marked compiled. (``torch.compile(module)`` adds a frame of its
    own for this, ``torch._dynamo.external_utils.wrap_inline``; ``nn.Module.compile`` does
    not.) Here ``module.forward`` becomes, on the instance, ``torch.compile`` of a frame of
    this file that calls the class's forward: dynamo traces it and inlines the forward.
    ``_call_impl`` and the module's own hooks stay outside the graph, as with
    ``nn.Module.compile``; parameter names and checkpoints are unchanged. A call that runs
    that frame eagerly (dynamo disabled, failing, or out of recompiles) is counted:
    :func:`eager_runs`. A module already compiled this way is left as it is.

    Checked: 2.1.2 (``nn.Module.compile`` traces ``nn.Sequential``; so does this) and 2.13.0
    (``nn.Module.compile`` captures no graph of an ``nn.Sequential``; this captures one).
    """
    if getattr(module, _EAGER_RUNS, None) is not None:
        return
    forward = module.forward
    runs = [0]

    def traced_forward(*args: Any, **kw: Any) -> Any:
        if not _is_compiling():  # folded away in dynamo's compiled code
            runs[0] += 1
        return forward(*args, **kw)

    # a code object of its own per module: dynamo's cache, recompile limit and skip marks
    # are per code object, and the name shows in dynamo's logs
    traced_forward.__code__ = traced_forward.__code__.replace(
        co_name=f'{type(module).__name__}_forward_{id(module):x}')
    module.forward = torch.compile(traced_forward, **kwargs)
    setattr(module, _EAGER_RUNS, runs)


def is_compiled_in_place(module: torch.nn.Module) -> bool:
    """True after :func:`compile_in_place` or ``module.compile()`` (nn.Module's private slot
    ``_compiled_call_impl``). Checked: 2.1.2, 2.13.0."""
    return (getattr(module, _EAGER_RUNS, None) is not None
            or getattr(module, '_compiled_call_impl', None) is not None)


def eager_runs(module: torch.nn.Module) -> int | None:
    """Calls of a module compiled by :func:`compile_in_place` that ran eagerly, outside
    dynamo's compiled code; None for a module it did not compile."""
    runs = getattr(module, _EAGER_RUNS, None)
    return None if runs is None else runs[0]
