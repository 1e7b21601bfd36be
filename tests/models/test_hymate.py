"""HyMaTE's forward pass, and guards against each defect of the authors' research code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hymate.data.augment import drop_variables
from hymate.data.batching import EventBatch
from hymate.models.hymate import HyMaTE, HyMaTEConfig

V, S = 6, 3


def make_batch(lengths: list[int], seed: int = 0, width: int | None = None) -> EventBatch:
    g = torch.Generator().manual_seed(seed)
    B, L = len(lengths), width or max(lengths)
    mask = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
    times = torch.sort(torch.rand(B, L, generator=g) * 2 - 1, dim=1).values * mask
    variables = torch.randint(1, V + 1, (B, L), generator=g) * mask
    values = torch.randn(B, L, generator=g) * mask
    return EventBatch(times, variables, values, mask, torch.randn(B, S, generator=g),
                      torch.randint(0, 2, (B,), generator=g).float(), torch.arange(B))  # fmt: skip


def model(**overrides) -> HyMaTE:
    torch.manual_seed(0)
    config = HyMaTEConfig(n_variables=V, n_statics=S, d_model=16, n_heads=2, d_state=4, **overrides)
    return HyMaTE(config).eval()


def rows(batch: EventBatch, index: list[int], width: int) -> EventBatch:
    """Rows `index` of a batch, re-padded to `width`."""
    def fit(x):
        x = x[index]
        pad = width - x.shape[1]
        return torch.nn.functional.pad(x, (0, pad)) if pad >= 0 else x[:, :width]

    return EventBatch(fit(batch.times), fit(batch.variables), fit(batch.values), fit(batch.mask),
                      batch.statics[index], batch.labels[index], batch.stay_ids[index])  # fmt: skip


def test_output_shapes_and_importances():
    m = model(n_channel_layers=2)
    batch = make_batch([7, 3, 5])
    out = m(batch)
    assert out.logits.shape == (3, 1)
    assert out.channel_importance.shape == (3, V)
    assert torch.allclose(out.channel_importance.sum(1), torch.ones(3))
    assert len(out.channel_attention) == 2 and out.channel_attention[0].shape == (3, 2, V, V)
    assert torch.allclose(out.event_weights.sum(1), torch.ones(3))
    assert (out.event_weights[~batch.mask] == 0).all()
    for b in range(3):
        seen = set(batch.variables[b][batch.mask[b]].tolist())
        assert out.observed[b].tolist() == [v + 1 in seen for v in range(V)]


def test_padding_invariance():
    """The same stay padded differently (alone, or beside a longer stay) gives the same output."""
    m = model()
    batch = make_batch([5, 40], seed=1)
    together = m(batch)
    alone = m(rows(batch, [0], 5))
    extra = m(rows(batch, [0], 64))
    for other in (alone, extra):
        assert torch.allclose(together.logits[0], other.logits[0], atol=1e-5)
        assert torch.allclose(together.channel_importance[0], other.channel_importance[0], atol=1e-5)
    # Garbage in padded slots must not matter either.
    dirty = rows(batch, [0], 20)
    dirty.values[0, 5:] = 100.0
    dirty.variables[0, 5:] = 3
    assert torch.allclose(m(dirty).logits[0], together.logits[0], atol=1e-5)


def test_event_order_matters_so_time_order_is_meaningful():
    """Mamba reads the sequence in order: the authors' code fed a random order; ours must not."""
    m = model()
    batch = make_batch([12], seed=2)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    shuffled = EventBatch(batch.times[:, perm], batch.variables[:, perm], batch.values[:, perm], batch.mask,
                          batch.statics, batch.labels, batch.stay_ids)  # fmt: skip
    assert not torch.allclose(m(batch).logits, m(shuffled).logits, atol=1e-4)


def test_mamba_blocks_have_separate_weights():
    m = model(n_mamba_layers=3)
    params = [dict(layer.named_parameters()) for layer in m.context]
    for name in params[0]:
        ids = {id(p[name]) for p in params}
        assert len(ids) == 3, name
    w = [p["mamba.in_proj.weight"] for p in params]
    assert not torch.equal(w[0], w[1])  # independently initialised, not one layer reused


def test_channel_attention_reaches_the_prediction():
    """The authors' attention block never reached the output; ours must, with gradients."""
    m = model().train()
    batch = make_batch([9, 6], seed=3)
    torch.manual_seed(1)
    m(batch).logits.sum().backward()
    for name, p in m.channel_layers.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    m.eval()
    before = m(batch).logits.clone()
    with torch.no_grad():
        m.channel_layers[0].attn.out_proj.weight.mul_(3.0)
    assert not torch.allclose(before, m(batch).logits)


def test_channel_attention_cost_does_not_grow_with_length():
    m = model()
    short, long = m(make_batch([8])), m(make_batch([300]))
    assert short.channel_attention[0].shape == long.channel_attention[0].shape == (1, 2, V, V)


def test_never_observed_variables_get_the_learned_token():
    m = model()
    batch = make_batch([4], seed=4)
    batch.variables[0, :4] = torch.tensor([1, 1, 2, 1])
    h = torch.randn(1, 4, 16)
    tokens, observed, within = m._channel_tokens(h, batch.variables, batch.mask)
    assert torch.allclose(within[0, :4].sum(), torch.tensor(2.0))  # variables 1 and 2: 1 each
    assert observed[0].tolist() == [True, True] + [False] * (V - 2)
    for v in range(2, V):
        assert torch.allclose(tokens[0, v], m.never_observed + m.channel_embedding[v])
    # Variable 2's only event: its token is that event's embedding (softmax over one item) plus
    # the embedding of its count, log1p(1) / 4.
    one = m.count_embedding(torch.tensor(math.log1p(1) / 4))
    assert torch.allclose(tokens[0, 1], h[0, 2] + one + m.channel_embedding[1], atol=1e-6)


def test_channel_tokens_carry_how_often_a_variable_was_measured():
    # The same embeddings repeated: the weighted mean is identical, only the count differs.
    m = model()
    h1 = torch.randn(1, 1, 16)
    once = m._channel_tokens(h1, torch.tensor([[1]]), torch.ones(1, 1, dtype=torch.bool))[0]
    thrice = m._channel_tokens(h1.expand(1, 3, 16), torch.tensor([[1, 1, 1]]), torch.ones(1, 3, dtype=torch.bool))[0]
    assert not torch.allclose(once[0, 0], thrice[0, 0])
    m.count_embedding = None
    once = m._channel_tokens(h1, torch.tensor([[1]]), torch.ones(1, 1, dtype=torch.bool))[0]
    thrice = m._channel_tokens(h1.expand(1, 3, 16), torch.tensor([[1, 1, 1]]), torch.ones(1, 3, dtype=torch.bool))[0]
    assert torch.allclose(once[0, 0], thrice[0, 0], atol=1e-6)


def test_variable_dropout_removes_whole_variables_and_compacts():
    batch = make_batch([30, 12], seed=5)
    out = drop_variables(batch, 0.5, torch.Generator().manual_seed(0))
    for b in range(2):
        before = batch.variables[b][batch.mask[b]].tolist()
        after = out.variables[b][out.mask[b]].tolist()
        kept = set(after)
        assert after == [v for v in before if v in kept]  # whole variables, order kept
        assert len(after) > 0
        n = int(out.mask[b].sum())
        assert out.mask[b, :n].all() and not out.mask[b, n:].any()  # a prefix: no holes
        t = out.times[b][: n]
        assert (t[1:] >= t[:-1]).all()
    assert drop_variables(batch, 0.0) is batch
    everything = drop_variables(batch, 1.0)
    assert torch.equal(everything.mask, batch.mask)  # never empties a stay


@pytest.mark.parametrize("fusion", [True, False])
def test_config_variants_run(fusion):
    m = model(sequence_fusion=fusion, mamba_ffn=True, n_outputs=3)
    out = m(make_batch([5, 2]))
    assert out.logits.shape == (2, 3) and (out.event_weights is None) == (not fusion)


def test_mamba_only_ablation_has_no_channel_path_and_stays_padding_invariant():
    m = model(channel_attention=False)
    assert not any(name.startswith("channel") for name, _ in m.named_parameters())
    batch = make_batch([5, 40], seed=1)
    out = m(batch)
    assert out.channel_importance is None and out.channel_attention == []
    assert torch.allclose(out.logits[0], m(rows(batch, [0], 64)).logits[0], atol=1e-5)
    with pytest.raises(ValueError, match="channel attention or sequence fusion"):
        model(channel_attention=False, sequence_fusion=False)


def test_channel_stats_match_a_loop_over_each_stays_events():
    from hymate.nn.layers import channel_stats

    batch = make_batch([9, 4, 12], seed=3, width=15)
    batch.values[~batch.mask] = 50.0  # padding must never leak into a statistic
    got = channel_stats(batch.values, batch.times, (batch.variables - 1).clamp(min=0), batch.mask, V)
    for b in range(3):
        n = int(batch.mask[b].sum())
        end = float(batch.times[b, n - 1])
        for v in range(V):
            idx = [i for i in range(n) if int(batch.variables[b, i]) == v + 1]
            if not idx:
                assert (got[b, v] == 0).all()
                continue
            x = batch.values[b, idx].double()
            want = [x[-1], x[0], x.mean(), x.min(), x.max(), x.var(unbiased=False).add(1e-6).sqrt(),
                    end - float(batch.times[b, idx[-1]])]  # fmt: skip
            assert torch.allclose(got[b, v].double(), torch.tensor([float(w) for w in want], dtype=torch.double), atol=1e-5)


def test_channel_stats_option_reaches_the_prediction_and_stays_padding_invariant():
    m = model(channel_stats=True)
    batch = make_batch([5, 40], seed=1)
    together = m(batch)
    assert torch.allclose(together.logits[0], m(rows(batch, [0], 5)).logits[0], atol=1e-5)
    shifted = rows(batch, [0], 5)
    first = shifted.variables[0, 0].item()
    later = [i for i in range(5) if shifted.variables[0, i].item() == first][-1]
    shifted.values[0, later] += 3.0  # only the last value of one variable changes
    assert not torch.allclose(m(shifted).logits[0], together.logits[0], atol=1e-4)
    with pytest.raises(ValueError, match="channel_stats"):
        m.forward_hourly(batch, torch.tensor([[2, 5], [10, 40]]))


def test_channel_event_weights_split_each_variables_importance_over_its_events():
    m = model()
    batch = make_batch([7, 12], seed=5, width=14)
    out = m(batch)
    w = out.channel_event_weights
    assert w.shape == batch.mask.shape and (w[~batch.mask] == 0).all() and (w >= 0).all()
    for b in range(2):
        for v in range(V):
            events = batch.mask[b] & (batch.variables[b] == v + 1)
            want = out.channel_importance[b, v] if events.any() else torch.tensor(0.0)
            assert torch.allclose(w[b][events].sum(), want, atol=1e-6)


def saved_bytes(fn) -> int:
    """Bytes of the distinct tensors autograd keeps for the backward of `fn()`."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.data_ptr()] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def test_recomputing_the_context_gives_the_same_gradients_and_keeps_less():
    batch = make_batch([40, 25, 33], width=40)
    plain, recompute = model(dropout=0.0).train(), model(dropout=0.0, recompute_context=True).train()
    recompute.load_state_dict(plain.state_dict())
    grads = []
    for m in (plain, recompute):
        m(batch).logits.sum().backward()
        grads.append({k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for k in grads[0]:
        assert torch.allclose(grads[0][k], grads[1][k], atol=1e-5), k
    kept = [saved_bytes(lambda m=m: m(batch).logits) for m in (plain, recompute)]
    assert kept[1] < 0.6 * kept[0]


def test_an_event_without_a_value_is_embedded_apart_from_every_number():
    """MEDS codes without a numeric value arrive as NaN, travel as `present` (value 0), and take the
    model's learned present vector: flipping the flag moves the output; without the option the
    model has no such parameter (old checkpoints keep loading)."""
    from hymate.data.batching import collate

    items = [{"times": np.array([0.0, 0.5], np.float32), "variables": np.array([1, 2]), "values": np.array([np.nan, 0.0], np.float32),
              "statics": np.zeros(S, np.float32), "label": 1.0, "stay_id": 7}]  # fmt: skip
    batch = collate(items)
    assert batch.present.tolist() == [[True, False]] and batch.values.tolist() == [[0.0, 0.0]]
    assert collate([{**items[0], "values": np.array([1.0, 0.0], np.float32)}]).present is None
    m = model(present_values=True)
    with_flag = m(batch).logits
    without = m(EventBatch(batch.times, batch.variables, batch.values, batch.mask, batch.statics, batch.labels, batch.stay_ids)).logits
    assert not torch.allclose(with_flag, without)
    for value in (-3.0, 0.0, 3.0):  # no number stands in for "present"
        as_number = EventBatch(batch.times, batch.variables, torch.tensor([[value, 0.0]]), batch.mask, batch.statics,
                               batch.labels, batch.stay_ids)  # fmt: skip
        assert not torch.allclose(with_flag, m(as_number).logits)
    assert "present_embedding" not in dict(model().named_parameters())
