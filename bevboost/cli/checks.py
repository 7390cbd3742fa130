"""Argument checks shared by the subcommands: bad input fails before any work starts.

A check is a function raising ``ValueError`` / ``FileNotFoundError`` whose
message names the argument and the value (``--cfg-options`` is checked by its
argparse action, as argparse checks types and choices).
``bevboost.cli.main`` turns both into one stderr line and exit status 2.
Limits are generous: they catch typos (``--lr 1e30``, a batch of 1e20), not
unusual but real setups.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from bevboost.engine.checkpoint_safety import check_checkpoint  # noqa: F401  (CLI checks)

#: an LR above this is a typo, not a recipe
MAX_LR = 10.0
#: the largest (effective, per-GPU or reference) batch, accumulation or sample count taken
MAX_COUNT = 1_000_000
#: config formats mmengine's ``Config.dump`` writes and ``Config.fromfile`` reads back
CONFIG_SUFFIXES = ('.py', '.json', '.yaml', '.yml')


def int_range(low: int, high: int = MAX_COUNT) -> Callable[[str], int]:
    """argparse type: an integer in ``[low, high]`` (its error is argparse's, exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'must be an integer, got {text!r}') from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f'must be an integer in [{low}, {high}], got {text!r}')
        return value
    parse.__name__ = 'int'
    return parse


def check_range(value: int | None, what: str, low: int = 1, high: int = MAX_COUNT) -> None:
    """``ValueError`` unless ``value`` (None: not given) is an int in ``[low, high]``."""
    if value is not None and not low <= value <= high:
        raise ValueError(f'{what} must be an integer in [{low}, {high}], got {value!r}')


def check_seconds(value: float | None, what: str, high: float = 7 * 24 * 3600.0) -> None:
    """``ValueError`` unless ``value`` (None: not given) is finite, > 0 and <= ``high``."""
    if value is not None and not (math.isfinite(value) and 0 < value <= high):
        raise ValueError(f'{what} must be a finite number of seconds > 0 and <= {high:g}, '
                         f'got {value!r}')


def check_lr(lr: float | None, what: str) -> None:
    """``ValueError`` unless ``lr`` (None: not given) is finite, > 0 and <= :data:`MAX_LR`."""
    if lr is not None and not (math.isfinite(lr) and 0 < lr <= MAX_LR):
        raise ValueError(f'{what} must be a finite number > 0 and <= {MAX_LR:g}, got {lr!r}')


def load_config_checked(path: str, cfg_options: dict[str, Any] | None = None,
                        what: str = 'config') -> Any:
    """``runner_utils.load_config`` with every failure one ``ValueError`` naming the file.

    A syntax error, a failing ``custom_imports``, an exception in the config's
    own code or ``--cfg-options`` that do not fit it are the user's input, not
    bugs of the kit, so they get one line rather than a traceback.
    """
    from bevboost._optional import MissingDependencyError
    from bevboost.runner_utils import load_config
    try:
        cfg = load_config(path)
    except (FileNotFoundError, MissingDependencyError):
        raise
    except Exception as exc:
        if isinstance(exc, ValueError) and str(path) in str(exc):
            raise  # already names the file
        raise ValueError(f'{what} {str(path)!r} cannot be read: {_one_line(exc)}') from exc
    if cfg_options:
        try:
            cfg.merge_from_dict(cfg_options)
        except Exception as exc:
            raise ValueError(f'--cfg-options do not fit {what} {str(path)!r}: '
                             f'{_one_line(exc)}') from exc
    return cfg


def _one_line(exc: BaseException) -> str:
    text = ' '.join(str(exc).split())
    return f'{type(exc).__name__}: {text}' if text else type(exc).__name__


def check_config_lr(cfg: Any, what: str) -> None:
    """Refuse an optimizer LR in ``cfg`` that is not finite or above :data:`MAX_LR`."""
    optimizer = (cfg.get('optim_wrapper') or {}).get('optimizer') or {}
    lr = optimizer.get('lr') if isinstance(optimizer, dict) else None
    if isinstance(lr, (int, float)) and not isinstance(lr, bool) and not (
            math.isfinite(lr) and 0 <= lr <= MAX_LR):
        raise ValueError(f'{what}: optim_wrapper.optimizer.lr must be a finite number in '
                         f'[0, {MAX_LR:g}], got {lr!r}')


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    return False


class CfgOptionsAction(argparse.Action):
    """mmengine's ``DictAction`` (``key=value`` pairs) with malformed pairs refused.

    A pair without ``=``, with an empty key, unbalanced brackets or a ``nan``/
    ``inf`` value is an argparse error naming the pair, not a traceback.
    """

    def __call__(self, parser, namespace, values, option_string=None):
        from bevboost.seams.mmengine_cli import parse_cfg_option_value
        options = dict(getattr(namespace, self.dest, None) or {})
        for pair in values:
            key, sep, text = pair.partition('=')
            if not sep or not key.strip() or any(not part for part in key.split('.')):
                raise argparse.ArgumentError(self, f'expected key=value, got {pair!r}')
            try:
                value = parse_cfg_option_value(text)
            except Exception:  # mmengine asserts on unbalanced brackets
                raise argparse.ArgumentError(
                    self, f'cannot parse the value of {pair!r} (unbalanced brackets or '
                    'quotes?)') from None
            if _non_finite(value):
                raise argparse.ArgumentError(self, f'non-finite number in {pair!r}')
            options[key] = value
        setattr(namespace, self.dest, options)


def check_specs(specs: list[str], what: str) -> dict[str, dict[str, Any]]:
    """Parse the boost strings once: boost name -> options. Refuse an unknown boost or one
    given twice (``amp=bf16,amp=fp16``): no last-wins."""
    from bevboost.boosts import parse_variant
    seen: dict[str, str] = {}
    parsed: dict[str, dict[str, Any]] = {}
    for spec in specs:
        try:
            name, options = parse_variant(spec)
        except ValueError as exc:
            raise ValueError(f'{what}: {exc}') from None
        if name in seen:
            raise ValueError(f'{what}: boost {name!r} given twice ({seen[name]!r} and '
                             f'{spec!r}); give each boost once')
        seen[name] = spec
        parsed[name] = options
    return parsed


def check_boosts_apply(cfg: Any, specs: Iterable[str] | dict, what: str) -> Any:
    """Apply the boosts (strings, or what :func:`check_specs` parsed) to a copy of ``cfg``
    so a bad option value fails now, not mid-run; returns the boosted config, which the
    run builds as it is (one parse, one apply).

    Info records (``applied boost ...``) are held back so that a refusal stays one
    line; the caller says what was applied once every check has passed.
    """
    from bevboost.boosts import apply_boosts
    parsed = specs if isinstance(specs, dict) else check_specs(list(specs), what)
    try:
        with quiet_info():
            return apply_boosts(cfg, parsed)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f'{what}: {exc}') from None


@contextlib.contextmanager
def quiet_info() -> Iterator[None]:
    """Hold back info records (the kit's and mmengine's ``print_log``) during trial work.

    Checks rehearse what the run will do (apply boosts to a copy of the config);
    the run itself logs it. Warnings and errors still pass.
    """
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.INFO))
    try:
        yield
    finally:
        logging.disable(previous)


def check_out_file(out: str, *, inputs: Iterable[str | None] = (), force: bool = False,
                   what: str = '--out') -> Path:
    """A config file to write: a known format, its directory present, nothing lost.

    An existing file, and above all one of ``inputs``, is only replaced with ``force``.
    """
    path = Path(out)
    if path.suffix.lower() not in CONFIG_SUFFIXES:
        raise ValueError(f'{what} {out!r}: unsupported config format {path.suffix or "(none)"!r};'
                         f' supported: {", ".join(CONFIG_SUFFIXES)}')
    if path.is_dir():
        raise ValueError(f'{what} {out!r} is a directory; give a file name')
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(f'{what} {out!r}: directory {str(parent)!r} does not exist')
    if path.exists() and not force:
        same = [i for i in inputs if i is not None and Path(i).exists()
                and path.resolve() == Path(i).resolve()]
        kind = 'is the input config' if same else 'exists'
        raise ValueError(f'{what} {out!r} {kind}; pass --force to overwrite it')
    return path


def check_empty_dir(out: str, *, force: bool = False, what: str = 'OUT') -> Path:
    """An output directory: absent or empty, or anything with ``force``; never a file."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f'{what} {out!r} is a file, not a directory')
    if path.is_dir() and not force and any(path.iterdir()):
        raise ValueError(f'{what} {out!r} is not empty; pass --force to write into it '
                         '(files with the same names are overwritten)')
    check_dir_arg(out, what)
    return path


def check_dir_arg(path: str | None, what: str) -> None:
    """A directory the run will create or use: refuse an existing file, and a directory
    that cannot be created (``/sys/x/wd``). The creation is tried and undone: a refusal
    leaves nothing behind, and the error names the argument."""
    if path is None:
        return
    target = Path(path)
    if target.exists():
        if not target.is_dir():
            raise ValueError(f'{what} {path!r} is a file, not a directory')
        try:
            with tempfile.NamedTemporaryFile(dir=target, prefix='.bevboost-write-test'):
                pass
        except OSError as exc:
            raise PermissionError(f'{what} {path!r} is not writable: '
                                  f'{exc.strerror or exc}') from None
        return
    made: list[Path] = []
    try:
        for missing in reversed([p for p in (target, *target.parents) if not p.exists()]):
            missing.mkdir()
            made.append(missing)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        where = f' {str(exc.filename)!r}' if exc.filename else ''
        raise PermissionError(f'{what} {path!r} is not writable: cannot create '
                              f'directory{where}: {reason}') from None
    finally:
        for created in reversed(made):
            with contextlib.suppress(OSError):
                created.rmdir()


def resume_checkpoint(work_dir: str | None) -> str | None:
    """The checkpoint mmengine's auto-resume would pick in ``work_dir`` (None: fresh start)."""
    if not work_dir:
        return None
    marker = Path(work_dir) / 'last_checkpoint'
    if not marker.is_file():
        return None
    text = marker.read_text().strip()
    return text or None
