"""The pieces of an explanation: deletion masks, re-scoring without variables, Integrated
Gradients' completeness, the attention rollout, model checks and the HTML page."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from hymate.data.batching import EventSequenceDataset, collate
from hymate.explain.faithfulness import global_mask, logits_without, random_mask, top_k_mask
from hymate.explain.gradients import event_attributions, per_variable
from hymate.explain.html_report import Section, render
from hymate.explain.importance import ExplainError, attention_rollout, require_channel_importance
from hymate.models.registry import build_model
from tests.explain.planted import WINDOW, planted_data

OBSERVED = np.array([[True, True, True, False], [True, False, False, False], [False, True, True, True]])
SCORES = np.array([[0.1, 0.5, 0.3, 0.9], [0.9, 0.0, 0.0, 0.1], [0.8, 0.1, 0.2, 0.3]])


def test_top_k_takes_the_best_measured_variables_and_leaves_one():
    mask = top_k_mask(SCORES, OBSERVED, 2)
    assert mask.tolist() == [[False, True, True, False], [False, False, False, False], [False, False, True, True]]
    assert (top_k_mask(SCORES, OBSERVED, 10).sum(1) == OBSERVED.sum(1) - 1).all()  # never empties a stay
    assert not (top_k_mask(SCORES, OBSERVED, 10) & ~OBSERVED).any()


def test_random_mask_draws_k_measured_variables():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = random_mask(OBSERVED, 2, rng)
        assert mask.sum(1).tolist() == [2, 0, 2] and not (mask & ~OBSERVED).any()


def test_global_mask_removes_the_cohort_top_k_where_present():
    cohort = np.array([0.4, 0.3, 0.2, 0.1])  # top-2: variables 0 and 1
    assert global_mask(cohort, OBSERVED, 2).tolist() == [
        [True, True, False, False], [False, False, False, False], [False, True, False, False]
    ]  # fmt: skip


@pytest.fixture(scope="module")
def tiny():
    from hymate.data.normalize import Normalizer

    data = planted_data(24, seed=1)
    normalizer = Normalizer.fit(data, np.arange(24), WINDOW)
    torch.manual_seed(0)
    model = build_model("hymate", normalizer.n_variables, len(normalizer.static_names),
                        {"d_model": 16, "n_mamba_layers": 1, "n_heads": 2, "d_state": 4, "scan_backend": "reference"}).eval()  # fmt: skip
    return data, normalizer, model


def test_rescoring_without_variables_equals_scoring_data_without_their_events(tiny):
    data, normalizer, model = tiny
    ids = np.arange(24)
    dataset = EventSequenceDataset(data, ids, normalizer)
    removed = np.zeros((24, normalizer.n_variables), dtype=bool)
    removed[:, normalizer.variables.index("C")] = True
    removed[::2, normalizer.variables.index("A")] = True
    got = logits_without(model, dataset, removed, batch_size=5)

    rows = [(i, v) for i in ids for v in normalizer.variables if removed[i, normalizer.variables.index(v)]]
    gone = pl.DataFrame(rows, schema={"stay_id": pl.Int64, "variable": pl.String}, orient="row")
    data.events = data.events.join(gone, on=["stay_id", "variable"], how="anti")
    expected = logits_without(model, EventSequenceDataset(data, ids, normalizer), np.zeros_like(removed))
    assert np.allclose(got, expected, atol=1e-5)


def test_integrated_gradients_are_complete_and_zero_at_padding(tiny):
    data, normalizer, model = tiny
    dataset = EventSequenceDataset(data, np.arange(6), normalizer, max_events=30)
    batch = collate([dataset[i] for i in range(6)])
    batch.mask[0, 20:] = False  # a shorter first stay: padding must get nothing
    batch.values[0, 20:] = 0.0
    attr, gap = event_attributions(model, batch, n_steps=32)
    assert (attr[~batch.mask] == 0).all()
    with torch.no_grad():
        full = model(batch).logits[:, 0]
        base = model(type(batch)(**{**batch.__dict__, "values": torch.zeros_like(batch.values)})).logits[:, 0]
    assert torch.allclose(attr.sum(1), (full - base).detach(), atol=1e-3)
    assert gap.abs().max() < 1e-3
    by_var = per_variable(attr, batch.variables, normalizer.n_variables)
    assert by_var.shape == (6, normalizer.n_variables) and torch.allclose(by_var.sum(1), attr.sum(1), atol=1e-6)


def test_rollout_through_no_or_identity_attention_is_the_pooling_weights():
    w = torch.softmax(torch.randn(3, 5), dim=1)
    assert torch.allclose(attention_rollout(w, []), w)
    assert torch.allclose(attention_rollout(w, [torch.eye(5).expand(3, 2, 5, 5)]), w)
    mixed = attention_rollout(w, [torch.softmax(torch.randn(3, 2, 5, 5), -1)] * 2)
    assert torch.allclose(mixed.sum(1), torch.ones(3)) and (mixed >= 0).all()


@pytest.mark.parametrize("name", ["grud", "mamba", "strats"])
def test_models_without_channel_weights_are_refused_clearly(name):
    model = build_model(name, 4, 2, {} if name == "grud" else {"d_model": 16})
    with pytest.raises(ExplainError, match="no per-variable attention weights"):
        require_channel_importance(model, {"variant": name})


def test_html_is_escaped_and_embeds_its_images():
    page = render("a <b> title", [Section("s & t", "x < y", [{"name": "<i>", "v": 0.5}], {"fig": b"\x89PNG..."})])
    assert "a &lt;b&gt; title" in page and "&lt;i&gt;" in page and "s &amp; t" in page
    assert 'src="data:image/png;base64,iVBORy4uLg=="' in page and "http" not in page
