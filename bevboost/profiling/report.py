"""Write a bench report: ``report.json``, ``report.md``, ``chart.png``, ``curves.png``.

Exact optimizations and accuracy-trading ones get separate tables: a speedup
that changes the training math is not comparable with one that does not.
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


def _speedup(row: dict) -> str:
    s = row.get('speedup') or {}
    if s.get('median') is None:
        return '–'
    if row.get('repeats', 1) > 1:
        return f"{s['median']:.2f}x ({s['min']:.2f}–{s['max']:.2f})"
    return f"{s['median']:.2f}x"


def _gpu(row: dict) -> str:
    if row.get('gpu_util_pct') is not None:
        return f"{row['gpu_util_pct']:.0f}%"
    return row.get('gpu_state') or '–'


def _table(rows: list[dict]) -> list[str]:
    lines = ['| variant | boosts | samples/s (median, min–max) | speedup vs baseline '
             '(spread) | % of ceiling | iter ms | data wait ms | compute ms | stall share '
             '| GPU util | peak mem MB (host RSS / CUDA) | worker CPU cores |',
             '|' + '---|' * 12]
    for r in rows:
        t = r['samples_per_s']
        mem = f"{_fmt(r['host_rss_peak_mb'], '.0f')} / {_fmt(r['cuda_alloc_peak_mb'], '.0f')}"
        lines.append(
            f"| {r['name']} | {', '.join(r['boosts']) or '–'} | {t['median']:.1f} "
            f"({t['min']:.1f}–{t['max']:.1f}) | {_speedup(r)} | "
            f"{_fmt(r.get('share_of_ceiling'), '.0f', 100, '%')} | {_fmt(r['iter_time_ms'])} | "
            f"{_fmt(r['data_wait_ms'])} | {_fmt(r['compute_ms'])} | "
            f"{_fmt(r['stall_share'], '.0f', 100, '%')} | {_gpu(r)} | {mem} | "
            f"{_fmt(r['worker_cpu_cores'], '.2f')} |")
    return lines


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
           f"torch {env['torch']}, {env['cpu_count']} CPUs, GPU: {env['gpu'] or 'none'}.", '',
           f'![throughput, stall, GPU, memory]({CHART})', '']
    gap = report.get('ceiling')
    if gap:
        out += [f"**Data path vs ideal:** the baseline reaches "
                f"{100 * gap['baseline_share_of_ceiling']:.0f}% of the data-free ceiling "
                f"({gap['ceiling_samples_per_s']:.1f} samples/s, same batches replayed from "
                f"memory).", '']
    out += ['## Exact optimizations (training math unchanged)', ''] + _table(exact) + ['']
    out += ['## Accuracy-trading optimizations', '']
    out += (_table(trading) if trading else ['None in this run.']) + ['']
    out += ['## Not run here', '']
    skipped = report['unavailable'] + report['failed']
    out += ([f"- **{u['name']}**: {u['reason']}" for u in report['unavailable']]
            + [f"- **{u['name']}** (failed): {str(u['reason'])[:300]}" for u in report['failed']]
            if skipped else ['Every variant ran.']) + ['']
    stage_lines = _stages(ok)
    if stage_lines:
        out += ['## Data pipeline stages (mean per call, share of pipeline time)', ''] \
            + stage_lines + ['']
    out += ['## Training curves (first repeat)', '', f'![loss and LR]({CURVES})', ''] \
        + _curves(ok) + ['']
    out += ['Stall share = time waiting for the next batch / iteration time. Speedup spread '
            '= min–max over repeats of (variant / baseline of the same repeat).', '']
    return '\n'.join(out)


def charts(report: dict, out: Path) -> list[Path]:
    """Bar chart per metric and loss/LR curves; needs matplotlib."""
    from bevboost._optional import require
    require('matplotlib', 'the bench chart')
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    ok = [r for r in report['variants'] if r['status'] == 'ok']
    names = [r['name'] for r in ok]
    colors = ['tab:blue' if r['exact'] else 'tab:orange' for r in ok]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    tput = [r['samples_per_s']['median'] for r in ok]
    err = [[t - r['samples_per_s']['min'] for t, r in zip(tput, ok)],
           [r['samples_per_s']['max'] - t for t, r in zip(tput, ok)]]
    ax = axes[0][0]
    ax.bar(names, tput, yerr=err, color=colors, capsize=3)
    ax.set_title('throughput (samples/s; blue exact, orange accuracy-trading)')
    for i, r in enumerate(ok):
        if r['speedup']['median'] is not None:
            ax.annotate(f"{r['speedup']['median']:.2f}x", (i, tput[i]), ha='center',
                        va='bottom', fontsize=8)
    axes[0][1].bar(names, [100 * (r['stall_share'] or 0) for r in ok], color=colors)
    axes[0][1].set_title('stall share (% of iteration waiting for data)')
    util = [r['gpu_util_pct'] for r in ok]
    axes[1][0].bar(names, [u or 0 for u in util], color=colors)
    axes[1][0].set_title('GPU utilization (%)' if any(u is not None for u in util)
                         else f"GPU utilization: {ok[0]['gpu_state'] if ok else 'n/a'}")
    mem = [r['cuda_alloc_peak_mb'] if r['cuda_alloc_peak_mb'] is not None
           else r['host_rss_peak_mb'] for r in ok]
    axes[1][1].bar(names, [m or 0 for m in mem], color=colors)
    cuda = any(r['cuda_alloc_peak_mb'] is not None for r in ok)
    axes[1][1].set_title('peak CUDA memory (MB)' if cuda else 'peak host RSS (MB)')
    for ax in axes.flat:
        ax.tick_params(axis='x', rotation=30, labelsize=8)
    fig.tight_layout()
    paths = [out / CHART]
    fig.savefig(paths[0], dpi=90)
    plt.close(fig)

    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(11, 3.5))
    for r in ok:
        c = r.get('curves') or {}
        ax_loss.plot(c.get('iter', []), c.get('loss', []), label=r['name'])
        ax_lr.plot(c.get('iter', []), c.get('lr', []), label=r['name'])
    ax_loss.set_title('loss per iteration')
    ax_lr.set_title('learning rate per iteration')
    ax_loss.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / CURVES)
    fig.savefig(paths[1], dpi=90)
    plt.close(fig)
    return paths


def write_report(report: dict, out: str | Path) -> dict[str, Path]:
    """Write all report files into ``out``; returns them by kind."""
    out = Path(out)
    files = {'json': out / 'report.json', 'md': out / 'report.md'}
    files['json'].write_text(json.dumps(report, indent=1))
    files['md'].write_text(markdown(report))
    if any(r['status'] == 'ok' for r in report['variants']):
        chart, curves = charts(report, out)
        files.update(chart=chart, curves=curves)
    logger.info('bench report written to %s', files['md'])
    return files
