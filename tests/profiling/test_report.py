"""The bench report against runs whose figures are known (hand-computed expectations)."""
from __future__ import annotations

import pytest

from bevboost.bench.harness import BASELINE, CEILING, Variant, build_report
from bevboost.bench.report import markdown


def _run(samples_per_s, *, iter_ms, wait_ms, data_s_per_sample=None, step_cpu_ms=None,
         batch=2, cores=2):
    """One run's result as the bench worker writes it (only what the report reads)."""
    return {
        'status': 'ok', 'samples_per_s': samples_per_s, 'batch_size': batch,
        'iter_time_ms': {'mean': iter_ms}, 'data_wait_ms': {'mean': wait_ms},
        'compute_ms': {'mean': iter_ms - wait_ms}, 'train_step_ms': {'mean': iter_ms - wait_ms},
        'stall_share': wait_ms / iter_ms,
        'cpu': {'data_s_per_sample': data_s_per_sample, 'worker_s_per_sample': None,
                'main_outside_step_s_per_sample': data_s_per_sample,
                'main_step_s_per_sample': (step_cpu_ms or iter_ms - wait_ms) / 1e3 / batch,
                'step_cores': 1.0, 'cores_available': cores, 'torch_threads': 1,
                'device': 'cpu'},
        'gpu': {'state': 'no-gpu', 'reason': 'test'}, 'peak_mem': {'host_rss_mb': 100.0},
        'data_pipeline': {}, 'curves': {}, 'wall_s': 10.0,
        'threads': {'main': 1, 'per_worker': 1, 'workers': 1, 'cores': 2,
                    'policy': 'cores - workers'}}


@pytest.fixture
def report():
    # baseline: 75 ms of data CPU per sample, iterations of 200 ms of which 20 ms waiting;
    # ceiling: 100 ms iterations, a 1-thread step of 100 ms CPU; 'fast' nearly reaches it
    base = [_run(t, iter_ms=200, wait_ms=20, data_s_per_sample=0.075) for t in (10, 12, 11)]
    amp = [_run(t, iter_ms=150, wait_ms=30, data_s_per_sample=0.075) for t in (15, 12, 22)]
    fast = [_run(t, iter_ms=105, wait_ms=1, data_s_per_sample=0.010) for t in (19, 24, 21)]
    ceiling = [_run(t, iter_ms=100, wait_ms=0, data_s_per_sample=0.001) for t in (20, 24, 22)]
    broken = [{'status': 'failed', 'error': 'boom'}] * 3
    variants = [Variant(BASELINE, [], runs=base), Variant('amp', ['amp'], runs=amp),
                Variant('fast', ['fast'], exact=False, runs=fast),
                Variant('broken', ['broken'], runs=broken),
                Variant(CEILING, [], replay=4, runs=ceiling)]
    rep = build_report('cfg.py', variants, iters=4, warmup=1, repeats=3, seed=0)
    rep['trace'] = {'variant': BASELINE, 'chrome': 'trace.json', 'tensorboard': 'tb_profiler'}
    return rep


def _row(report, name):
    return next(r for r in report['variants'] if r['name'] == name)


def test_speedup_median_and_spread(report):
    # amp / baseline per repeat: 15/10, 12/12, 22/11 = 1.5, 1.0, 2.0
    assert _row(report, 'amp')['speedup']['median'] == pytest.approx(1.5)
    assert _row(report, 'amp')['speedup']['min'] == pytest.approx(1.0)
    assert _row(report, 'amp')['speedup']['max'] == pytest.approx(2.0)
    assert _row(report, 'amp')['samples_per_s']['median'] == 15
    assert _row(report, 'broken')['status'] == 'failed'


def test_data_bound_verdicts(report):
    base = _row(report, BASELINE)
    assert base['share_of_ceiling']['median'] == pytest.approx(0.5)  # 10/20, 12/24, 11/22
    v = base['verdict']
    assert v['data_bound'] and v['competes_for_cpu']
    # 75 ms x 2 samples per 100 ms ceiling step = 1.5 cores, + 1 for the step > 2 cores
    assert v['cores_to_feed_ceiling'] == pytest.approx(1.5)
    assert v['cpu_demand_cores'] == pytest.approx(2.5)
    assert v['gap_ms'] == pytest.approx(100) and v['extra_wait_ms'] == pytest.approx(20)
    assert v['extra_compute_ms'] == pytest.approx(80)
    assert v['compute_vs_ceiling'] == pytest.approx(1.8)
    # amp: median 15 over the ceiling's 22 = 0.68; per repeat 15/20, 12/24, 22/22
    assert _row(report, 'amp')['share_of_ceiling']['median'] == pytest.approx(15 / 22)
    assert _row(report, 'amp')['share_of_ceiling']['min'] == pytest.approx(0.5)
    assert _row(report, 'amp')['share_of_ceiling']['max'] == pytest.approx(1.0)
    assert _row(report, 'amp')['verdict']['data_bound']
    fast = _row(report, 'fast')['verdict']
    # median 21 / 22 = 0.95; 10 ms x 2 / 100 ms = 0.2 cores, 1.2 < 2
    assert not fast['data_bound'] and not fast['competes_for_cpu']
    assert report['ceiling']['baseline_share_of_ceiling'] == pytest.approx(0.5)


def test_cores_needed_per_step(report):
    dp = report['data_path']
    assert dp['step_targets_ms'] == [100, 50.0, 100.0, 250.0]
    base = next(r for r in dp['rows'] if r['name'] == BASELINE)
    assert base['cores_needed'] == pytest.approx([1.5, 3.0, 1.5, 0.6])


def test_markdown_says_data_bound_with_spreads_and_links(report):
    md = markdown(report)
    verdicts = md[md.index('## Data-bound?'):md.index('## Exact optimizations')]
    assert '**baseline**: data-bound: 50%' in verdicts
    assert 'competes with compute' in verdicts and '1.80x' in verdicts
    assert '**fast**: not data-bound: 95%' in verdicts
    assert '| amp | amp | 15.00 (12.00–22.00) | 1.50x (1.00–2.00x) | 68% (50–100%) |' in md
    assert '[trace.json](trace.json)' in md and '[tb_profiler/](tb_profiler/)' in md
    assert '1 torch thread(s) in the main process' in md
    assert 'other processes shared' not in md
    trading = md[md.index('## Accuracy-trading'):md.index('## CPU cost')]
    assert '| fast |' in trading and '| amp |' not in trading


def test_shared_machine_uses_the_step_cpu_pace():
    # the ceiling's 1-thread step took 100 ms of wall time but only 40 ms of CPU: other jobs
    # had the core. The data path must keep up with a 40 ms step: 75 x 2 / 40 = 3.75 cores
    base = [_run(10, iter_ms=200, wait_ms=20, data_s_per_sample=0.075)]
    ceiling = [_run(20, iter_ms=100, wait_ms=0, data_s_per_sample=0.001, step_cpu_ms=40)]
    rep = build_report('cfg.py', [Variant(BASELINE, [], runs=base),
                                  Variant(CEILING, [], replay=4, runs=ceiling)],
                       iters=4, warmup=1, repeats=1, seed=0)
    v = _row(rep, BASELINE)['verdict']
    assert v['step_pace_ms'] == pytest.approx(40)
    assert v['cores_to_feed_ceiling'] == pytest.approx(3.75) and v['competes_for_cpu']
    assert v['shared_machine_stretch'] == pytest.approx(2.5)
    assert 'other processes shared this machine' in v['text']


# --- GPU figures: NVML's where a GPU was sampled, "no GPU" in words where none was ----------

def _sampled(nvml_kwargs: dict, samples: int) -> dict:
    """The ``gpu`` summary a run carries, from the kit's NVML sampler on a pynvml stand-in."""
    from bevboost.profiling.gpu import GpuSampler
    from tests.profiling.test_gpu_sampler import fake_nvml
    sampler = GpuSampler(device_index=0, interval=60, nvml=fake_nvml(**nvml_kwargs)[0]).start()
    for _ in range(samples):
        sampler.sample_once()
    return sampler.stop()


def _gpu_report(gpu_by_variant: dict[str, dict], cuda_alloc_mb: float | None) -> dict:
    variants = []
    for name, gpu in gpu_by_variant.items():
        run = _run(10 if name == BASELINE else 15, iter_ms=200, wait_ms=20,
                   data_s_per_sample=0.075)
        run['gpu'] = gpu
        if cuda_alloc_mb is not None:
            run['peak_mem'] = {'host_rss_mb': 100.0, 'cuda_alloc_mb': cuda_alloc_mb}
        variants.append(Variant(name, [] if name == BASELINE else [name], runs=[run]))
    return build_report('cfg.py', variants, iters=4, warmup=1, repeats=1, seed=0)


def _panels(rep):
    from bevboost.bench.chart import chart_figure
    fig = chart_figure(rep)
    return fig, fig.axes[4], fig.axes[5]  # GPU utilization, peak memory


def test_no_gpu_is_said_in_words_with_no_empty_gpu_axes():
    no_gpu = _sampled(dict(fail_init=True), 0)
    assert no_gpu['state'] == 'no-gpu'
    rep = _gpu_report({BASELINE: no_gpu, 'amp': no_gpu}, cuda_alloc_mb=None)
    rep['environment']['gpu'] = None  # as on a machine without CUDA
    md = markdown(rep)
    gpu = md[md.index('## GPU'):md.index('## Trace')]
    assert ('No GPU: this run had no GPU (FakeNVMLError: NVML Shared Library Not Found), so '
            'there is no GPU utilization or GPU memory figure') in gpu
    assert '| GPU util |' not in md and 'no-gpu' not in md  # no blank column, no raw state
    assert '| baseline | – | 10.00 | 1.00x | – | 200 | 20 | 180 | 180 | 10% | 75 | 100 host |' in md
    fig, util, mem = _panels(rep)
    assert not util.axison and not util.patches  # no axes, no bars: the reason instead
    assert 'No GPU: this run had no GPU' in ' '.join(t.get_text() for t in util.texts)
    assert 'no GPU figures' in fig._suptitle.get_text()
    assert mem.get_title() == 'peak host RSS (MB): no GPU'
    assert [b.get_height() for b in mem.patches] == [100.0, 100.0]


def test_gpu_figures_come_from_nvml_where_a_gpu_was_sampled():
    # baseline: NVML reads 40% then 60%, 1000 then 3000 MB used; amp: 80%/100%, 2000/5000 MB
    rep = _gpu_report({BASELINE: _sampled(dict(util=(40, 60), used_mb=(1000, 3000)), 2),
                       'amp': _sampled(dict(util=(80, 100), used_mb=(2000, 5000)), 2)},
                      cuda_alloc_mb=2500.0)
    md = markdown(rep)
    assert '| GPU util | peak mem MB |' in md and '| 10% | 75 | 50% | 2500 CUDA |' in md
    gpu = md[md.index('## GPU'):md.index('## Trace')]
    assert 'NVML on Fake GPU' in gpu and 'No GPU' not in gpu
    # mean, p10–p90 by linear interpolation (40 + 0.1 x 20 = 42), peak used, total, torch's
    assert '| baseline | 50% | 42–58% | 3000 | 16000 | 2500 | 2 |' in gpu
    assert '| amp | 90% | 82–98% | 5000 | 16000 | 2500 | 2 |' in gpu
    fig, util, mem = _panels(rep)
    assert util.axison and util.get_title() == 'GPU utilization % (NVML, Fake GPU)'
    assert [b.get_height() for b in util.patches] == [50.0, 90.0]
    assert util.get_ylim()[1] >= 100
    assert mem.get_title() == 'peak GPU memory MB: NVML used (bars)'
    assert [b.get_height() for b in mem.patches] == [3000.0, 5000.0]
    alloc = next(line for line in mem.lines if line.get_label() == 'torch allocated')
    assert list(alloc.get_ydata()) == [2500.0, 2500.0]  # torch's allocation peak
    assert 'no GPU' not in fig._suptitle.get_text()


@pytest.mark.gpu
def test_report_shows_nvml_figures_of_the_real_gpu():
    import torch

    from bevboost.profiling.gpu import RUNNING, GpuSampler
    sampler = GpuSampler(interval=60).start()  # samples taken below, not by the thread
    assert sampler.state == RUNNING, sampler.reason
    block = torch.ones(64 * 2 ** 20, device='cuda')  # 256 MiB held while sampling
    for _ in range(3):
        sampler.sample_once()
    gpu = sampler.stop()
    del block
    rep = _gpu_report({BASELINE: gpu}, cuda_alloc_mb=torch.cuda.max_memory_allocated() / 2 ** 20)
    md = markdown(rep)
    section = md[md.index('## GPU'):md.index('## Trace')]
    assert f"NVML on {gpu['device']}" in section and 'No GPU' not in section
    row = next(line for line in section.splitlines() if line.startswith('| baseline |'))
    assert row.endswith('| 3 |')  # three NVML samples
    fig, util, mem = _panels(rep)
    assert util.axison and len(util.patches) == 1
    assert mem.patches[0].get_height() == pytest.approx(gpu['mem_peak_mb']) >= 256
