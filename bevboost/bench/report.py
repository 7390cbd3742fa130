"""Write a bench report: ``report.json``, ``report.md``, ``chart.png``, ``curves.png``.

Exact optimizations and accuracy-trading ones get separate tables: a speedup
that changes the training math is not comparable with one that does not.
Every figure is the median over repeats with its min–max spread.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CHART, CURVES = 'chart.png', 'curves.png'


def _fmt(value: Any, spec: str = '.1f', scale: float = 1.0, suffix: str = '') -> str:
    if value is None:
        return '–'
    return f'{value * scale:{spec}}{suffix}'


def _ms(fig: dict | None) -> str:
    """Milliseconds with precision that suits their size (toy steps are ~1 ms, PETRv2's ~1 s)."""
    value = (fig or {}).get('median')
    spec = '.2f' if value is not None and abs(value) < 10 else '.0f'
    return _sp(fig, spec)


def _sp(fig: dict | None, spec: str = '.1f', scale: float = 1.0, suffix: str = '') -> str:
    """``median (min–max)`` of a spread; the median alone when there is one repeat."""
    if not fig or fig.get('median') is None:
        return '–'
    med = _fmt(fig['median'], spec, scale, suffix)
    if fig.get('min') is None or fig['min'] == fig['max']:
        return med
    return f"{med} ({_fmt(fig['min'], spec, scale)}–{_fmt(fig['max'], spec, scale, suffix)})"


def _mem(r: dict) -> str:
    return _sp(r.get('cuda_alloc_peak_mb'), '.0f') + ' CUDA' \
        if (r.get('cuda_alloc_peak_mb') or {}).get('median') is not None \
        else _sp(r.get('host_rss_peak_mb'), '.0f') + ' host'


def _has(row: dict, key: str) -> bool:
    return (row.get(key) or {}).get('median') is not None


def gpu_sampled(rows: list[dict]) -> bool:
    """True when NVML sampled a GPU in at least one of these runs."""
    return any(_has(r, 'gpu_util_pct') for r in rows)


def no_gpu_text(report: dict, rows: list[dict]) -> str:
    """Why a report has no NVML figures, in words (one sentence)."""
    first = rows[0] if rows else {}
    state, reason = first.get('gpu_state'), first.get('gpu_reason')
    why = f' ({reason})' if reason else ''
    name = report['environment'].get('gpu')
    if name is None and state in (None, 'no-gpu'):
        return (f'No GPU: this run had no GPU{why}, so there is no GPU utilization or GPU '
                'memory figure; the memory figures are the host process\'s peak RSS.')
    if name is None:
        return (f'No GPU: none was visible to torch, and NVML sampling was off{why}; the '
                'memory figures are the host process\'s peak RSS.')
    return (f'GPU {name}, not sampled by NVML{why}: no GPU utilization figure; the memory '
            "figures are torch's CUDA allocation peak.")


def _table(rows: list[dict], gpu: bool = True) -> list[str]:
    """The variants' figures; the GPU util column only where NVML sampled a GPU."""
    head = ['variant', 'boosts', 'samples/s', 'speedup vs baseline', 'share of ceiling',
            'iteration ms (mean)', 'data wait ms', 'compute ms', 'train_step ms', 'stall share',
            'data CPU ms/sample'] + (['GPU util'] if gpu else []) + ['peak mem MB']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        util = f"| {_sp(r.get('gpu_util_pct'), '.0f', suffix='%')} " if gpu else ''
        lines.append(
            f"| {r['name']} | {', '.join(r['boosts']) or '–'} | {_sp(r['samples_per_s'], '.2f')} "
            f"| {_sp(r['speedup'], '.2f', suffix='x')} "
            f"| {_sp(r.get('share_of_ceiling'), '.0f', 100, '%')} "
            f"| {_ms(r['iter_time_ms'])} | {_ms(r['data_wait_ms'])} "
            f"| {_ms(r['compute_ms'])} | {_ms(r['train_step_ms'])} "
            f"| {_sp(r['stall_share'], '.0f', 100, '%')} "
            f"| {_ms(r['data_cpu_ms_per_sample'])} {util}| {_mem(r)} |")
    return lines


def _gpu_name(report: dict, rows: list[dict]) -> str:
    """The device NVML sampled (torch's name for device 0 where NVML gave none)."""
    names = [r['gpu_device'] for r in rows if r.get('gpu_device')]
    return names[0] if names else (report['environment'].get('gpu') or 'the GPU')


def _gpu_section(report: dict, rows: list[dict]) -> list[str]:
    """NVML's figures per variant, or why there are none."""
    if not gpu_sampled(rows):
        return [no_gpu_text(report, rows)]
    lines = [f"NVML on {_gpu_name(report, rows)}, sampled in the "
             'measured iterations (warm-up excluded). Utilization: % of time a kernel ran; '
             'memory used: the whole device (every process), torch allocated: this '
             'process\'s tensors. Median over repeats (min–max).', '',
             '| variant | GPU util mean | util p10–p90 | NVML memory used peak MB '
             '| device total MB | torch allocated peak MB | samples |', '|' + '---|' * 7]
    for r in rows:
        if not _has(r, 'gpu_util_pct'):
            lines.append(f"| {r['name']} | {r.get('gpu_state') or 'not sampled'} "
                         '| – | – | – | – | – |')
            continue
        p10, p90 = (r.get('gpu_util_p10_pct') or {}), (r.get('gpu_util_p90_pct') or {})
        band = (f"{_fmt(p10.get('median'), '.0f')}–{_fmt(p90.get('median'), '.0f')}%"
                if p10.get('median') is not None else '–')
        lines.append(f"| {r['name']} | {_sp(r['gpu_util_pct'], '.0f', suffix='%')} | {band} "
                     f"| {_sp(r.get('gpu_mem_peak_mb'), '.0f')} "
                     f"| {_fmt((r.get('gpu_mem_total_mb') or {}).get('median'), '.0f')} "
                     f"| {_sp(r.get('cuda_alloc_peak_mb'), '.0f')} "
                     f"| {_fmt((r.get('gpu_samples') or {}).get('median'), '.0f')} |")
    return lines


def _verdicts(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        v = r.get('verdict')
        if v:
            lines.append(f"- **{r['name']}**: {v['text']}.")
    return lines


def _data_path(report: dict) -> list[str]:
    dp = report.get('data_path')
    if not dp or not dp['rows']:
        return []
    targets = dp['step_targets_ms']
    head = ' | '.join(f"{t:.0f} ms step" + (' (this step)' if i == 0 else '')
                      for i, t in enumerate(targets))
    lines = ['CPU-seconds the data path spends per sample (loader workers\' process CPU time '
             '+ the main process outside the model\'s step, its data preprocessor included), '
             'and from it the cores one training '
             'process (one GPU) needs so that a step of the given length never waits: '
             'cores = CPU s/sample x batch / step s. This holds on any machine with cores '
             'like these; the step length is the GPU\'s.', '',
             f'| variant | data CPU ms/sample | workers | main process | batch | {head} |',
             '|' + '---|' * (5 + len(targets))]
    for row in dp['rows']:
        cores = ' | '.join(_fmt(c, '.2f') for c in row['cores_needed'])
        lines.append(f"| {row['name']} | {_fmt(row['data_cpu_ms_per_sample'])} | "
                     f"{_fmt(row['worker_cpu_ms_per_sample'])} | "
                     f"{_fmt(row['main_cpu_ms_per_sample'])} | {_fmt(row['batch_size'], '.0f')} "
                     f"| {cores} |")
    return lines


def _threads(rows: list[dict]) -> list[str]:
    seen = []
    for r in rows:
        t = r.get('threads')
        if not t:
            continue
        text = (f"{t['main']} torch thread(s) in the main process ({t['policy']}), "
                f"{t['workers']} loader worker(s) x {t['per_worker']} thread on "
                f"{t['cores']} cores")
        seen.append(f"- **{r['name']}**: {text}")
    return seen


def _stages(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        if not r.get('stages'):
            continue
        parts = ', '.join(f"{name} {s['mean_ms']:.2f} ms ({100 * s['share']:.0f}%)"
                          for name, s in sorted(r['stages'].items(),
                                                key=lambda kv: -kv[1]['total_s']))
        lines.append(f"- **{r['name']}** ({r.get('num_workers')} workers): {parts}")
    return lines


def _curves(rows: list[dict]) -> list[str]:
    lines = ['| variant | loss first → last | LR first → last | iterations |', '|---|---|---|---|']
    for r in rows:
        c = r.get('curves') or {}
        loss = [x for x in c.get('loss', []) if x is not None]
        lr = [x for x in c.get('lr', []) if x is not None]
        if not loss and not lr:
            continue
        lines.append(f"| {r['name']} | {_fmt(loss[0] if loss else None, '.4g')} → "
                     f"{_fmt(loss[-1] if loss else None, '.4g')} | "
                     f"{_fmt(lr[0] if lr else None, '.3g')} → {_fmt(lr[-1] if lr else None, '.3g')}"
                     f" | {len(c.get('iter', []))} |")
    return lines


def _trace(report: dict) -> list[str]:
    t = report.get('trace')
    if not t:
        return ['No trace in this run (`--trace-iters 0`, or the profiled run failed).']
    lines = [f"A few iterations of the first **{t['variant']}** run, profiled after its "
             'measured ones with torch.profiler; `data_loading` ranges (the main process '
             'in `next()` on the loader) and `train_step` ranges mark each iteration.', '']
    if t.get('chrome'):
        lines.append(f"- Chrome trace: [{t['chrome']}]({t['chrome']}) (chrome://tracing or "
                     'ui.perfetto.dev)')
    if t.get('tensorboard'):
        lines.append(f"- TensorBoard profile: [{t['tensorboard']}/]({t['tensorboard']}/) "
                     f"(`tensorboard --logdir {t['tensorboard']}`, needs torch-tb-profiler)")
    return lines


def _cost(report: dict) -> list[str]:
    s = report['settings']
    walls = [w for r in report['variants'] if r['status'] == 'ok'
             for w in (r.get('wall_s') or {}).get('runs', [])]
    if not walls:
        return []
    total = s.get('bench_wall_s')
    text = (f"{len(walls)} runs, training {min(walls):.0f}–{max(walls):.0f} s each "
            f"(median {sorted(walls)[len(walls) // 2]:.0f} s, process start-up not included)")
    if total:
        text += f"; the whole bench took {total:.0f} s"
    return [text + '.']


def markdown(report: dict) -> str:
    """The human-readable report."""
    rows = report['variants']
    ok = [r for r in rows if r['status'] == 'ok']
    exact = [r for r in ok if r['exact']]
    trading = [r for r in ok if not r['exact']]
    s, env = report['settings'], report['environment']
    out = [f"# bevboost bench: `{report['config']}`", '',
           f"{s['iters']} measured iterations after {s['warmup']} warm-up, {s['repeats']} "
           f"repeat(s) interleaved, seed {s['seed']}; each run in a fresh process. "
           f"torch {env['torch']}, {env['cpu_count']} CPUs, GPU: {env['gpu'] or 'none'}. "
           'Figures: median over repeats (min–max).', '',
           f'![throughput, iteration split, stall, data CPU, GPU, memory]({CHART})', '']
    gap = report.get('ceiling')
    if gap and gap.get('baseline_share_of_ceiling') is not None:
        out += [f"**Data path vs ideal:** the baseline reaches "
                f"{100 * gap['baseline_share_of_ceiling']:.0f}% of the data-free ceiling "
                f"({gap['ceiling_samples_per_s']:.2f} samples/s, same batches replayed from "
                f"memory).", '']
    verdicts = _verdicts(ok)
    if verdicts:
        out += ['## Data-bound? (each variant against the ceiling)', ''] + verdicts + ['']
    gpu = gpu_sampled(ok)
    out += ['## Exact optimizations (training math unchanged)', ''] + _table(exact, gpu) + ['']
    out += ['## Accuracy-trading optimizations', '']
    out += (_table(trading, gpu) if trading else ['None in this run.']) + ['']
    out += ['## GPU', ''] + _gpu_section(report, ok) + ['']
    data_path = _data_path(report)
    if data_path:
        out += ['## CPU cost of the data path', ''] + data_path + ['']
    out += ['## Trace', ''] + _trace(report) + ['']
    out += ['## Not run here', '']
    skipped = report['unavailable'] + report['failed']
    out += ([f"- **{u['name']}**: {u['reason']}" for u in report['unavailable']]
            + [f"- **{u['name']}** (failed): {str(u['reason'])[:300]}" for u in report['failed']]
            if skipped else ['Every variant ran.']) + ['']
    threads = _threads(ok)
    if threads:
        out += ['## Threads (chosen so workers and the train step do not oversubscribe)', ''] \
            + threads + ['']
    stage_lines = _stages(ok)
    if stage_lines:
        out += ['## Data pipeline stages (mean per call, share of pipeline time)', ''] \
            + stage_lines + ['']
    out += ['## Training curves (first repeat)', '', f'![loss and LR]({CURVES})', ''] \
        + _curves(ok) + ['']
    cost = _cost(report)
    if cost:
        out += ['## What this bench cost', ''] + cost + ['']
    out += ['Iteration = wall clock from one `next()` on the loader to the next, every hook '
            'included; data wait = time in `next()`; compute = iteration - data wait '
            '(`train_step` is the step alone). Stall share = data wait / iteration. Speedup '
            '= variant / baseline samples/s of the same repeat; share of ceiling likewise '
            'against the ceiling run. The ceiling replays the baseline\'s batches, so for a '
            'variant that changes the step itself (amp, ...) its gap to the ceiling also holds '
            'that change.', '']
    return '\n'.join(out)


def write_report(report: dict, out: str | Path) -> dict[str, Path]:
    """Write all report files into ``out``; returns them by kind."""
    out = Path(out)
    files = {'json': out / 'report.json', 'md': out / 'report.md'}
    files['json'].write_text(json.dumps(report, indent=1))
    files['md'].write_text(markdown(report))
    if any(r['status'] == 'ok' for r in report['variants']):
        from bevboost.bench.chart import charts
        chart, curves = charts(report, out)
        files.update(chart=chart, curves=curves)
    logger.info('bench report written to %s', files['md'])
    return files
