"""The fork rule: a DataLoader worker never calls CUDA.

Once the training process has initialised CUDA, a forked child cannot; the
kit's loader must therefore decide everything GPU-related in the training
process. Here a forked worker has every way into CUDA replaced by a trap, then
builds ``FastLoadMultiViewImageFromFiles(decode='auto', backend='auto')`` and
loads a sample. The GPU form forks after CUDA is initialised on the device
(the real situation in training); a control dataset that does query CUDA must
be caught by the trap, so the check cannot pass blind.
"""
from __future__ import annotations

import traceback
from pathlib import Path

from bevboost.doctor.core import CheckFailed, Context, Outcome, register

TRAP_MESSAGE = 'CUDA touched in a DataLoader worker'


def forbid_cuda(worker_id: int) -> None:
    """``worker_init_fn``: make every way into CUDA raise in this (forked) worker."""
    import bevboost._optional as optional
    from bevboost.seams.torch_internals import trap_cuda_entry_points

    def trap(*args, **kwargs):
        raise RuntimeError(TRAP_MESSAGE)
    optional.cuda_available.cache_clear()  # the parent's cached answer must not hide a probe
    trap_cuda_entry_points(trap)


class WorkerSamples:
    """Builds the fast loader inside the worker too: an ``auto`` choice made there must not ask
    CUDA. With ``probe_cuda`` it asks CUDA itself (the control)."""

    def __init__(self, ctx: Context, probe_cuda: bool = False) -> None:
        from bevboost.data.fold import fold_options
        from bevboost.data.transforms import FastLoadMultiViewImageFromFiles
        from bevboost.doctor.decode_checks import KIT_AUG
        self.root, self.probe_cuda = ctx.nus_root(), probe_cuda
        self.options = fold_options(KIT_AUG)
        self.prebuilt = FastLoadMultiViewImageFromFiles(decode='auto', backend='auto', seed=0,
                                                        **self.options)

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> dict:
        try:
            return self.load()
        except RuntimeError as exc:  # returned, not raised: the loader's error path is slow
            if TRAP_MESSAGE not in str(exc):
                raise
            where = traceback.extract_tb(exc.__traceback__)[-2]
            return dict(trapped=f'{Path(where.filename).name}:{where.lineno} {where.line}')

    def load(self) -> dict:
        import torch

        from bevboost.data.transforms import FastLoadMultiViewImageFromFiles
        from bevboost.doctor.decode_checks import sample_results
        if self.probe_cuda:
            torch.cuda.is_available()
        built_here = FastLoadMultiViewImageFromFiles(decode='auto', backend='auto', seed=0,
                                                     **self.options)
        shipped = self.prebuilt(sample_results(self.root))
        decoded = built_here(sample_results(self.root))
        return dict(prebuilt=self.prebuilt.decode, built_here=built_here.decode,
                    shipped='img_jpeg' in shipped, decoded='img' in decoded,
                    prebuilt_out='img_jpeg' if 'img_jpeg' in shipped else 'img')


def first_batch(dataset) -> list:
    import torch
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=1,
                                         worker_init_fn=forbid_cuda,
                                         multiprocessing_context='fork',
                                         collate_fn=lambda batch: batch)
    it = iter(loader)
    try:
        return next(it)
    finally:
        del it  # its worker stops now, not in a later fork that would inherit the iterator


@register('fork-rule', "DataLoader worker (fork) with CUDA trapped builds and runs "
          "FastLoadMultiViewImageFromFiles(decode='auto', backend='auto'); on the device form "
          'CUDA is initialised in the parent first. Control: a worker that queries CUDA is caught',
          'exact: no CUDA call in the worker; the worker-built loader decodes on the CPU')
def check_fork_rule(ctx: Context, device) -> Outcome:
    import torch
    if device.type == 'cuda':
        torch.ones(1, device=device).sum().item()  # CUDA initialised before the fork
    batch = first_batch(WorkerSamples(ctx))
    trapped = [s['trapped'] for s in batch if 'trapped' in s]
    if trapped:
        raise CheckFailed(f'{TRAP_MESSAGE}: at {trapped[0]}')
    built = [s['built_here'] for s in batch]
    if built != ['worker', 'worker'] or not all(s['decoded'] for s in batch):
        raise CheckFailed(f'a loader built in the worker chose decode={built} (expected the '
                          'worker site, decoding on the CPU)')
    if not all(s['prebuilt'] == 'main' and s['shipped'] or
               s['prebuilt'] == 'worker' and not s['shipped'] for s in batch):
        raise CheckFailed(f'the parent-built loader chose {batch[0]["prebuilt"]} but its '
                          f'output holds {batch[0]["prebuilt_out"]}')
    if not all('trapped' in s for s in first_batch(WorkerSamples(ctx, probe_cuda=True))):
        raise CheckFailed('the control worker queried CUDA and the trap did not catch it')
    site = batch[0]['prebuilt']
    return Outcome(f'no CUDA call in workers; parent auto -> {site}, worker auto -> worker; '
                   'control caught', dict(parent_site=site, worker_site='worker'))
