"""A synthetic cohort where only known variables carry the label, and a tiny HyMaTE trained on it."""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from hymate.data.augment import drop_variables
from hymate.data.batching import EventSequenceDataset, LengthBucketSampler, collate
from hymate.data.normalize import Normalizer
from hymate.data.schema import EventData
from hymate.models.hymate import HyMaTE, HyMaTEConfig

VARIABLES = ["A", "B", "C", "D", "E", "F", "G", "H"]
PLANTED = ("C", "F")  # the label is sign(mean C + mean F); the other variables are noise
WINDOW = 48.0


def planted_data(n_stays: int = 600, seed: int = 0) -> EventData:
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for stay in range(n_stays):
        level = {v: rng.normal() for v in VARIABLES}
        for v in VARIABLES:
            n = rng.integers(2, 7)  # how often a variable is measured says nothing about the label
            times = np.sort(rng.uniform(0, WINDOW, n))
            rows += [(stay, float(t), v, float(level[v] + 0.3 * rng.normal())) for t in times]
        labels.append(level["C"] + level["F"] > 0)
    events = pl.DataFrame(rows, schema={"stay_id": pl.Int64, "time": pl.Float64, "variable": pl.String, "value": pl.Float64},
                          orient="row").sort("stay_id", "time", "variable")  # fmt: skip
    ids = np.arange(n_stays, dtype=np.int64)
    counts = events.group_by("stay_id").len().sort("stay_id").get_column("len").cast(pl.Int64)
    return EventData(
        name="planted",
        events=events,
        statics=pl.DataFrame({"stay_id": ids, "age": rng.normal(60, 10, n_stays)}),
        labels=pl.DataFrame({"stay_id": ids, "prediction_time": np.full(n_stays, WINDOW), "label": labels},
                            schema_overrides={"label": pl.Boolean}),
        stays=pl.DataFrame({"stay_id": ids, "split_group": ["x"] * n_stays, "n_events": counts}),
    )  # fmt: skip


def train_tiny(
    data: EventData, train_ids, epochs: int = 6, seed: int = 0, variable_dropout: float = 0.2
) -> tuple[HyMaTE, Normalizer]:
    """A small HyMaTE fitted with a plain loop (seconds on one CPU thread), with variable dropout
    as in `hymate train`."""
    torch.manual_seed(seed)
    normalizer = Normalizer.fit(data, train_ids, WINDOW)
    dataset = EventSequenceDataset(data, train_ids, normalizer)
    config = HyMaTEConfig(n_variables=len(VARIABLES), n_statics=len(normalizer.static_names), d_model=16,
                          n_mamba_layers=1, n_heads=2, d_state=4, dropout=0.0, scan_backend="reference")  # fmt: skip
    model = HyMaTE(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sampler = LengthBucketSampler(dataset.lengths, 32, shuffle=True, seed=seed)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for indices in sampler:
            batch = drop_variables(collate([dataset[i] for i in indices]), variable_dropout)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch).logits[:, 0], batch.labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval(), normalizer
