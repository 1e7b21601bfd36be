"""GRU-D (Che et al., 2018, "Recurrent Neural Networks for Multivariate Time Series with Missing
Values"), a recurrent baseline over hourly bins, with the same interface as HyMaTE.

Reading order of `GRUD.forward`:

1. Binning (`bin_events`, vectorised with scatter): the 48 h window (times in [-1, 1]) is cut
   into `n_bins` equal bins, bin = floor((t + 1) / 2 * n_bins) clipped to n_bins - 1 (`bin_index`
   adds a 1e-4-bin tolerance for exact hour marks). Per (bin, variable): x = the MEAN of the
   normalised values observed in that bin (0 where none; several measurements of a variable in
   one hour are averaged, as in hourly resampling pipelines such as MIMIC-Extract), the mask m,
   and delta, the paper's time since the variable was last observed: delta_1 = 0;
   delta_t = s_t - s_{t-1} + delta_{t-1} if m_{t-1} = 0, else s_t - s_{t-1}. With s_t = t this is
   t - (the last bin before t with an observation, or 0), in bins (= hours at the default 48 bins
   over the 48 h window), computed with a cumulative max over bins.
2. Input decay (diagonal): gamma_x = exp(-relu(w_x * delta + b_x));
   x_hat = m * x + (1 - m) * (gamma_x * x_last + (1 - gamma_x) * x_mean), where x_last is the
   variable's last observed bin value before t (x_mean if none yet) and x_mean is the training
   mean of the normalised values: 0 after z-scoring, kept as a (non-learned) buffer.
3. Hidden decay: gamma_h = exp(-relu(W_h delta + b_h)) (full matrix), h <- gamma_h * h before
   each GRU update; the GRU input is [x_hat, m]. A GRUCell loops over the bins (48 steps); it
   applies the reset gate after the recurrent product, r * (U h + b), where the paper writes
   U (r * h) (the cuDNN form; a standard, minor difference).
4. The final hidden state, concatenated with a static MLP (Linear + tanh), then dropout and a
   linear head.

Binning ignores event order within the batch (the mean is order free) and padded events, so the
model depends on events only through their times, variables and values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from hymate.data.batching import EventBatch
from hymate.models.base import ModelOutput


@dataclass
class GRUDConfig:
    n_variables: int  # V; variable ids are 1..V, 0 is padding
    n_statics: int
    hidden_size: int = 64
    n_bins: int = 48  # over the observation window: hourly for 48 h
    dropout: float = 0.2  # before the head
    n_outputs: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Bins:
    values: Tensor  # [B, T, V] mean normalised value in the bin, 0 where unobserved
    mask: Tensor  # [B, T, V] bool, the variable was observed in the bin
    delta: Tensor  # [B, T, V] bins since the variable was last observed (paper's definition)
    previous: Tensor  # [B, T, V] int64, the last bin < t with an observation, -1 if none


BIN_TOLERANCE = 1e-4  # of a bin (0.36 s for hourly bins)


def bin_index(times: Tensor, n_bins: int) -> Tensor:
    """Times scaled to [-1, 1] -> bin indices floor((t + 1) / 2 * n_bins), clipped to 0..n_bins-1.

    A tolerance of 1e-4 bin is added: float32 scaling leaves some exact hour marks (02:00, 05:00,
    ...) a hair below their boundary, and they belong to the hour they start. Float32 error is
    ~1e-6 bin and PhysioNet times are whole minutes (1/60 bin), so nothing else moves.
    """
    return torch.floor((times + 1) / 2 * n_bins + BIN_TOLERANCE).long().clamp(0, n_bins - 1)


def bin_events(times: Tensor, variables: Tensor, values: Tensor, mask: Tensor, n_variables: int, n_bins: int) -> Bins:
    """Bin a padded batch of events into [B, n_bins, V] grids, with scatter (no loop over events)."""
    B = times.shape[0]
    T, V = n_bins, n_variables
    real = mask & (variables > 0)
    # Flat (bin, variable) slot per event; padded events go to an extra slot that is dropped.
    slot = torch.where(real, bin_index(times, T) * V + (variables - 1), torch.full_like(variables, T * V))
    weight = real.to(values.dtype)
    counts = torch.zeros(B, T * V + 1, dtype=values.dtype, device=values.device).scatter_add(1, slot, weight)
    sums = torch.zeros_like(counts).scatter_add(1, slot, values * weight)
    counts, sums = counts[:, :-1].view(B, T, V), sums[:, :-1].view(B, T, V)
    observed = counts > 0
    x = sums / counts.clamp(min=1)

    steps = torch.arange(T, device=times.device).view(1, T, 1)
    last_upto = torch.where(observed, steps, -1).cummax(dim=1).values  # last observed bin <= t
    previous = torch.cat([torch.full_like(last_upto[:, :1], -1), last_upto[:, :-1]], dim=1)  # < t
    delta = (steps - previous.clamp(min=0)).to(values.dtype)
    return Bins(x, observed, delta, previous)


class GRUD(nn.Module):
    def __init__(self, config: GRUDConfig) -> None:
        super().__init__()
        self.config = config
        V, H = config.n_variables, config.hidden_size
        # Diagonal input decay. Weights start small and positive so every variable's decay is live
        # (relu active) from the start: gamma_x falls from 1 at delta = 0 to ~exp(-2.4) at 47 h.
        self.input_decay_weight = nn.Parameter(torch.rand(V) * 0.1)
        self.input_decay_bias = nn.Parameter(torch.zeros(V))
        self.hidden_decay = nn.Linear(V, H)
        self.register_buffer("x_mean", torch.zeros(V))  # training mean of z-scored values: 0
        self.cell = nn.GRUCell(2 * V, H)
        self.static_mlp = nn.Sequential(nn.Linear(config.n_statics, H), nn.Tanh()) if config.n_statics else None
        n_parts = 1 + (config.n_statics > 0)
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(n_parts * H, config.n_outputs))

    def bins(self, batch: EventBatch) -> Bins:
        c = self.config
        return bin_events(batch.times, batch.variables, batch.values, batch.mask, c.n_variables, c.n_bins)

    def impute(self, x: Tensor, m: Tensor, delta: Tensor, x_last: Tensor) -> tuple[Tensor, Tensor]:
        """x_hat and gamma_x of the paper's input decay; every argument is [B, T, V], m in {0, 1}."""
        gamma_x = torch.exp(-torch.relu(self.input_decay_weight * delta + self.input_decay_bias))
        x_hat = m * x + (1 - m) * (gamma_x * x_last + (1 - gamma_x) * self.x_mean)
        return x_hat, gamma_x

    def forward(self, batch: EventBatch) -> ModelOutput:
        bins = self.bins(batch)
        x, m, delta = bins.values, bins.mask.to(bins.values.dtype), bins.delta
        last = x.gather(1, bins.previous.clamp(min=0))
        x_last = torch.where(bins.previous >= 0, last, self.x_mean.to(x.dtype))
        x_hat, _ = self.impute(x, m, delta, x_last)
        gamma_h = torch.exp(-torch.relu(self.hidden_decay(delta)))  # [B, T, H]
        inputs = torch.cat([x_hat, m], dim=-1)  # [B, T, 2V]

        h = x.new_zeros(x.shape[0], self.config.hidden_size)
        for t in range(self.config.n_bins):
            h = self.cell(inputs[:, t], gamma_h[:, t] * h)

        parts = [h]
        if self.static_mlp is not None:
            parts.append(self.static_mlp(batch.statics))
        logits = self.head(torch.cat(parts, dim=-1))
        return ModelOutput(logits, None, [], None, bins.mask.any(dim=1))
