"""Load a config, apply boosts, build mmengine's Runner: what the CLI shares."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

from mmengine.config import Config, DictAction  # noqa: F401  (DictAction re-exported for CLIs)

from bevboost.boosts import apply_boosts

logger = logging.getLogger(__name__)


def load_config(path: str | Path, cfg_options: dict[str, Any] | None = None) -> Config:
    """Read a config file with a clear error when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'config file not found: {path}')
    cfg = Config.fromfile(str(path))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def build_runner(cfg: Config | dict, boosts: Iterable[str] | dict = (),
                 work_dir: str | Path | None = None):
    """Apply ``boosts`` (and the config's own ``bevboost_boosts``) and build a Runner."""
    if isinstance(cfg, dict) and not isinstance(cfg, Config):
        cfg = Config(cfg)
    cfg = apply_boosts(cfg, boosts)
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    if not cfg.get('work_dir'):
        raise ValueError('no work_dir: pass --work-dir or set work_dir in the config')
    return runner_from_cfg(cfg)


def runner_from_cfg(cfg: Config):
    """Build the runner the way mmengine's ``tools/train.py`` does (honours ``runner_type``)."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)
