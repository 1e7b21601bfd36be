"""Integrated Gradients (Captum) per variable, to compare with HyMaTE's attention weights.

What is attributed: the normalised values of the stay's events. The baseline is the same stay
with every value at 0, i.e. at the training mean of its variable (values are z-scored with
training statistics): same events, same times, same measurement pattern, average values. So an
attribution answers "how much do this stay's values of X, as opposed to average values of X,
move the logit?". IG's completeness makes the per-event attributions sum to
logit(stay) - logit(baseline); a variable's attribution is the sum over its events, and its
importance is the absolute value of that sum.

Why not the embedded events with a zero baseline: a zero embedding is not an absent event (the
event still occupies a position, is counted and is pooled into its channel), so that baseline
has no clinical meaning. What this choice cannot see: information in *whether and how often* a
variable was measured (HyMaTE embeds each channel's observation count); the deletion test in
`faithfulness.py` removes events altogether, so it judges both methods on that too.
"""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import IntegratedGradients

from hymate.data.batching import EventBatch, EventSequenceDataset, LengthBucketSampler, collate

N_STEPS = 8  # Gauss-Legendre nodes: the completeness gap is checked in the tests and the benchmark


def _logit_of_values(model: torch.nn.Module):
    def forward(values, times, variables, mask, statics):
        n = values.shape[0]
        dummy = torch.zeros(n, dtype=torch.float32)
        batch = EventBatch(times, variables, values, mask, statics, dummy, dummy.long())
        return model(batch).logits[:, 0]

    return forward


def event_attributions(
    model: torch.nn.Module, batch: EventBatch, n_steps: int = N_STEPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """IG attributions of each event's value to the logit ([B, L], 0 at padding) and the
    completeness gap per stay ([B]: sum of attributions minus (logit - baseline logit))."""
    model.eval()
    ig = IntegratedGradients(_logit_of_values(model))
    values = batch.values.clone().requires_grad_(True)
    attr, delta = ig.attribute(
        values, baselines=torch.zeros_like(values), n_steps=n_steps,
        additional_forward_args=(batch.times, batch.variables, batch.mask, batch.statics),
        return_convergence_delta=True,
    )  # fmt: skip
    return (attr * batch.mask).detach(), delta.detach()


def per_variable(attr: torch.Tensor, variables: torch.Tensor, n_variables: int) -> torch.Tensor:
    """Sum event attributions by variable: [B, L] -> [B, V] (variable ids 1..V; 0 is padding)."""
    sums = torch.zeros(attr.shape[0], n_variables + 1, dtype=attr.dtype).scatter_add(1, variables, attr)
    return sums[:, 1:]


def variable_attributions(
    model: torch.nn.Module, dataset: EventSequenceDataset, n_steps: int = N_STEPS, batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Signed IG attribution of each variable for every stay ([N, V]) and each stay's
    completeness gap ([N]). Take `np.abs` of the attributions for an importance ranking."""
    V = model.config.n_variables
    out = np.zeros((len(dataset), V), dtype=np.float32)
    gaps = np.zeros(len(dataset), dtype=np.float32)
    for indices in LengthBucketSampler(dataset.lengths, batch_size, shuffle=False):
        batch = collate([dataset[i] for i in indices])
        attr, delta = event_attributions(model, batch, n_steps)
        out[indices] = per_variable(attr, batch.variables, V).numpy()
        gaps[indices] = delta.numpy()
    return out, gaps
