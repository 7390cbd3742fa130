"""Shared set-up of the benchmark suites."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One thread per pool, as loader workers and ranks under ``torchrun`` (which sets
    ``OMP_NUM_THREADS=1``) run: torch, BLAS/OpenMP one thread, OpenCV none (mmengine's
    ``set_multi_processing``). Process CPU time then measures the code, not idle pool threads
    spinning, and ratios do not depend on the environment (with numpy's OpenBLAS at 2 threads
    the kit's loader path measured 3.7x instead of 7x against the stock path)."""
    import cv2
    from threadpoolctl import threadpool_limits
    torch_before, cv2_before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(0)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(torch_before)
    cv2.setNumThreads(cv2_before)
