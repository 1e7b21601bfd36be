"""Training on a sample of each stay's prediction times (`subsample_times`): which times are kept,
their scores equal those of the full pass, and the weighted loss is an unbiased estimate of the
mean loss over every labelled time."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from torch.nn import functional as F

from hymate.data.normalize import Normalizer
from hymate.data.samples import PredictionDataset, collate_samples
from hymate.data.schema import EventData
from hymate.models.hymate import HyMaTE, HyMaTEConfig
from hymate.train.module import score_times, subsample_times
from tests.models.test_hymate_hourly import hourly_data


def full_batch(seed: int = 2, n_stays: int = 9, unlabelled_every: int = 0):
    data = hourly_data(seed=seed, n_stays=n_stays)
    if unlabelled_every:  # some hours with no label: they carry no loss and are never kept
        labels = data.labels.with_columns(label=pl.when(pl.int_range(pl.len()) % unlabelled_every == 1)
                                          .then(None).otherwise(pl.col("label")))  # fmt: skip
        data = EventData(data.name, data.events, data.statics, labels, data.stays)
    norm = Normalizer.fit(data, data.stay_ids, 336.0)
    ds = PredictionDataset(data, data.stay_ids, norm)
    return norm, ds, collate_samples([ds[i] for i in range(len(ds))])


@pytest.mark.parametrize("binary", [True, False])
def test_keeps_positives_samples_the_rest_and_scores_them_as_the_full_pass(binary):
    norm, ds, batch = full_batch(unlabelled_every=7)
    n_keep = 3
    small, weight = subsample_times(batch, n_keep, torch.Generator().manual_seed(0), binary=binary)
    again, _ = subsample_times(batch, n_keep, torch.Generator().manual_seed(0), binary=binary)
    other, _ = subsample_times(batch, n_keep, torch.Generator().manual_seed(1), binary=binary)
    assert torch.equal(small.times, again.times) and not torch.equal(small.times, other.times)  # seeded
    assert small.events is batch.events  # the events are not touched: only prediction times are dropped
    labelled = batch.time_mask & ~torch.isnan(batch.labels)
    for b in range(len(ds)):
        full = {float(t): float(y) for t, y, k in zip(batch.times[b], batch.labels[b], labelled[b], strict=True) if k}
        kept = small.times[b][small.time_mask[b]].tolist()
        assert kept == sorted(kept) and set(kept) <= set(full)  # in time order, and only labelled times
        assert all(full[t] == small.labels[b, i] for i, t in enumerate(kept))
        positives = {t for t, y in full.items() if y == 1} if binary else set()
        n_other = len(full) - len(positives)
        assert positives <= set(kept) and len(kept) - len(positives) == min(n_keep, n_other)
        w = weight[b][small.time_mask[b]]
        assert all(w[i] == 1 for i, t in enumerate(kept) if t in positives)
        assert abs(float(w.sum()) - len(full)) < 1e-4  # weights add up to the stay's labelled times
        assert (weight[b][~small.time_mask[b]] == 0).all()
    assert (small.prefix.diff(dim=1) >= 0).all() and small.time_mask.sum(1).max() < batch.time_mask.sum(1).max()
    torch.manual_seed(0)
    m = HyMaTE(HyMaTEConfig(n_variables=norm.n_variables, n_statics=len(norm.static_names), d_model=16, n_heads=2,
                            d_state=4, query_time=True)).eval()  # fmt: skip
    with torch.no_grad():
        every = score_times(m, batch.events, batch.prefix, batch.time_mask, batch.query_times)[..., 0]
        some = score_times(m, small.events, small.prefix, small.time_mask, small.query_times)[..., 0]
    for b in range(len(ds)):
        at = {float(t): float(x) for t, x in zip(batch.times[b][batch.time_mask[b]], every[b][batch.time_mask[b]],
                                                  strict=True)}  # fmt: skip
        for t, x in zip(small.times[b][small.time_mask[b]].tolist(), some[b][small.time_mask[b]].tolist(), strict=True):
            assert abs(at[t] - x) < 1e-5


@pytest.mark.parametrize("binary", [True, False])
def test_weighted_loss_is_an_unbiased_estimate_of_the_all_times_mean(binary):
    """E[sum(w * loss) / sum(w)] over the draws equals the mean loss over every labelled time.
    sum(w) is the number of labelled times on every draw, so the expectation is exact; checked
    here by averaging many seeded draws (within 4 standard errors), and by each time's inclusion
    frequency against the inverse of its weight."""
    _, _, batch = full_batch(seed=5, n_stays=8, unlabelled_every=5)
    labelled = batch.time_mask & ~torch.isnan(batch.labels)
    logits = torch.randn(batch.labels.shape, generator=torch.Generator().manual_seed(0)) * 2  # any model's outputs
    losses = F.binary_cross_entropy_with_logits(logits, batch.labels.nan_to_num(0.0), reduction="none")
    # keyed by (row, time): every kept time carries the loss of that time in the full pass
    loss_at = {(b, float(t)): float(losses[b, k]) for b, k in labelled.nonzero().tolist() for t in [batch.times[b, k]]}
    target = float(losses[labelled].mean())
    estimates, kept_count = [], {}
    for seed in range(3000):
        small, weight = subsample_times(batch, 2, torch.Generator().manual_seed(seed), binary=binary)
        keep = small.time_mask
        picked = torch.tensor([loss_at[(b, float(small.times[b, k]))] for b, k in keep.nonzero().tolist()])
        w = weight[keep]
        assert abs(float(w.sum()) - int(labelled.sum())) < 1e-3
        estimates.append(float((picked * w).sum() / w.sum()))
        for b, k in keep.nonzero().tolist():
            kept_count[(b, float(small.times[b, k]))] = kept_count.get((b, float(small.times[b, k])), 0) + 1
    estimates = np.array(estimates)
    assert estimates.std() > 0  # the draws do differ
    assert abs(estimates.mean() - target) < 4 * estimates.std() / np.sqrt(len(estimates)), (estimates.mean(), target)
    # Exact: each of a stay's other times is kept with probability p = min(2, n) / n (positives: 1)
    # and weighted 1 / p, so its expected contribution is its own loss.
    small, weight = subsample_times(batch, 2, torch.Generator().manual_seed(0), binary=binary)
    for b in range(batch.labels.shape[0]):
        rows = labelled[b].nonzero().flatten().tolist()
        pos = [k for k in rows if binary and batch.labels[b, k] > 0.5]
        rest = [k for k in rows if k not in pos]
        if not rest:
            continue
        p = min(2, len(rest)) / len(rest)
        for k in rest:  # the draws keep each of the others about p of the time
            assert abs(kept_count.get((b, float(batch.times[b, k])), 0) / len(estimates) - p) < 0.05
        for k in small.time_mask[b].nonzero().flatten().tolist():
            is_pos = binary and bool(small.labels[b, k] > 0.5)
            assert float(weight[b, k]) == pytest.approx(1.0 if is_pos else 1 / p)


def test_more_samples_than_times_keeps_every_labelled_time_with_weight_one():
    _, _, batch = full_batch(seed=1, n_stays=4, unlabelled_every=4)
    small, weight = subsample_times(batch, 10_000, torch.Generator().manual_seed(0), binary=True)
    labelled = batch.time_mask & ~torch.isnan(batch.labels)
    for b in range(batch.labels.shape[0]):
        assert small.times[b][small.time_mask[b]].tolist() == batch.times[b][labelled[b]].tolist()
        assert small.prefix[b][small.time_mask[b]].tolist() == batch.prefix[b][labelled[b]].tolist()
    assert (weight[small.time_mask] == 1).all()
