"""Planted signal: only C and F carry the label, so every explanation must rank them first."""

from __future__ import annotations

import numpy as np
import pytest

from hymate.data.batching import EventSequenceDataset
from hymate.explain.faithfulness import deletion_curves
from hymate.explain.gradients import variable_attributions
from hymate.explain.importance import explain_channels, top_variables
from tests.explain.planted import PLANTED, planted_data, train_tiny

N_TRAIN, N_TEST = 500, 150


def explained(variable_dropout: float):
    data = planted_data(N_TRAIN + N_TEST, seed=0)
    ids = np.arange(N_TRAIN + N_TEST)
    model, normalizer = train_tiny(data, ids[:N_TRAIN], variable_dropout=variable_dropout)
    test = EventSequenceDataset(data, ids[N_TRAIN:], normalizer)
    ce = explain_channels(model, test, normalizer.variables)
    ig, _ = variable_attributions(model, test)
    scores = {"attention": ce.importance, "attention_rollout": ce.rollout, "integrated_gradients": np.abs(ig)}
    return model, test, ce, scores


@pytest.fixture(scope="module")
def as_trained():
    """Trained as `hymate train` trains (variable dropout 0.2)."""
    return explained(0.2)


def top2_everywhere(names, scores):
    planted = {names.index(v) for v in PLANTED}
    return np.mean([set(row) == planted for row in np.argsort(-scores, axis=1)[:, :2].tolist()])


def test_the_model_learned_the_signal(as_trained):
    from sklearn.metrics import roc_auc_score

    _, test, ce, _ = as_trained
    assert roc_auc_score(test.labels, ce.logits) > 0.9


@pytest.mark.parametrize("method", ["attention", "attention_rollout", "integrated_gradients"])
def test_every_method_ranks_the_planted_variables_first(as_trained, method):
    _, _, ce, scores = as_trained
    names = ce.variables
    assert {n for n, _ in top_variables(names, scores[method].mean(axis=0), 2)} == set(PLANTED)  # global
    assert top2_everywhere(names, scores[method]) >= 0.8  # local: in (nearly) every stay


def test_deleting_the_top_variables_hurts_far_more_than_random(as_trained):
    model, test, ce, scores = as_trained
    rows = deletion_curves(model, test, ce.observed, {"attention": scores["attention"]}, [2], n_random=4)
    drop = {r["method"]: r["auroc_drop"] for r in rows}
    assert drop["attention"] > 0.3 and drop["attention"] > 2 * drop["random"]


def test_rollout_and_gradients_find_the_signal_even_where_pooling_weights_alone_miss_it():
    """Without variable dropout, one channel token absorbs the other planted variable through
    channel attention, and the pooling weights can name only that one (seen: C got 0.001 of the
    weight); the rollout and the gradients still name both."""
    _, _, ce, scores = explained(0.0)
    for method in ("attention_rollout", "integrated_gradients"):
        assert {n for n, _ in top_variables(ce.variables, scores[method].mean(axis=0), 2)} == set(PLANTED), method
        assert top2_everywhere(ce.variables, scores[method]) >= 0.8, method
