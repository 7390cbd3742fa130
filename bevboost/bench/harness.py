"""``bevboost bench``: every variant in a fresh process, same data and seed.

Variants are ``baseline`` (the config as is), a boost ``name`` or
``name=value``, several joined by ``+`` (``amp+accum=4``), ``all`` (every
exact boost that can run here) and ``ceiling`` (the baseline with its batches
replayed from memory: the data-free upper bound, added automatically unless
``ceiling=False``). Repeats are interleaved (baseline, amp, ..., baseline,
amp, ...) so slow drift of a shared machine hits every variant alike; every
figure is a median over repeats with its min-max spread. Variants that cannot
run here are reported with the reason, never dropped. The first baseline run
profiles a few iterations after its measured ones (Chrome trace + TensorBoard).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from bevboost.boosts import available_boosts, get_boost, parse_variant
from bevboost.boosts import tooling_boosts
from bevboost.bench.verdict import analyse

logger = logging.getLogger(__name__)

BASELINE, CEILING, ALL = 'baseline', 'ceiling', 'all'
#: batches the ceiling run caches and replays
REPLAY_BATCHES = 4
#: bench processes start with these at one thread; loader workers inherit them
ONE_THREAD_ENV = {'OMP_NUM_THREADS': '1', 'OPENBLAS_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}


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
        if boost_name in tooling_boosts():
            raise ValueError(f'variant {name!r}: {boost_name!r} measures, it is not a '
                             f'variant (every run is measured)')
        boost = get_boost(boost_name)
        exact = exact and boost.card.exact
        reason = reason or boost.unavailable_reason(**options)
        specs.append(part.strip())
    return Variant(name, specs, exact=exact, reason=reason)


def _needs_value(boost: Any) -> bool:
    """True when the boost cannot apply without ``name=value`` (e.g. ``accum``): its error on
    a minimal config asks for the value (a missing argument, or names ``name=``).
    The probe is silent: what a boost logs applying to it (a fallback this torch needs)
    is about the probe config, not the user's."""
    from mmengine.config import Config
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        boost.apply(Config(dict(
            train_dataloader=dict(batch_size=1, num_workers=2),
            optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1)))))
    except TypeError as exc:
        return 'required' in str(exc) or 'missing' in str(exc)
    except ValueError as exc:
        return f'{boost.card.name}=' in str(exc)
    except Exception:  # anything else is the config's business, found in the run
        return False
    finally:
        logging.disable(previous)
    return False


def default_variants() -> list[str]:
    """``bevboost bench``'s default list, from the boost registry: the baseline, every boost
    that switches on by name alone (new boosts join by registering), ``accum=2``, ``all``.
    Those that do not fit the config are reported as unable to run, with the reason."""
    names = [BASELINE]
    for name, boost in available_boosts().items():
        if name not in tooling_boosts() and not _needs_value(boost):
            names.append(name)
    if 'accum' in available_boosts():
        names.append('accum=2')
    return names + [ALL]


def _all_variant(listed: list[Variant]) -> Variant:
    """Every exact boost that can run here: listed values first (``accum=4``), then
    each unlisted boost that needs no value."""
    picks: dict[str, str] = {}
    for v in listed:
        if v.exact and v.reason is None and len(v.specs) == 1:
            picks.setdefault(parse_variant(v.specs[0])[0], v.specs[0])
    for name, boost in available_boosts().items():
        if (name not in picks and name not in tooling_boosts() and boost.card.exact
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
             seed: int, out: Path, timeout: float, threads: int = 0,
             trace_iters: int = 0) -> dict:
    slug = variant.name.replace('=', '-').replace('+', '_').replace('/', '_')
    run_dir = out / 'runs' / f'{slug}_r{repeat}'
    run_dir.mkdir(parents=True, exist_ok=True)
    result_file = run_dir / 'result.json'
    result_file.unlink(missing_ok=True)  # a result of an earlier bench (--force) is not this run's
    cmd = [sys.executable, '-m', 'bevboost.bench.worker', '--config', str(config),
           '--specs', json.dumps(variant.specs), '--iters', str(iters),
           '--warmup', str(warmup), '--seed', str(seed), '--replay', str(variant.replay),
           '--work-dir', str(run_dir / 'work_dir'), '--out', str(result_file),
           '--threads', str(threads), '--trace-iters', str(trace_iters)]
    env = dict(os.environ, PYTHONUNBUFFERED='1', **ONE_THREAD_ENV)
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
              threads: int = 0, trace_iters: int = 2,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every available variant ``repeats`` times (interleaved); build the report dict.

    Args:
        threads: main-process torch threads per run (0: cores - loader workers).
        trace_iters: iterations the first baseline run profiles after its
            measured ones (0: no trace).
    """
    for name, value, low in (('iters', iters, 1), ('warmup', warmup, 0), ('repeats', repeats, 1),
                             ('threads', threads, 0), ('trace_iters', trace_iters, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f'{name} must be an int >= {low}, got {value!r}')
    config = Path(config)
    if not config.is_file():
        raise FileNotFoundError(f'config file not found: {config}')
    out = check_out_dir(out)
    started = time.perf_counter()
    runnable = [v for v in variants if v.reason is None]
    for v in variants:
        if v.reason is not None:
            logger.warning('variant %s cannot run here: %s', v.name, v.reason)
    for r in range(repeats):
        for v in runnable:
            traced = trace_iters if (r == 0 and v.name == BASELINE) else 0
            result = _run_one(config, v, r, iters=iters, warmup=warmup, seed=seed,
                              out=out, timeout=timeout, threads=threads, trace_iters=traced)
            if progress is not None:  # called once per finished run
                progress(f'{v.name} (repeat {r + 1}/{repeats}): {result.get("status")}')
            if result.get('status') != 'ok':
                logger.warning('variant %s repeat %d failed: %s', v.name, r,
                               result.get('error', '')[:300])
            v.runs.append(result)
    report = build_report(str(config), variants, iters=iters, warmup=warmup,
                          repeats=repeats, seed=seed)
    report['trace'] = collect_trace(variants, out)
    report['settings'].update(bench_wall_s=time.perf_counter() - started, threads=threads,
                              trace_iters=trace_iters)
    return report


def collect_trace(variants: list[Variant], out: Path) -> dict[str, Any] | None:
    """Copy the profiled run's Chrome trace and TensorBoard run into ``out``."""
    for v in variants:
        for run in v.runs:
            trace = run.get('trace') if run.get('status') == 'ok' else None
            if not trace:
                continue
            chrome = [f for f in trace['files'] if f.endswith('.json')]
            result: dict[str, Any] = {'variant': v.name, 'chrome': None, 'tensorboard': None}
            if chrome:
                shutil.copyfile(chrome[-1], out / 'trace.json')
                result['chrome'] = 'trace.json'
            if trace.get('tb_run_dir') and Path(trace['tb_run_dir']).is_dir():
                dest = out / 'tb_profiler' / Path(trace['tb_run_dir']).name
                shutil.rmtree(dest, ignore_errors=True)
                shutil.copytree(trace['tb_run_dir'], dest)
                result['tensorboard'] = 'tb_profiler'
            return result
    return None


def spread(values: list[float | None]) -> dict[str, Any]:
    """Median, min and max over repeats (None where no repeat had the figure)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {'median': None, 'min': None, 'max': None, 'runs': []}
    return {'median': statistics.median(vals), 'min': min(vals), 'max': max(vals),
            'runs': vals}


def _get(run: dict, *keys: str) -> Any:
    """``run[k1][k2]...`` or None when any level is missing."""
    value: Any = run
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _ms(value: float | None) -> float | None:
    return None if value is None else 1e3 * value


#: figure in the report -> where it sits in one run's result (per-iteration means, so that
#: iteration = data wait + compute holds within a run, as samples/s = samples / wall clock)
RUN_FIGURES: dict[str, Callable[[dict], Any]] = {
    'samples_per_s': lambda r: r.get('samples_per_s'),
    'iter_time_ms': lambda r: _get(r, 'iter_time_ms', 'mean'),
    'data_wait_ms': lambda r: _get(r, 'data_wait_ms', 'mean'),
    'compute_ms': lambda r: _get(r, 'compute_ms', 'mean'),
    'train_step_ms': lambda r: _get(r, 'train_step_ms', 'mean'),
    'stall_share': lambda r: r.get('stall_share'),
    'data_cpu_ms_per_sample': lambda r: _ms(_get(r, 'cpu', 'data_s_per_sample')),
    'worker_cpu_ms_per_sample': lambda r: _ms(_get(r, 'cpu', 'worker_s_per_sample')),
    'main_cpu_ms_per_sample': lambda r: _ms(_get(r, 'cpu', 'main_outside_step_s_per_sample')),
    'step_cores': lambda r: _get(r, 'cpu', 'step_cores'),
    'step_cpu_ms': lambda r: _ms(_get(r, 'cpu', 'main_step_s_per_sample')
                                 * (r.get('batch_size') or 0)
                                 if _get(r, 'cpu', 'main_step_s_per_sample') is not None
                                 else None),
    'gpu_util_pct': lambda r: _get(r, 'gpu', 'util_mean_pct'),
    'gpu_util_p10_pct': lambda r: _get(r, 'gpu', 'util_p10_pct'),
    'gpu_util_p90_pct': lambda r: _get(r, 'gpu', 'util_p90_pct'),
    'gpu_mem_peak_mb': lambda r: _get(r, 'gpu', 'mem_peak_mb'),
    'gpu_mem_total_mb': lambda r: _get(r, 'gpu', 'mem_total_mb'),
    'gpu_samples': lambda r: _get(r, 'gpu', 'samples'),
    'cuda_alloc_peak_mb': lambda r: _get(r, 'peak_mem', 'cuda_alloc_mb'),
    'host_rss_peak_mb': lambda r: _get(r, 'peak_mem', 'host_rss_mb'),
    'worker_cpu_cores': lambda r: _get(r, 'data_pipeline', 'worker_cpu_cores'),
    # `compile`: its first iteration, compilation included (steady state is the rest)
    'compile_first_iter_s': lambda r: r.get('compile_first_iter_s'),
}


def _aggregate(v: Variant, base_tput: list[float | None]) -> dict[str, Any]:
    ok = [r for r in v.runs if r.get('status') == 'ok']
    entry: dict[str, Any] = {'name': v.name, 'boosts': v.specs, 'exact': v.exact,
                             'replay': bool(v.replay)}
    if v.reason is not None:
        return {**entry, 'status': 'unavailable', 'reason': v.reason}
    if not ok:
        errors = [r.get('error', 'unknown error') for r in v.runs]
        return {**entry, 'status': 'failed', 'reason': errors[0] if errors else 'did not run'}
    # speedup per repeat: this variant over the baseline run of the same repeat
    ratios = [r['samples_per_s'] / b for r, b in zip(v.runs, base_tput)
              if r.get('status') == 'ok' and r.get('samples_per_s') and b]
    first = ok[0]
    pipeline = first.get('data_pipeline') or {}
    return {
        **entry, 'status': 'ok', 'repeats': len(ok), 'failed_repeats': len(v.runs) - len(ok),
        **{name: spread([get(r) for r in ok]) for name, get in RUN_FIGURES.items()},
        'speedup': spread(ratios),
        'per_repeat_samples_per_s': [r.get('samples_per_s') if r.get('status') == 'ok'
                                     else None for r in v.runs],
        'batch_size': first.get('batch_size'),
        'cores_available': _get(first, 'cpu', 'cores_available'),
        'torch_threads': _get(first, 'cpu', 'torch_threads'),
        'device': _get(first, 'cpu', 'device'),
        'gpu_state': _get(first, 'gpu', 'state'), 'gpu_reason': _get(first, 'gpu', 'reason'),
        'gpu_device': _get(first, 'gpu', 'device'),
        'num_workers': first.get('num_workers'),
        'threads': first.get('threads'),
        'applied': first.get('applied'),
        'stages': pipeline.get('stages', {}),
        'curves': first.get('curves', {}),
        'wall_s': spread([r.get('wall_s') for r in ok]),
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
    analysis = analyse(rows)
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
        'ceiling': analysis['ceiling'],
        'data_path': analysis['data_path'],
    }
