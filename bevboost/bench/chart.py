"""The bench charts: ``chart.png`` (throughput, GPU or host memory, data path per variant) and
``curves.png`` (loss curves). Where no GPU was sampled, the GPU panel says so in words.
"""
from __future__ import annotations

import logging
from pathlib import Path

from bevboost.bench.report import CHART, CURVES, _gpu_name, _has, gpu_sampled, no_gpu_text

logger = logging.getLogger(__name__)


def _bars(ax, names: list[str], rows: list[dict], key: str, colors: list[str],
          scale: float = 1.0) -> list[float]:
    """Median bars with min–max error bars; returns the medians."""
    figs = [r.get(key) or {} for r in rows]
    med = [scale * (f.get('median') or 0.0) for f in figs]
    low = [scale * (f['median'] - f['min']) if f.get('min') is not None else 0.0 for f in figs]
    high = [scale * (f['max'] - f['median']) if f.get('max') is not None else 0.0 for f in figs]
    ax.bar(names, med, yerr=[low, high], color=colors, capsize=3)
    return med


def _gpu_panels(ax_util, ax_mem, report: dict, ok: list[dict], names: list[str],
                colors: list[str]) -> None:
    """GPU utilization and peak memory; without NVML figures the utilization panel is the
    reason in words (no empty axes) and the memory panel shows the host's RSS."""
    from textwrap import fill
    if gpu_sampled(ok):
        _bars(ax_util, names, ok, 'gpu_util_pct', colors)
        ax_util.set_ylim(0, 105)
        ax_util.set_title(f'GPU utilization % (NVML, {_gpu_name(report, ok)})')
    else:
        ax_util.set_axis_off()
        ax_util.text(0.5, 0.5, fill(no_gpu_text(report, ok), 48), ha='center', va='center',
                     fontsize=9, transform=ax_util.transAxes)
        ax_util.set_title('GPU utilization: no GPU figures')
    if any(_has(r, 'gpu_mem_peak_mb') for r in ok):
        _bars(ax_mem, names, ok, 'gpu_mem_peak_mb', colors)
        alloc = [(r.get('cuda_alloc_peak_mb') or {}).get('median') for r in ok]
        if any(a is not None for a in alloc):
            ax_mem.plot(names, [a if a is not None else float('nan') for a in alloc], 'kx',
                        label='torch allocated')
            ax_mem.legend(fontsize=7)
        ax_mem.set_title('peak GPU memory MB: NVML used (bars)')
    elif any(_has(r, 'cuda_alloc_peak_mb') for r in ok):
        _bars(ax_mem, names, ok, 'cuda_alloc_peak_mb', colors)
        ax_mem.set_title('peak CUDA memory (MB, torch allocated)')
    else:
        _bars(ax_mem, names, ok, 'host_rss_peak_mb', colors)
        ax_mem.set_title('peak host RSS (MB): no GPU')


def chart_figure(report: dict):
    """The bench chart (a matplotlib ``Figure``): one bar chart per metric, median with
    min–max error bars."""
    from bevboost._optional import require
    require('matplotlib', 'the bench chart')
    from matplotlib.figure import Figure

    ok = [r for r in report['variants'] if r['status'] == 'ok']
    names = [r['name'] for r in ok]
    colors = ['tab:blue' if r['exact'] else 'tab:orange' for r in ok]
    fig = Figure(figsize=(15, 7.5))
    axes = fig.subplots(2, 3)
    ax = axes[0][0]
    tput = _bars(ax, names, ok, 'samples_per_s', colors)
    ax.set_title('samples/s (blue exact, orange accuracy-trading)')
    for i, r in enumerate(ok):
        sp = r['speedup']
        if sp.get('median') is not None:
            ax.annotate(f"{sp['median']:.2f}x\n({sp['min']:.2f}–{sp['max']:.2f})", (i, tput[i]),
                        ha='center', va='bottom', fontsize=7)
    ax = axes[0][1]
    waits = [(r['data_wait_ms'] or {}).get('median') or 0.0 for r in ok]
    computes = [(r['compute_ms'] or {}).get('median') or 0.0 for r in ok]
    ax.bar(names, computes, color='tab:gray', label='compute')
    ax.bar(names, waits, bottom=computes, color='tab:red', label='data wait')
    iters = [(r['iter_time_ms'] or {}) for r in ok]
    ax.errorbar(names, [i.get('median') or 0 for i in iters], fmt='none', ecolor='k', capsize=3,
                yerr=[[(i.get('median') or 0) - (i.get('min') or 0) for i in iters],
                      [(i.get('max') or 0) - (i.get('median') or 0) for i in iters]])
    ax.set_title('iteration ms (wall clock): compute + data wait')
    ax.legend(fontsize=7)
    _bars(axes[0][2], names, ok, 'stall_share', colors, scale=100)
    axes[0][2].set_title('stall share (% of iteration waiting for data)')
    _bars(axes[1][0], names, ok, 'data_cpu_ms_per_sample', colors)
    axes[1][0].set_title('data path CPU ms/sample (workers + main)')
    _gpu_panels(axes[1][1], axes[1][2], report, ok, names, colors)
    for ax in axes.flat:
        ax.tick_params(axis='x', rotation=30, labelsize=8)
    fig.suptitle('median over repeats, error bars min–max'
                 + ('' if gpu_sampled(ok) else '; no GPU figures in this run'), fontsize=9)
    fig.tight_layout()
    return fig


def charts(report: dict, out: Path) -> list[Path]:
    """The bench chart (:func:`chart_figure`) and the loss/LR curves, as PNG files."""
    from bevboost._optional import require
    require('matplotlib', 'the bench chart')
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    ok = [r for r in report['variants'] if r['status'] == 'ok']
    paths = [out / CHART]
    chart_figure(report).savefig(paths[0], dpi=90)

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
