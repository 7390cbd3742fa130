"""Under DDP (gloo, CPU) gradients are all-reduced only on a window's last micro-batch."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2
COUNTS = 4
MICRO_BATCHES = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _worker(rank, port, queue):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=WORLD)
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
    queue.put((rank, len(allreduces), wrapper.applied_steps, weights.tolist()))
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_syncs_only_on_last_micro_batch():
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, queue)) for r in range(WORLD)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=120) for _ in range(WORLD))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for rank, n_allreduce, applied, _ in results:
        assert applied == MICRO_BATCHES // COUNTS
        # one all-reduce round per optimizer step (the toy model fits one bucket)
        assert n_allreduce == MICRO_BATCHES // COUNTS, (rank, n_allreduce)
    assert results[0][3] == results[1][3]  # ranks stay in sync
