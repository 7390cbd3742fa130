"""Resume under gradient accumulation: exact, re-split, or refused with the reason.

A checkpoint records how it was accumulated (per-GPU batch, counts, world
size) and, when saved mid-window, the window's partial gradients. On resume:

* same split: the partial gradients are restored and the window continues
  exactly (iteration-based loops; an epoch-based loop restarts its epoch, so
  they are dropped, with a warning);
* a different split of the same effective batch, saved on a window boundary:
  the loop position is re-counted in the new micro-batches (optimizer steps x
  new counts), so the run continues on the same samples and schedule;
* a different split saved mid-window, or a different effective batch: refused,
  saying why and what to do; mixing old partial gradients into a new window
  or silently changing the recipe is never done.
"""
from __future__ import annotations

import logging

import torch

from bevboost.seams.mmengine_optim import inner_count

logger = logging.getLogger(__name__)

CKPT_KEY = 'bevboost_accumulation'


class ResumeRefused(ValueError):
    """The checkpoint cannot continue exactly under this run's split (the user's input:
    the CLI answers it as bad input, and removes what the refused run had created)."""


def accumulation_state(runner, counts: int, epoch_based: bool) -> dict:
    """What the checkpoint records about accumulation (always, not only mid-window)."""
    wrapper = runner.optim_wrapper
    state = dict(counts=counts, per_gpu_batch=runner.train_dataloader.batch_size,
                 world_size=runner.world_size, epoch_based=epoch_based,
                 epoch_length=len(runner.train_dataloader),
                 inner_count=inner_count(wrapper))
    if counts > 1 and not wrapper.should_update():  # mid-window
        if runner.world_size > 1:
            logger.warning('checkpoint saved mid-accumulation under DDP: only rank 0 gradients '
                           'are kept; save on window boundaries (interval multiple of %d)', counts)
        model = getattr(runner.model, 'module', runner.model)
        state['grads'] = {n: p.grad.detach().cpu().clone()
                          for n, p in model.named_parameters() if p.grad is not None}
    return state


def plan_resume(runner, checkpoint: dict, counts: int, epoch_based: bool
                ) -> dict[str, torch.Tensor] | None:
    """Check a checkpoint against this run's split; re-split or refuse.

    Returns the partial gradients to restore (or None). May rewrite
    ``checkpoint['meta']['iter']`` before mmengine's resume reads it.

    Raises:
        ResumeRefused: the checkpoint cannot continue exactly under this split.
    """
    state = checkpoint.get(CKPT_KEY)
    if not state or 'counts' not in state:  # not written by the kit, or by an older kit
        return state.get('grads') if state else None
    old_counts, old_batch = state['counts'], state['per_gpu_batch']
    old_world = state.get('world_size', 1)
    batch = runner.train_dataloader.batch_size
    pending = state.get('grads')
    if (old_counts, old_batch, old_world) == (counts, batch, runner.world_size):
        if pending and epoch_based:
            logger.warning('checkpoint was saved mid-epoch with a partial accumulation window; '
                           'the epoch-based loop restarts the epoch, so its %d partial '
                           'gradients are dropped', len(pending))
            return None
        return pending
    old_split = f'{old_world} GPU(s) x batch {old_batch} x accumulation {old_counts}'
    new_split = f'{runner.world_size} GPU(s) x batch {batch} x accumulation {counts}'
    old_effective = old_world * old_batch * old_counts
    effective = runner.world_size * batch * counts
    if old_effective != effective:
        raise ResumeRefused(
            f'cannot resume: the checkpoint was trained at effective batch {old_effective} '
            f'({old_split}), this run has {effective} ({new_split}). Resuming would change the '
            'recipe mid-run; keep the split, or start a new run from the weights with load_from.')
    if pending:
        raise ResumeRefused(
            f'cannot resume: the checkpoint was saved mid-way through an accumulation window '
            f"({state['inner_count'] % old_counts} of {old_counts} micro-batches, {old_split}); "
            f'its partial gradients cannot be re-split into {new_split}. Resume with the old '
            'split, or from a checkpoint saved on a window boundary (checkpoint interval a '
            f'multiple of {old_counts}).')
    meta = checkpoint['meta']
    if epoch_based:
        new_iter = meta['epoch'] * len(runner.train_dataloader)
    else:
        new_iter = meta['iter'] // old_counts * counts
    logger.info('resume re-split from %s to %s: iteration %d -> %d (optimizer step %d)',
                old_split, new_split, meta['iter'], new_iter,
                new_iter // counts if not epoch_based else -1)
    meta['iter'] = new_iter
    return None


def restore_grads(runner, grads: dict[str, torch.Tensor]) -> None:
    model = getattr(runner.model, 'module', runner.model)
    params = dict(model.named_parameters())
    for name, grad in grads.items():
        params[name].grad = grad.to(params[name].device)
    logger.info('restored %d partly accumulated gradients from the checkpoint', len(grads))
