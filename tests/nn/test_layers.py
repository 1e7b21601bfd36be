"""The shared layers (`hymate.nn.layers`) against slow loop references: causal prefix pooling,
attention pooling, the triplet embedding and the Mamba context stack."""

from __future__ import annotations

import pytest
import torch

from hymate.nn.layers import (
    AttentionPool,
    ContextLayer,
    TripletEmbedding,
    causal_attention_pool,
    embed_triplets,
    last_event_time,
    run_context,
)


def random_events(B: int, L: int, d: int, n_slots: int, n_groups: int, seed: int, scale: float = 1.0):
    """Scores, values, groups, non-decreasing slots (some beyond the last slot) and a visibility mask."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(B, L, generator=g, dtype=torch.float64) * scale
    values = torch.randn(B, L, d, generator=g, dtype=torch.float64) * 3
    groups = torch.randint(0, n_groups, (B, L), generator=g)
    slots = torch.sort(torch.randint(0, n_slots + 1, (B, L), generator=g), dim=1).values
    lengths = torch.randint(0, L + 1, (B,), generator=g)
    visible = (torch.arange(L)[None] < lengths[:, None]) & (slots < n_slots)
    return scores, values, groups, slots.clamp(max=n_slots - 1), visible


def slow_causal_pool(scores, values, groups, slots, visible, n_slots: int, n_groups: int):
    """For each (stay, slot k, group g): softmax pooling of the visible events of g in slots <= k."""
    B, L, d = values.shape
    pooled = torch.zeros(B, n_slots, n_groups, d, dtype=torch.float64)
    counts = torch.zeros(B, n_slots, n_groups, dtype=torch.float64)
    for b in range(B):
        for k in range(n_slots):
            for grp in range(n_groups):
                idx = [i for i in range(L) if visible[b, i] and int(slots[b, i]) <= k and int(groups[b, i]) == grp]
                counts[b, k, grp] = len(idx)
                if idx:
                    w = scores[b, idx].double().softmax(dim=0)
                    pooled[b, k, grp] = (w[:, None] * values[b, idx].double()).sum(dim=0)
    return pooled, counts


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_slots,n_groups", [(1, 1), (4, 1), (5, 3), (3, 7)])
def test_causal_attention_pool_matches_a_loop_over_every_prefix(seed, n_slots, n_groups):
    scores, values, groups, slots, visible = random_events(3, 17, 4, n_slots, n_groups, seed)
    got, counts = causal_attention_pool(scores, values, groups, slots, visible, n_slots, n_groups)
    want, want_counts = slow_causal_pool(scores, values, groups, slots, visible, n_slots, n_groups)
    assert got.shape == (3, n_slots, n_groups, 4) and counts.shape == (3, n_slots, n_groups)
    torch.testing.assert_close(counts, want_counts)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_causal_attention_pool_is_stable_for_extreme_scores_in_float32():
    scores, values, groups, slots, visible = random_events(2, 30, 3, 6, 2, seed=5, scale=200.0)
    # Scores spread over +-600: exp of an unshifted score overflows float32, so only shifted sums survive.
    got, _ = causal_attention_pool(scores.float(), values.float(), groups, slots, visible, 6, 2)
    want, _ = slow_causal_pool(scores, values, groups, slots, visible, 6, 2)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=1e-4)


def test_causal_attention_pool_gradients_are_finite_with_empty_cells():
    scores, values, groups, slots, visible = random_events(2, 12, 3, 5, 4, seed=7)
    visible[1] = False  # a stay with no visible event at all
    scores.requires_grad_(True)
    values.requires_grad_(True)
    pooled, counts = causal_attention_pool(scores, values, groups, slots, visible, 5, 4)
    assert (pooled[1] == 0).all() and (counts[1] == 0).all()
    pooled.sum().backward()
    assert torch.isfinite(scores.grad).all() and torch.isfinite(values.grad).all()
    assert (scores.grad[~visible] == 0).all()


def test_causal_attention_pool_with_no_slots_is_empty():
    scores, values, groups, slots, visible = random_events(2, 5, 3, 1, 1, seed=0)
    pooled, counts = causal_attention_pool(scores, values, groups, slots, visible, 0, 1)
    assert pooled.shape == (2, 0, 1, 3) and counts.shape == (2, 0, 1)


def test_attention_pool_weights_are_a_softmax_over_the_unmasked_items():
    torch.manual_seed(0)
    pool = AttentionPool(8)
    h = torch.randn(3, 6, 8)
    mask = torch.arange(6)[None] < torch.tensor([6, 2, 1])[:, None]
    pooled, weights = pool(h, mask)
    assert (weights[~mask] == 0).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    for b, n in enumerate([6, 2, 1]):
        w = pool.scores(h[b, :n]).softmax(dim=0)
        torch.testing.assert_close(pooled[b], (w[:, None] * h[b, :n]).sum(dim=0))


def test_triplet_embedding_is_the_sum_of_its_three_embeddings_and_zero_for_padding_ids():
    torch.manual_seed(0)
    emb = TripletEmbedding(n_variables=5, d_model=9)
    variables = torch.tensor([[1, 5, 3, 0]])
    values, times = torch.randn(1, 4), torch.rand(1, 4) * 2 - 1
    out = emb(variables, values, times)
    assert out.shape == (1, 4, 9)
    want = emb.variable_embedding(variables) + emb.value_embedding(values) + emb.time_embedding(times)
    assert torch.equal(out, want) and torch.equal(embed_triplets(emb, variables, values, times), want)
    assert (emb.variable_embedding.weight[0] == 0).all()
    assert sorted(k.split(".")[0] for k in emb.state_dict()) == sorted(
        ["variable_embedding"] + ["value_embedding"] * 4 + ["time_embedding"] * 4
    )


def test_last_event_time_is_minus_one_before_any_event():
    times = torch.tensor([[-0.5, 0.1, 0.7], [0.2, 0.0, 0.0]])
    counts = torch.tensor([[0, 1, 3], [1, 0, 1]])
    torch.testing.assert_close(last_event_time(times, counts), torch.tensor([[-1.0, -0.5, 0.7], [0.2, -1.0, 0.2]]))


@pytest.mark.parametrize("ffn", [False, True])
def test_context_stack_is_causal_zero_at_padding_and_the_same_when_recomputed(ffn):
    torch.manual_seed(0)
    layers = torch.nn.ModuleList(
        ContextLayer(8, d_state=4, d_conv=3, expand=2, scan_backend="reference", ffn=ffn, dropout=0.0) for _ in range(2)
    )
    h = torch.randn(2, 10, 8, requires_grad=True)
    mask = torch.arange(10)[None] < torch.tensor([10, 6])[:, None]
    out = run_context(layers, h, mask, recompute=False)
    assert (out[~mask] == 0).all()
    changed = h.detach().clone()
    changed[:, 7:] += 5.0  # only events at positions >= 7 change
    out2 = run_context(layers, changed, mask, recompute=False)
    torch.testing.assert_close(out2[:, :7], out[:, :7].detach())
    grad = torch.autograd.grad(out.square().sum(), h)[0]
    again = run_context(layers, h, mask, recompute=True)
    torch.testing.assert_close(again, out)
    torch.testing.assert_close(torch.autograd.grad(again.square().sum(), h)[0], grad)
