"""The shm ring's copy to the device: :class:`~bevboost.data.shm_loader.ShmRingLoader` with
``device='cuda'`` page-locks the ring and copies each payload with ``non_blocking=True``.

More batches than slots go through the ring, so every slot is rewritten by a
worker after its batch was handed out. The GPU form keeps the device tensors
(no copy of its own) and compares them at the end with the dataset's bytes: a
copy still in flight when its slot was reused would show. The CPU form clones
each batch's ring view on arrival (views are valid until the next batch).
"""
from __future__ import annotations

import time

from bevboost.doctor.core import CheckFailed, Context, Outcome, register

SAMPLES, BATCH, SLOTS = 8, 2, 2
#: one sample's payload: 6 views of 3x256x704 uint8 (a PETRv2-sized camera batch item)
SHAPE = (6, 3, 256, 704)


class RandomViews:
    """Samples whose image payload is seeded random bytes: any byte out of place shows."""

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, index: int) -> dict:
        return dict(index=index, inputs=dict(img=expected(index)))


def expected(index: int):
    import torch
    gen = torch.Generator().manual_seed(1000 + index)
    return torch.randint(0, 256, SHAPE, generator=gen, dtype=torch.uint8)


@register('shm-ring', f'ShmRingLoader on the device: {SAMPLES // BATCH} batches of {BATCH} '
          f'through {SLOTS} slots (every slot reused), payload copied ring -> device '
          '(pinned, non_blocking on CUDA) vs the dataset\'s bytes',
          'exact: every byte identical, on the asked device')
def check_shm_ring(ctx: Context, device) -> Outcome:
    import torch

    from bevboost.data.shm_loader import ShmRingLoader
    got: dict[int, torch.Tensor] = {}
    start = time.perf_counter()
    with ShmRingLoader(RandomViews(), batch_size=BATCH, num_workers=1, slots=SLOTS,
                       device=str(device), collate_fn=list,
                       payload_keys=(('inputs', 'img'),)) as loader:
        for batch in loader:
            for sample in batch:
                img = sample['inputs']['img']
                if img.device.type != device.type:
                    raise CheckFailed(f'payload on {img.device}, asked for {device}')
                # the CPU form's payload is a ring view, valid until the next batch
                got[sample['index']] = img if device.type == 'cuda' else img.clone()
    seconds = time.perf_counter() - start
    if sorted(got) != list(range(SAMPLES)):
        raise CheckFailed(f'samples {sorted(got)} came out, expected 0..{SAMPLES - 1}')
    bad = [i for i, img in got.items() if not torch.equal(img.cpu(), expected(i))]
    if bad:
        raise CheckFailed(f'bytes differ from the dataset in samples {bad} (a slot reused '
                          'before its copy finished?)')
    mib = SAMPLES * expected(0).numel() / 2 ** 20
    return Outcome(f'{mib:.0f} MiB in {SAMPLES // BATCH} batches / {SLOTS} slots, identical '
                   f'({mib / seconds:.0f} MiB/s incl. worker start)',
                   dict(mib=mib, seconds=seconds, batches=SAMPLES // BATCH, slots=SLOTS))
