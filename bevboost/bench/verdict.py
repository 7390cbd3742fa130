"""Read a bench's figures against its data-free ceiling: data-bound or not, and why.

On a machine where loader workers and the train step share cores a slow data
path shows up two ways: as waiting for the next batch (stall), and as slower
compute, because the workers take the cores the step would use. Waiting alone
misses the second, so a variant's verdict comes from the ceiling (the same
step with batches replayed from memory):

* share of the ceiling = variant samples/s / ceiling samples/s (medians over
  repeats; the spread from same-repeat ratios); below :data:`DATA_BOUND_SHARE`
  the run is **data-bound**;
* its iteration-time gap to the ceiling splits into extra waiting and extra
  compute (iteration = data wait + compute, both wall clock);
* the data path's CPU demand: CPU-seconds per batch (workers + main process
  outside the step) over the ceiling's step time = cores needed to keep that
  step fed; with the cores the step itself keeps busy, more than the machine
  has means the data path **competes with compute**. On a CPU-only run the
  step time is taken from CPU time (step CPU-seconds / torch threads), so a
  machine shared with other jobs does not hide the competition; how much such
  jobs stretched the step is reported too.
"""
from __future__ import annotations

import statistics
from typing import Any

#: below this share of the ceiling's samples/s a run is data-bound
DATA_BOUND_SHARE = 0.9
#: step times (ms) the report gives "cores needed per GPU to keep it fed" for
STEP_TARGETS_MS = (50.0, 100.0, 250.0)
CEILING = 'ceiling'


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _med(row: dict, key: str) -> float | None:
    value = row.get(key)
    return value.get('median') if isinstance(value, dict) else value


def cores_to_feed(data_cpu_ms_per_sample: float | None, batch_size: float | None,
                  step_ms: float | None) -> float | None:
    """Cores the data path needs so that a step of ``step_ms`` never waits for a batch."""
    if None in (data_cpu_ms_per_sample, batch_size, step_ms) or not step_ms:
        return None
    return data_cpu_ms_per_sample * batch_size / step_ms


def _share_of_ceiling(row: dict, ceiling: dict) -> dict[str, Any]:
    """Median samples/s over the ceiling's median (one disturbed repeat of either side does
    not decide the verdict); min-max: the same-repeat ratios."""
    pairs = [(v, c) for v, c in zip(row.get('per_repeat_samples_per_s') or [],
                                    ceiling.get('per_repeat_samples_per_s') or [])
             if v and c]
    ratios = [v / c for v, c in pairs]
    tput, ceil = _med(row, 'samples_per_s'), _med(ceiling, 'samples_per_s')
    if not ratios or not tput or not ceil:
        return {'median': None, 'min': None, 'max': None}
    return {'median': tput / ceil, 'min': min(ratios), 'max': max(ratios)}


#: a CPU step whose wall time exceeds its CPU-time pace by this factor ran on a shared machine
SHARED_STRETCH = 1.3


def step_pace(ceiling: dict) -> tuple[float | None, float | None]:
    """(step ms the data path must keep up with, cores the step keeps busy) from the ceiling.

    CUDA: the measured step and its CPU use. CPU: step CPU-seconds over the torch
    threads, i.e. the step as fast as its threads run on an otherwise idle machine.
    """
    wall, threads = _med(ceiling, 'train_step_ms'), ceiling.get('torch_threads')
    cpu = _med(ceiling, 'step_cpu_ms')
    if ceiling.get('device') == 'cuda' or not cpu or not threads:
        return wall, _med(ceiling, 'step_cores')
    return cpu / threads, float(threads)


def _verdict(row: dict, ceiling: dict) -> dict[str, Any]:
    share = row['share_of_ceiling']['median']
    iter_v, iter_c = _med(row, 'iter_time_ms'), _med(ceiling, 'iter_time_ms')
    wait_v, wait_c = _med(row, 'data_wait_ms'), _med(ceiling, 'data_wait_ms')
    comp_v, comp_c = _med(row, 'compute_ms'), _med(ceiling, 'compute_ms')
    pace, step_cores = step_pace(ceiling)
    feed = cores_to_feed(_med(row, 'data_cpu_ms_per_sample'), row.get('batch_size'), pace)
    cores = row.get('cores_available') or ceiling.get('cores_available')
    demand = None if feed is None or step_cores is None else feed + step_cores
    competes = demand is not None and cores is not None and demand > cores
    data_bound = share is not None and share < DATA_BOUND_SHARE
    wall_step = _med(ceiling, 'train_step_ms')
    stretch = wall_step / pace if wall_step and pace else None
    out = {
        'data_bound': data_bound, 'competes_for_cpu': competes,
        'gap_ms': None if None in (iter_v, iter_c) else iter_v - iter_c,
        'extra_wait_ms': None if None in (wait_v, wait_c) else wait_v - wait_c,
        'extra_compute_ms': None if None in (comp_v, comp_c) else comp_v - comp_c,
        'compute_vs_ceiling': comp_v / comp_c if comp_v and comp_c else None,
        'step_pace_ms': pace, 'cores_to_feed_ceiling': feed, 'ceiling_step_cores': step_cores,
        'cpu_demand_cores': demand, 'cores_available': cores,
        'shared_machine_stretch': stretch if stretch and stretch > SHARED_STRETCH else None,
    }
    out['text'] = _text(out, share, comp_v, comp_c)
    return out


def _text(v: dict, share: float | None, comp_v: float | None, comp_c: float | None) -> str:
    if share is None:
        return 'no ceiling comparison (a run failed)'
    head = (f"data-bound: {100 * share:.0f}% of the ceiling's samples/s" if v['data_bound']
            else f"not data-bound: {100 * share:.0f}% of the ceiling's samples/s")
    parts = [head]
    if v['cpu_demand_cores'] is not None:
        demand = (f"keeping a {v['step_pace_ms']:.0f} ms step fed takes "
                  f"{v['cores_to_feed_ceiling']:.2f} cores of data work, the step keeps "
                  f"{v['ceiling_step_cores']:.2f} busy: {v['cpu_demand_cores']:.2f} of "
                  f"{v['cores_available']} cores")
        if v['competes_for_cpu']:
            demand = 'the data path competes with compute for the CPU: ' + demand
        parts.append(demand)
    if v['competes_for_cpu'] and comp_v and comp_c:
        parts.append(f"compute takes {comp_v:.0f} ms vs {comp_c:.0f} ms in the ceiling run "
                     f"({v['compute_vs_ceiling']:.2f}x)")
    if v['data_bound'] and v['gap_ms'] and v['gap_ms'] > 0:
        parts.append(f"of the {v['gap_ms']:.0f} ms gap per iteration, waiting for batches is "
                     f"{v['extra_wait_ms']:.0f} ms and slower compute "
                     f"{v['extra_compute_ms']:.0f} ms")
    if v['shared_machine_stretch']:
        parts.append(f"other processes shared this machine: the ceiling's step took "
                     f"{v['shared_machine_stretch']:.1f}x its CPU time per thread in wall time")
    return '; '.join(parts)


def analyse(rows: list[dict]) -> dict[str, Any]:
    """Add ``share_of_ceiling`` and ``verdict`` to each ok row; return the summaries."""
    by_name = {r['name']: r for r in rows}
    ceiling = by_name.get(CEILING)
    if ceiling is None or ceiling.get('status') != 'ok':
        return {'ceiling': None, 'data_path': None}
    for row in rows:
        if row.get('status') != 'ok':
            continue
        row['share_of_ceiling'] = _share_of_ceiling(row, ceiling)
        if row['name'] != CEILING:
            row['verdict'] = _verdict(row, ceiling)
    base = by_name.get('baseline')
    summary = {'ceiling_samples_per_s': _med(ceiling, 'samples_per_s'),
               'step_pace_ms': step_pace(ceiling)[0],
               'ceiling_iter_time_ms': _med(ceiling, 'iter_time_ms'),
               'baseline_share_of_ceiling': None}
    if base is not None and base.get('status') == 'ok':
        summary['baseline_share_of_ceiling'] = base['share_of_ceiling']['median']
    targets = [step_pace(ceiling)[0]] + list(STEP_TARGETS_MS)
    data_path = {'step_targets_ms': targets, 'rows': []}
    for row in rows:
        if row.get('status') != 'ok' or row['name'] == CEILING:
            continue
        per_sample = _med(row, 'data_cpu_ms_per_sample')
        data_path['rows'].append({
            'name': row['name'], 'data_cpu_ms_per_sample': per_sample,
            'worker_cpu_ms_per_sample': _med(row, 'worker_cpu_ms_per_sample'),
            'main_cpu_ms_per_sample': _med(row, 'main_cpu_ms_per_sample'),
            'batch_size': row.get('batch_size'),
            'cores_needed': [cores_to_feed(per_sample, row.get('batch_size'), t)
                             for t in targets]})
    return {'ceiling': summary, 'data_path': data_path}
