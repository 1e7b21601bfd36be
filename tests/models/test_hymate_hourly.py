"""HyMaTE's hourly (online) forward: causal, equal to the stay-level forward on each prefix, and
computed in one pass per stay."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from hymate.data.augment import drop_variables
from hymate.data.batching import EventBatch
from hymate.data.normalize import Normalizer
from hymate.data.samples import PredictionDataset, collate_samples, prefix_counts
from hymate.data.schema import EventData
from hymate.models.hymate import HyMaTE, HyMaTEConfig
from hymate.train.module import predict_raw
from tests.models.test_hymate import S, V, make_batch, rows


def model(**overrides) -> HyMaTE:
    torch.manual_seed(0)
    config = HyMaTEConfig(n_variables=V, n_statics=S, d_model=16, n_heads=2, d_state=4, **overrides)
    return HyMaTE(config).eval()


def slow_hourly(m: HyMaTE, batch: EventBatch, prefix: torch.Tensor, hour_mask: torch.Tensor,
                query_times: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """The reference: the stay-level forward on each stay cut at each hour, one pass per hour."""
    out = torch.zeros(*prefix.shape)
    for b in range(prefix.shape[0]):
        for k in range(prefix.shape[1]):
            if hour_mask[b, k]:
                query = None if query_times is None else query_times[b, k : k + 1]
                out[b, k] = m(rows(batch, [b], int(prefix[b, k])), query_times=query).logits[0, 0]
    return out


PREFIX = torch.tensor([[1, 3, 3, 8, 20, 20], [2, 5, 9, 13, 13, 13]])
HOUR_MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
QUERY_TIMES = torch.tensor([[-0.9, -0.5, -0.4, 0.1, 0.8, 0.9], [-0.8, -0.2, 0.3, 0.6, 0.0, 0.0]])


@pytest.mark.parametrize(
    "overrides",
    [{}, {"n_channel_layers": 2}, {"channel_attention": False}, {"sequence_fusion": False}, {"count_embedding": False},
     {"query_time": True}, {"query_time": True, "channel_attention": False}],
)  # fmt: skip
def test_hourly_output_equals_the_stay_level_forward_on_each_prefix(overrides):
    m = model(**overrides)
    batch = make_batch([20, 13], seed=1)
    fast = m.forward_hourly(batch, PREFIX, HOUR_MASK, QUERY_TIMES)[..., 0]
    query = QUERY_TIMES if overrides.get("query_time") else None
    assert torch.allclose(fast, slow_hourly(m, batch, PREFIX, HOUR_MASK, query), atol=1e-5)
    assert (fast[~HOUR_MASK] == 0).all()


def test_query_time_moves_the_prediction_and_defaults_to_the_last_event_time():
    m = model(query_time=True)
    batch = make_batch([20, 13], seed=1)
    with_hours = m.forward_hourly(batch, PREFIX, HOUR_MASK, QUERY_TIMES)[..., 0]
    later = m.forward_hourly(batch, PREFIX, HOUR_MASK, QUERY_TIMES + 0.3)[..., 0]
    assert (with_hours - later)[HOUR_MASK].abs().min() > 0  # same events, later hour: another prediction
    # Without query times: each slot is queried at the time of the last event it sees, in both forwards.
    fallback = m.forward_hourly(batch, PREFIX, HOUR_MASK)[..., 0]
    assert torch.allclose(fallback, slow_hourly(m, batch, PREFIX, HOUR_MASK), atol=1e-5)
    last = torch.stack([batch.times[b, PREFIX[b] - 1] for b in range(2)])
    assert torch.allclose(fallback, m.forward_hourly(batch, PREFIX, HOUR_MASK, last)[..., 0], atol=1e-6)
    # The stay-level forward also reads the batch's own query times.
    cut = rows(batch, [0], 8)
    cut.query_times = torch.tensor([0.1])
    assert torch.allclose(m(cut).logits, m(rows(batch, [0], 8), query_times=torch.tensor([0.1])).logits)


def test_query_time_off_leaves_the_stay_level_model_as_it_was():
    """Same seed, same weights and outputs as before the option existed (P12 checkpoints load)."""
    plain, off = model(), model(query_time=False)
    assert plain.state_dict().keys() == off.state_dict().keys() and not hasattr(plain, "query_time")
    batch = make_batch([7, 3], seed=2)
    assert torch.equal(plain(batch).logits, off(batch).logits)
    on = model(query_time=True)
    assert {k for k in on.state_dict() if k not in plain.state_dict()} == {
        k for k in on.state_dict() if k.startswith("query_embedding.")}


def test_stable_when_attention_scores_are_extreme():
    """Scores of +-1000 would overflow a plain exp and underflow under a shift by a later maximum."""
    m = model()
    with torch.no_grad():
        m.channel_pool_score.score.weight.mul_(300.0)
        m.sequence_fusion.score.weight.mul_(300.0)
    batch = make_batch([20, 13], seed=2)
    scores = m.channel_pool_score.scores(m.encode(batch))
    assert scores[batch.mask].abs().max() > 100
    fast = m.forward_hourly(batch, PREFIX, HOUR_MASK)[..., 0]
    assert torch.isfinite(fast).all()
    assert torch.allclose(fast, slow_hourly(m, batch, PREFIX, HOUR_MASK), atol=1e-4)


def times_and_prefix(batch: EventBatch, hours: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    """Integer event hours (sorted, 0.. per stay) and the prefix counts at `hours` for each stay."""
    raw = np.floor((batch.times.numpy() + 1) * 10).astype(float)  # times in [-1, 1] -> hours 0..20
    prefix = []
    for b in range(len(batch)):
        n = int(batch.mask[b].sum())
        prefix.append(prefix_counts(np.zeros(n, np.int64), raw[b, :n], np.zeros(len(hours), np.int64), hours))
    return raw, torch.tensor(np.stack(prefix))


@pytest.mark.parametrize("query_time", [False, True])
def test_causal_changing_data_after_an_hour_leaves_earlier_predictions_unchanged(query_time):
    m = model(query_time=query_time)
    batch = make_batch([40, 30], seed=3, width=60)
    hours = np.arange(0.0, 21.0)
    raw, prefix = times_and_prefix(batch, hours)
    query = torch.from_numpy(hours / 10 - 1).float().expand(2, -1)  # the hours on the event clock
    before = m.forward_hourly(batch, prefix, None, query)[..., 0]
    h = 9.0
    changed = EventBatch(*(x.clone() for x in (batch.times, batch.variables, batch.values, batch.mask)),
                         batch.statics, batch.labels, batch.stay_ids)  # fmt: skip
    later = torch.from_numpy(raw > h) & batch.mask
    changed.values[later] = torch.randn(int(later.sum())) * 5  # other values after hour h
    changed.variables[later] = torch.randint(1, V + 1, (int(later.sum()),))  # and other variables
    # ... and more events after hour h (stay 0 grows from 40 to 55 events).
    changed.mask[0, 40:55] = True
    changed.times[0, 40:55] = changed.times[0, 39].clamp(min=0.5)
    changed.variables[0, 40:55] = 2
    changed.values[0, 40:55] = 3.0
    _, new_prefix = times_and_prefix(changed, hours)
    after = m.forward_hourly(changed, new_prefix, None, query)[..., 0]
    upto = torch.from_numpy(hours <= h)
    assert torch.allclose(before[:, upto], after[:, upto], atol=1e-6, rtol=0)
    assert not torch.allclose(before[:, ~upto], after[:, ~upto], atol=1e-3)  # later hours do move


def test_padding_invariance_of_events_and_hours():
    m = model()
    batch = make_batch([5, 40], seed=4)
    prefix = torch.tensor([[2, 4, 5], [10, 20, 40]])
    together = m.forward_hourly(batch, prefix)[0, :, 0]
    alone = m.forward_hourly(rows(batch, [0], 5), prefix[:1])[0, :, 0]
    padded = m.forward_hourly(rows(batch, [0], 64), torch.tensor([[2, 4, 5, 5, 5]]),
                              torch.tensor([[True, True, True, False, False]]))[0, :3, 0]  # fmt: skip
    assert torch.allclose(together, alone, atol=1e-6) and torch.allclose(together, padded, atol=1e-6)


def test_an_hour_before_any_event_gets_a_finite_prediction_and_gradients_are_finite():
    m = model().train()
    batch = make_batch([12, 7], seed=5)
    prefix = torch.tensor([[0, 0, 4, 12], [0, 3, 7, 7]])
    dropped, new_prefix = drop_variables(batch, 0.5, torch.Generator().manual_seed(0), prefix=prefix)
    out = m.forward_hourly(dropped, new_prefix)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    assert m.channel_pool_score.score.weight.grad.abs().sum() > 0


def test_drop_variables_recounts_the_prefix():
    batch = make_batch([30, 12], seed=6)
    prefix = torch.tensor([[0, 10, 30], [5, 12, 12]])
    out, new_prefix = drop_variables(batch, 0.5, torch.Generator().manual_seed(0), prefix=prefix)
    for b in range(2):
        kept = set(out.variables[b][out.mask[b]].tolist())
        for k in range(3):
            before = batch.variables[b, : int(prefix[b, k])].tolist()
            assert int(new_prefix[b, k]) == sum(v in kept for v in before)


def test_bad_prefix_is_refused():
    m = model()
    with pytest.raises(ValueError, match="non-decreasing"):
        m.forward_hourly(make_batch([5]), torch.tensor([[3, 2]]))


# --- through the data path: an event table changed after hour h --------------------------
def hourly_data(seed: int = 0, n_stays: int = 6) -> EventData:
    rng = np.random.default_rng(seed)
    events, labels = [], []
    for stay in range(1, n_stays + 1):
        n_hours = int(rng.integers(8, 20))
        for hour in range(1, n_hours + 1):
            for var in rng.choice(["HR", "Temp", "MAP", "Lactate"], size=int(rng.integers(0, 4)), replace=False):
                events.append((stay, float(hour), str(var), float(rng.normal(80, 10))))
            labels.append((stay, float(hour), bool(stay % 3 == 0 and hour > n_hours - 6)))
    ev = pl.DataFrame(events, schema={"stay_id": pl.Int64, "time": pl.Float64, "variable": pl.String, "value": pl.Float64},
                      orient="row").sort("stay_id", "time", "variable")  # fmt: skip
    lab = pl.DataFrame(labels, schema={"stay_id": pl.Int64, "prediction_time": pl.Float64, "label": pl.Boolean}, orient="row")
    ids = list(range(1, n_stays + 1))
    stays = pl.DataFrame({"stay_id": ids, "split_group": ["A"] * n_stays}).join(
        ev.group_by("stay_id").len("n_events").with_columns(pl.col("n_events").cast(pl.Int64)), on="stay_id")
    statics = pl.DataFrame({"stay_id": ids, "age": rng.normal(60, 10, n_stays)})
    return EventData("physionet2019", ev, statics, lab, stays)


def test_dataset_prefix_counts_events_up_to_each_hour():
    data = hourly_data()
    norm = Normalizer.fit(data, data.stay_ids, 336.0)
    ds = PredictionDataset(data, data.stay_ids, norm)
    assert len(ds) == len(data.stay_ids) and ds.n_times.sum() == data.labels.height  # one sample per stay
    for i, stay in enumerate(ds.stay_ids):
        times = data.events.filter(pl.col("stay_id") == stay).get_column("time").to_numpy()
        item = ds[i]
        assert item["pred_times"].tolist() == data.labels.filter(pl.col("stay_id") == stay)["prediction_time"].to_list()
        assert item["prefix"].tolist() == [int((times <= h).sum()) for h in item["pred_times"]]
    # Prediction hours on the clock of the event times: an event at hour h has time t == query time of h.
    encoded = norm.encode_events(data.events)
    np.testing.assert_array_equal(norm.scale_time(encoded["time"].to_numpy()), encoded["t"].to_numpy())
    np.testing.assert_array_equal(ds.query_times, norm.scale_time(ds.pred_times))
    batch = collate_samples([ds[0], ds[1]])
    assert batch.prefix.shape == batch.time_mask.shape == batch.labels.shape == batch.query_times.shape
    assert torch.equal(batch.query_times[0, : len(ds[0]["pred_times"])], torch.from_numpy(ds[0]["query_times"]))


@pytest.mark.parametrize("query_time", [False, True])
def test_scores_up_to_hour_h_do_not_move_when_the_table_changes_after_h(query_time):
    data = hourly_data(seed=1)
    norm = Normalizer.fit(data, data.stay_ids, 336.0)
    m = HyMaTE(HyMaTEConfig(n_variables=norm.n_variables, n_statics=len(norm.static_names), d_model=16, n_heads=2,
                            d_state=4, query_time=query_time)).eval()  # fmt: skip
    h = 6.0
    late = pl.col("time") > h
    changed_events = pl.concat([
        data.events.with_columns(pl.when(late).then(pl.col("value") * 3 + 7).otherwise(pl.col("value")).alias("value")),
        data.events.filter(late).with_columns(pl.lit("Lactate").alias("variable")),  # extra events after h
    ]).sort("stay_id", "time", "variable")  # fmt: skip
    changed = EventData(data.name, changed_events, data.statics, data.labels, data.stays)
    ds_before, ds_after = PredictionDataset(data, data.stay_ids, norm), PredictionDataset(changed, data.stay_ids, norm)
    b, a = predict_raw(m, ds_before, batch_size=4)[:, 0], predict_raw(m, ds_after, batch_size=4)[:, 0]
    np.testing.assert_array_equal(ds_before.pred_times, ds_after.pred_times)  # the same rows, in the same order
    np.testing.assert_array_equal(ds_before.row_stay_ids, ds_after.row_stay_ids)
    early = ds_before.pred_times <= h
    np.testing.assert_allclose(b[early], a[early], atol=1e-6, rtol=0)
    assert np.abs(b[~early] - a[~early]).max() > 1e-3
