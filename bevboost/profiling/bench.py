"""``bevboost bench``: every variant in a fresh process, same data and seed.

Variants are ``baseline`` (the config as is), a boost ``name`` or
``name=value``, several joined by ``+`` (``amp+accum=4``), ``all`` (every
exact boost that can run here) and ``ceiling`` (the baseline with its batches
replayed from memory: the data-free upper bound, added automatically unless
``ceiling=False``). Repeats are interleaved (baseline, amp, ..., baseline,
amp, ...) so slow drift of a shared machine hits every variant alike.
Variants that cannot run here are reported with the reason, never dropped.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from bevboost.boosts import available_boosts, get_boost, parse_variant
from bevboost.profiling.boosts import TOOLING_BOOSTS

logger = logging.getLogger(__name__)

BASELINE, CEILING, ALL = 'baseline', 'ceiling', 'all'
#: batches the ceiling run caches and replays
REPLAY_BATCHES = 4


@dataclasses.dataclass
class Variant:
    """One column of the report."""
    name: str
    specs: list[str]
    exact: bool = True
    replay: int = 0
    reason: str | None = None  # why it cannot run here (None: it can)
    runs: list[dict] = dataclasses.field(default_factory=list)


def _boost_variant(name: str, *, lenient: bool) -> Variant:
    specs, exact, reason = [], True, None
    for part in name.split('+'):
        try:
            boost_name, options = parse_variant(part)
        except ValueError:
            if not lenient:
                raise
            return Variant(name, [], reason=f'boost {part.strip()!r} is not in this build')
        if boost_name in TOOLING_BOOSTS:
            raise ValueError(f'variant {name!r}: {boost_name!r} measures, it is not a '
                             f'variant (every run is measured)')
        boost = get_boost(boost_name)
        exact = exact and boost.card.exact
        reason = reason or boost.unavailable_reason(**options)
        specs.append(part.strip())
    return Variant(name, specs, exact=exact, reason=reason)


def _needs_value(boost: Any) -> bool:
    """True when the boost cannot apply without ``name=value`` (e.g. ``accum``)."""
    from mmengine.config import Config
    try:
        boost.apply(Config(dict(train_dataloader=dict(batch_size=1), optim_wrapper=dict(
            type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1)))))
    except TypeError as exc:
        return 'required' in str(exc) or 'missing' in str(exc)
    except Exception:  # anything else is the config's business, found in the run
        return False
    return False


def _all_variant(listed: list[Variant]) -> Variant:
    """Every exact boost that can run here: listed values first (``accum=4``), then
    each unlisted boost that needs no value."""
    picks: dict[str, str] = {}
    for v in listed:
        if v.exact and v.reason is None and len(v.specs) == 1:
            picks.setdefault(parse_variant(v.specs[0])[0], v.specs[0])
    for name, boost in available_boosts().items():
        if (name not in picks and name not in TOOLING_BOOSTS and boost.card.exact
                and boost.unavailable_reason() is None and not _needs_value(boost)):
            picks[name] = name
    return Variant(ALL, list(picks.values()), reason=None if picks else
                   'no exact boost can run on this machine')


def resolve_variants(names: Sequence[str], *, ceiling: bool = True,
                     lenient: bool = False) -> list[Variant]:
    """Variant strings -> :class:`Variant` list, baseline first.

    Args:
        names: variant strings as typed by the user.
        ceiling: add the data-free ``ceiling`` run when not listed.
        lenient: boosts missing from this build become unavailable variants
            instead of a ``ValueError`` (used for the built-in default list).
    """
    if isinstance(names, str):
        raise TypeError('variants must be a list of strings, not one string')
    out: dict[str, Variant] = {}
    for raw in names:
        name = raw.strip()
        if not name:
            raise ValueError(f'empty variant name in {list(names)!r}')
        if name in out:
            continue
        if name == BASELINE:
            out[name] = Variant(name, [])
        elif name == CEILING:
            out[name] = Variant(name, [], replay=REPLAY_BATCHES)
        elif name != ALL:
            out[name] = _boost_variant(name, lenient=lenient)
    if any(raw.strip() == ALL for raw in names):
        out[ALL] = _all_variant(list(out.values()))
    out.setdefault(BASELINE, Variant(BASELINE, []))
    if ceiling:
        out.setdefault(CEILING, Variant(CEILING, [], replay=REPLAY_BATCHES))
    ordered = [out.pop(BASELINE)] + [v for k, v in out.items() if k != CEILING]
    return ordered + ([out[CEILING]] if CEILING in out else [])


def check_out_dir(out: str | Path) -> Path:
    """Create ``out`` and prove it is writable, or raise PermissionError."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f'--out {str(out)!r} exists and is not a directory')
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix='.write-test'):
            pass
    except OSError as exc:
        raise PermissionError(f'--out {str(out)!r} is not writable: {exc.strerror or exc}') \
            from None
    return out


def _run_one(config: Path, variant: Variant, repeat: int, *, iters: int, warmup: int,
             seed: int, out: Path, timeout: float) -> dict:
    slug = variant.name.replace('=', '-').replace('+', '_').replace('/', '_')
    run_dir = out / 'runs' / f'{slug}_r{repeat}'
    run_dir.mkdir(parents=True, exist_ok=True)
    result_file = run_dir / 'result.json'
    cmd = [sys.executable, '-m', 'bevboost.profiling.bench_worker', '--config', str(config),
           '--specs', json.dumps(variant.specs), '--iters', str(iters),
           '--warmup', str(warmup), '--seed', str(seed), '--replay', str(variant.replay),
           '--work-dir', str(run_dir / 'work_dir'), '--out', str(result_file)]
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    with open(run_dir / 'log.txt', 'w') as log:
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {'status': 'failed', 'error': f'timed out after {timeout:.0f}s'}
    if not result_file.is_file():
        tail = (run_dir / 'log.txt').read_text()[-1500:]
        return {'status': 'failed', 'error': f'worker exited {proc.returncode}: {tail}'}
    return json.loads(result_file.read_text())


def run_bench(config: str | Path, variants: list[Variant], *, iters: int, warmup: int,
              repeats: int, out: str | Path, seed: int = 0, timeout: float = 900.0,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every available variant ``repeats`` times (interleaved); build the report dict."""
    for name, value, low in (('iters', iters, 1), ('warmup', warmup, 0), ('repeats', repeats, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f'{name} must be an int >= {low}, got {value!r}')
    config = Path(config)
    if not config.is_file():
        raise FileNotFoundError(f'config file not found: {config}')
    out = check_out_dir(out)
    runnable = [v for v in variants if v.reason is None]
    for v in variants:
        if v.reason is not None:
            logger.warning('variant %s cannot run here: %s', v.name, v.reason)
    for r in range(repeats):
        for v in runnable:
            result = _run_one(config, v, r, iters=iters, warmup=warmup, seed=seed,
                              out=out, timeout=timeout)
            if progress is not None:  # called once per finished run
                progress(f'{v.name} (repeat {r + 1}/{repeats}): {result.get("status")}')
            if result.get('status') != 'ok':
                logger.warning('variant %s repeat %d failed: %s', v.name, r,
                               result.get('error', '')[:300])
            v.runs.append(result)
    return build_report(str(config), variants, iters=iters, warmup=warmup,
                        repeats=repeats, seed=seed)


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _aggregate(v: Variant, base_tput: list[float | None]) -> dict[str, Any]:
    ok = [r for r in v.runs if r.get('status') == 'ok']
    entry: dict[str, Any] = {'name': v.name, 'boosts': v.specs, 'exact': v.exact,
                             'replay': bool(v.replay)}
    if v.reason is not None:
        return {**entry, 'status': 'unavailable', 'reason': v.reason}
    if not ok:
        errors = [r.get('error', 'unknown error') for r in v.runs]
        return {**entry, 'status': 'failed', 'reason': errors[0] if errors else 'did not run'}
    tput = [r['samples_per_s'] for r in ok]
    ratios = [r['samples_per_s'] / b for r, b in zip(v.runs, base_tput)
              if r.get('status') == 'ok' and r.get('samples_per_s') and b]
    first = ok[0]
    pipeline = first.get('data_pipeline') or {}
    return {
        **entry, 'status': 'ok', 'repeats': len(ok), 'failed_repeats': len(v.runs) - len(ok),
        'samples_per_s': {'median': _median(tput), 'min': min(tput), 'max': max(tput),
                          'runs': tput},
        'speedup': {'median': _median(ratios), 'min': min(ratios, default=None),
                    'max': max(ratios, default=None)},
        'iter_time_ms': _median([r['iter_time_ms']['median'] for r in ok]),
        'data_wait_ms': _median([r['data_wait_ms']['median'] for r in ok]),
        'compute_ms': _median([r['compute_ms']['median'] for r in ok]),
        'stall_share': _median([r['stall_share'] for r in ok]),
        'gpu_util_pct': _median([r['gpu']['util_mean_pct'] for r in ok]),
        'gpu_state': first['gpu']['state'], 'gpu_reason': first['gpu']['reason'],
        'gpu_mem_peak_mb': _median([r['gpu']['mem_peak_mb'] for r in ok]),
        'cuda_alloc_peak_mb': _median([r['peak_mem']['cuda_alloc_mb'] for r in ok]),
        'host_rss_peak_mb': _median([r['peak_mem']['host_rss_mb'] for r in ok]),
        'worker_cpu_cores': _median([(r.get('data_pipeline') or {}).get('worker_cpu_cores')
                                     for r in ok]),
        'hook_overhead_share': _median([r.get('hook_overhead_share') for r in ok]),
        'num_workers': first.get('num_workers'),
        'applied': first.get('applied'),
        'stages': pipeline.get('stages', {}),
        'curves': first.get('curves', {}),
    }


def environment() -> dict[str, Any]:
    import platform
    import torch
    from bevboost._optional import cuda_available
    return {'python': platform.python_version(), 'torch': torch.__version__,
            'cpu_count': os.cpu_count(), 'cuda': cuda_available(),
            'gpu': torch.cuda.get_device_name(0) if cuda_available() else None,
            'platform': platform.platform()}


def build_report(config: str, variants: list[Variant], *, iters: int, warmup: int,
                 repeats: int, seed: int) -> dict[str, Any]:
    """The ``report.json`` content from the variants' runs."""
    base = next((v for v in variants if v.name == BASELINE), None)
    base_tput = [r.get('samples_per_s') if r.get('status') == 'ok' else None
                 for r in (base.runs if base else [])]
    rows = [_aggregate(v, base_tput) for v in variants]
    by_name = {r['name']: r for r in rows}
    ceiling = by_name.get(CEILING)
    base_row = by_name.get(BASELINE)
    gap = None
    if ceiling and base_row and ceiling['status'] == base_row['status'] == 'ok':
        gap = {'baseline_share_of_ceiling': base_row['samples_per_s']['median']
               / ceiling['samples_per_s']['median'],
               'ceiling_samples_per_s': ceiling['samples_per_s']['median']}
        for row in rows:
            if row['status'] == 'ok':
                row['share_of_ceiling'] = (row['samples_per_s']['median']
                                           / ceiling['samples_per_s']['median'])
    return {
        'config': config,
        'settings': {'iters': iters, 'warmup': warmup, 'repeats': repeats, 'seed': seed,
                     'replay_batches': REPLAY_BATCHES},
        'environment': environment(),
        'variants': rows,
        'exact': [r['name'] for r in rows if r['status'] == 'ok' and r['exact']],
        'accuracy_trading': [r['name'] for r in rows if r['status'] == 'ok' and not r['exact']],
        'unavailable': [{'name': r['name'], 'reason': r['reason']} for r in rows
                        if r['status'] == 'unavailable'],
        'failed': [{'name': r['name'], 'reason': r['reason']} for r in rows
                   if r['status'] == 'failed'],
        'ceiling': gap,
    }
