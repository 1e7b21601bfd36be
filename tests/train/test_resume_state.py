"""What a resume restores besides the weights: the random streams and the batch sampler's epoch."""

from __future__ import annotations

import io
import random

import numpy as np
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch
from torch.utils.data import DataLoader

from hymate.data.batching import LengthBucketSampler
from hymate.train.module import rng_state, set_rng_state


def draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_the_random_streams_survive_a_weights_only_checkpoint_round_trip():
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    draws()
    buffer = io.BytesIO()
    torch.save({"hymate_rng": rng_state()}, buffer)
    expected = draws()
    draws()  # the streams move on ...
    buffer.seek(0)
    set_rng_state(torch.load(buffer, weights_only=True)["hymate_rng"])  # ... and come back (Lightning loads weights_only)
    assert draws() == expected


def test_lightning_sets_the_epoch_of_the_length_bucket_sampler():
    sampler = LengthBucketSampler(np.arange(1, 201), batch_size=8, shuffle=True, seed=0)
    loader = DataLoader(list(range(200)), batch_sampler=sampler)
    first = list(sampler)
    _set_sampler_epoch(loader, 3)  # what Lightning's fit loop calls at each epoch's start
    assert sampler.epoch == 3 and list(sampler) != first
    _set_sampler_epoch(loader, 0)
    assert list(sampler) == first  # a function of (seed, epoch) only: a resumed epoch draws the same batches
