"""Deletion test: is an explanation faithful to the model?

For each stay, remove every event of its top-k variables under a method's ranking, re-score
the stay, and measure how much test AUROC falls; compare with removing k random variables. An
explanation that names the variables the model actually relies on should hurt far more than
chance.

Rankings are per stay (the default): an explanation is shown for one stay, so it is judged stay
by stay, and only among the variables that stay has (removing a variable it never had changes
nothing). Every stay keeps at least one variable (k is capped at its number of variables - 1),
for every method alike. With `ranking="global"` the cohort's top-k variables are removed from
every stay instead (and a random draw is one random set of k variables for all stays); that
tests the cohort ranking, and mixes in how often each variable is measured.

HyMaTE is trained with variable dropout (each variable's events removed with probability 0.2),
so stays with whole variables missing are within what it has seen.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from hymate.data.batching import EventSequenceDataset, LengthBucketSampler, collate
from hymate.errors import HymateError

N_RANDOM = 10


def _highest(scores: np.ndarray, n: np.ndarray) -> np.ndarray:
    """[N, V] bool: the n[i] highest-scoring entries of each row i."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(scores.shape[1]), scores.shape), axis=1)
    return ranks < n[:, None]


def top_k_mask(scores: np.ndarray, observed: np.ndarray, k: int) -> np.ndarray:
    """[N, V] bool: each stay's k highest-scoring observed variables (at most n_observed - 1)."""
    n = np.minimum(k, observed.sum(axis=1) - 1)
    return _highest(np.where(observed, scores, -np.inf), n) & observed


def random_mask(observed: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """[N, V] bool: k random observed variables per stay (at most n_observed - 1)."""
    return top_k_mask(rng.random(observed.shape), observed, k)


def global_mask(scores: np.ndarray, observed: np.ndarray, k: int) -> np.ndarray:
    """[N, V] bool: the cohort's k highest-scoring variables, in every stay that has them; a stay
    that has nothing else keeps the lowest-ranked of them."""
    chosen = np.zeros(len(scores), dtype=bool)
    chosen[np.argsort(-np.asarray(scores), kind="stable")[:k]] = True
    candidates = observed & chosen[None, :]
    n = np.minimum(candidates.sum(axis=1), observed.sum(axis=1) - 1)
    return _highest(np.where(candidates, scores[None, :], -np.inf), n) & candidates


@torch.no_grad()
def logits_without(
    model: torch.nn.Module, dataset: EventSequenceDataset, removed: np.ndarray, batch_size: int = 64
) -> np.ndarray:
    """Score every stay with all events of the variables in `removed` ([N, V] bool) taken out."""
    if removed.shape != (len(dataset), model.config.n_variables):
        raise HymateError(f"removed mask is {removed.shape}, expected {(len(dataset), model.config.n_variables)}")
    model.eval()
    logits = np.empty(len(dataset), dtype=np.float32)
    for indices in LengthBucketSampler(dataset.lengths, batch_size, shuffle=False):
        items = []
        for i in indices:
            item = dataset[i]
            keep = ~removed[i][item["variables"] - 1]
            if not keep.any():
                raise HymateError(f"removing variables would leave stay {item['stay_id']} without events")
            items.append({**item, **{key: item[key][keep] for key in ("times", "variables", "values")}})
        logits[indices] = model(collate(items)).logits[:, 0].float().numpy()
    return logits


def deletion_curves(
    model: torch.nn.Module,
    dataset: EventSequenceDataset,
    observed: np.ndarray,
    scores: dict[str, np.ndarray],
    ks: list[int],
    n_random: int = N_RANDOM,
    seed: int = 0,
    ranking: str = "stay",
    base_logits: np.ndarray | None = None,
) -> list[dict]:
    """AUROC drop after removing the top-k variables of each method, and of k random variables.

    `scores`: method -> [N, V] importances (per-stay ranking) or [V] (global ranking; the mean
    over stays is used if [N, V] is given). Returns rows {method, k, auroc, auroc_drop} and, for
    "random", the sd over draws and the per-draw drops.
    """
    if ranking not in ("stay", "global"):
        raise HymateError(f"ranking must be 'stay' or 'global', got {ranking!r}")
    labels = dataset.labels
    if np.isnan(labels).any() or labels.min() == labels.max():
        raise HymateError("the deletion test needs labels of both classes for every stay")
    base = logits_without(model, dataset, np.zeros_like(observed)) if base_logits is None else base_logits
    base_auroc = float(roc_auc_score(labels, base))
    rng = np.random.default_rng(seed)
    rows = []
    for k in ks:
        for method, s in scores.items():
            if ranking == "stay":
                mask = top_k_mask(s, observed, k)
            else:
                mask = global_mask(s if s.ndim == 1 else s.mean(axis=0), observed, k)
            auroc = float(roc_auc_score(labels, logits_without(model, dataset, mask)))
            rows.append({"method": method, "k": k, "auroc": auroc, "auroc_drop": base_auroc - auroc})
        drops = []
        for _ in range(n_random):
            if ranking == "stay":
                mask = random_mask(observed, k, rng)
            else:
                mask = global_mask(rng.random(observed.shape[1]), observed, k)
            drops.append(base_auroc - float(roc_auc_score(labels, logits_without(model, dataset, mask))))
        rows.append({
            "method": "random", "k": k, "auroc": base_auroc - float(np.mean(drops)), "auroc_drop": float(np.mean(drops)),
            "sd": float(np.std(drops, ddof=1)) if len(drops) > 1 else 0.0, "draws": [round(d, 6) for d in drops],
        })  # fmt: skip
    return [{"ranking": ranking, "base_auroc": base_auroc, **row} for row in rows]
