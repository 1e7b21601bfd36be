"""Training-time augmentations of padded event batches."""

from __future__ import annotations

import torch
from torch import Tensor

from hymate.data.batching import EventBatch


def drop_variables(
    batch: EventBatch, p: float, generator: torch.Generator | None = None, prefix: Tensor | None = None
) -> EventBatch | tuple[EventBatch, Tensor]:
    """Remove all events of each (sample, variable) with probability p, keeping >= 1 event.

    Kept events are moved to the front of each row (stable, so time order holds), so the result
    is an ordinary right-padded batch with no holes for the sequence model to see. With `prefix`
    ([B, H] event counts per prediction hour, see `HyMaTE.forward_hourly`), also returns the
    prefix counts of the kept events.
    """
    if p <= 0:
        return batch if prefix is None else (batch, prefix)
    B, L = batch.variables.shape
    n_vars = int(batch.variables.max()) + 1
    dropped = torch.rand(B, n_vars, generator=generator, device=batch.variables.device) < p
    keep = batch.mask & ~dropped.gather(1, batch.variables)
    empty = keep.sum(dim=1) == 0
    keep[empty] = batch.mask[empty]  # never empty a stay
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    new_len = int(keep.sum(dim=1).max())
    order = order[:, :new_len]
    new_mask = torch.gather(keep, 1, order)

    def take(x: Tensor) -> Tensor:
        return torch.gather(x, 1, order) * new_mask.to(x.dtype)

    dropped_batch = EventBatch(
        times=take(batch.times), variables=take(batch.variables), values=take(batch.values), mask=new_mask,
        statics=batch.statics, labels=batch.labels, stay_ids=batch.stay_ids, query_times=batch.query_times,
        present=None if batch.present is None else take(batch.present),
    )  # fmt: skip
    if prefix is None:
        return dropped_batch
    kept_before = torch.cat([torch.zeros_like(keep[:, :1], dtype=torch.long), keep.long().cumsum(dim=1)], dim=1)
    return dropped_batch, torch.gather(kept_before, 1, prefix.long().clamp(max=L))
