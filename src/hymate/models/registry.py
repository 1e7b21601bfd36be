"""Every model by name: the architectures (for checkpoints) and the named variants that the
training loop, the CLI and the comparison harness build (ablations are presets, not copies)."""

from __future__ import annotations

from dataclasses import fields

from torch import nn

from hymate.errors import HymateError
from hymate.models.grud import GRUD, GRUDConfig
from hymate.models.hymate import HyMaTE, HyMaTEConfig
from hymate.models.strats import STraTS, STraTSConfig

ARCHITECTURES = {"hymate": (HyMaTE, HyMaTEConfig), "strats": (STraTS, STraTSConfig), "grud": (GRUD, GRUDConfig)}

# name -> (architecture, preset). A preset wins over the shared width/depth options it names.
VARIANTS = {
    "hymate": ("hymate", {}),
    "hymate-stats": ("hymate", {"channel_stats": True}),  # + per-variable summary statistics in each channel token
    "mamba": ("hymate", {"channel_attention": False}),  # HyMaTE without channel attention (Triplet-Mamba)
    "hymate-events": ("strats", {"n_mamba_layers": 2, "n_layers": 1}),  # attention over events, as in the authors' code
    "strats": ("strats", {}),
    "grud": ("grud", {}),
}
TABULAR = ("lightgbm", "logreg")  # summary statistics + gradient boosting / logistic regression (models.tabular)
ALL_MODELS = (*VARIANTS, *TABULAR)


def build_model(name: str, n_variables: int, n_statics: int, overrides: dict | None = None) -> nn.Module:
    """The model `name` for V variables and S statics; `overrides` may hold options it lacks (ignored)."""
    if name not in VARIANTS:
        raise HymateError(f"unknown model {name!r}; known: {', '.join(VARIANTS)}")
    arch, preset = VARIANTS[name]
    cls, config_cls = ARCHITECTURES[arch]
    known = {f.name for f in fields(config_cls)}
    options = {k: v for k, v in {**(overrides or {}), **preset}.items() if k in known}
    return cls(config_cls(n_variables=n_variables, n_statics=n_statics, **options))
