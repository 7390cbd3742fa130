"""Accumulation under DDP (gloo, CPU), in one 2-process launch for both tests.

Gradients are all-reduced only on a window's last micro-batch, and every
case of the scheduler-registry test (every registered scheduler x declaration
x accumulation 2, 3, 4) matches the large batch on every rank.
"""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bevboost.testing.scheduler_cases import registry_cases

WORLD = 2
COUNTS = 4
MICRO_BATCHES = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _allreduce_check(rank, queue):
    from mmengine.model import MMDistributedDataParallel

    from bevboost.engine.amp import BoostAmpOptimWrapper
    from bevboost.testing.toy import ToyRegressor
    torch.manual_seed(0)
    model = MMDistributedDataParallel(ToyRegressor(), device_ids=None)
    allreduces = []

    def counting_hook(state, bucket):
        allreduces.append(1)
        fut = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
        return fut.then(lambda f: f.value()[0] / WORLD)

    model.register_comm_hook(None, counting_hook)
    wrapper = BoostAmpOptimWrapper(dtype='bf16', accumulative_counts=COUNTS,
                                   optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    wrapper.initialize_count_status(model, 0, MICRO_BATCHES)
    gen = torch.Generator().manual_seed(rank)
    for _ in range(MICRO_BATCHES):
        x, y = torch.randn(2, 8, generator=gen), torch.randn(2, generator=gen)
        with wrapper.optim_context(model):
            loss = model(x, y, mode='loss')['loss']
        wrapper.update_params(loss)
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    queue.put(('sync', rank, len(allreduces), wrapper.applied_steps, weights.tolist()))


@pytest.mark.slow
def test_ddp_syncs_only_on_last_micro_batch(ddp_results):
    results = sorted(r[1:] for r in ddp_results if r[0] == 'sync')
    assert len(results) == WORLD
    for rank, n_allreduce, applied, _ in results:
        assert applied == MICRO_BATCHES // COUNTS
        # one all-reduce round per optimizer step (the toy model fits one bucket)
        assert n_allreduce == MICRO_BATCHES // COUNTS, (rank, n_allreduce)
    assert results[0][3] == results[1][3]  # ranks stay in sync


@pytest.mark.slow
def test_ddp_ranks_agree_on_skipping_a_non_finite_step(ddp_results):
    results = sorted(r[1:] for r in ddp_results if r[0] == 'guard')
    assert [(applied, skipped) for _, applied, skipped, _ in results] == [(2, 1)] * WORLD
    assert results[0][3] == results[1][3]  # no rank stepped alone


#: the single-process test's whole matrix: every registered scheduler x declaration x k
DDP_CASES = registry_cases()


def _guard_check(rank, queue):
    """Rank 1 alone has a NaN loss term with no gradient path: both ranks must skip."""
    from mmengine.model import MMDistributedDataParallel

    from bevboost.engine.nonfinite import BoostOptimWrapper
    from bevboost.testing.toy import ToyRegressor
    torch.manual_seed(0)
    model = MMDistributedDataParallel(ToyRegressor(), device_ids=None)
    wrapper = BoostOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    gen = torch.Generator().manual_seed(rank)
    for step in range(3):
        x, y = torch.randn(2, 8, generator=gen), torch.randn(2, generator=gen)
        with wrapper.optim_context(model):
            loss = model(x, y, mode='loss')['loss']
        if step == 1 and rank == 1:
            loss = loss + torch.tensor(float('nan'))
        wrapper.update_params(loss)
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    queue.put(('guard', rank, wrapper.applied_steps, wrapper.skipped_steps, weights.tolist()))


def _worker(rank, port, work_dir, queue):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
    dist.init_process_group('gloo', rank=rank, world_size=WORLD)
    import bevboost  # noqa: F401
    from bevboost.testing.scheduler_cases import fast_config_text, run_case
    fast_config_text()
    try:
        _allreduce_check(rank, queue)
        _guard_check(rank, queue)
        for name, decl, counts in DDP_CASES:
            ref_values, ref_params, kit_values, kit_params, _ = run_case(
                f'{work_dir}/{name}-{decl}-{counts}', name, decl, counts, world_size=WORLD)
            queue.put(('schedule', rank, (name, decl, counts), ref_values, kit_values,
                       {n: p.tolist() for n, p in ref_params.items()},
                       {n: p.tolist() for n, p in kit_params.items()}))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope='module')
def ddp_results(tmp_path_factory):
    """Everything both tests check, from one launch of 2 gloo processes."""
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    port = _free_port()
    work_dir = str(tmp_path_factory.mktemp('ddp'))
    procs = [ctx.Process(target=_worker, args=(r, port, work_dir, queue)) for r in range(WORLD)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=600) for _ in range(WORLD * (2 + len(DDP_CASES)))]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results


@pytest.mark.slow
def test_ddp_accumulation_matches_large_batch_for_schedulers(ddp_results):
    from bevboost.testing.scheduler_cases import max_relative_difference
    results = [r[1:] for r in ddp_results if r[0] == 'schedule']
    by_case: dict = {}
    for rank, case, ref_values, kit_values, ref_params, kit_params in results:
        assert len(set(ref_values)) > 1, case
        assert kit_values == ref_values, case
        ref_params = {n: torch.tensor(v) for n, v in ref_params.items()}
        kit_params = {n: torch.tensor(v) for n, v in kit_params.items()}
        assert max_relative_difference(ref_params, kit_params) < 1e-5, case
        by_case.setdefault(case, []).append(kit_params)
    assert len(by_case) == len(DDP_CASES)
    for case, (rank0, rank1) in by_case.items():  # DDP kept the ranks in sync
        assert all(torch.equal(rank0[n], rank1[n]) for n in rank0), case
