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
# Training defaults a model needs (under the options given): GRU-D reads missingness through its
# masks and decay, and was tuned without variable dropout.
VARIANT_TRAINING = {"grud": {"variable_dropout": 0.0}}
TABULAR = ("lightgbm", "logreg")  # summary statistics + gradient boosting / logistic regression (models.tabular)
ALL_MODELS = (*VARIANTS, *TABULAR)


def model_option_names(name: str) -> set[str]:
    """The options (config fields) the model `name` takes."""
    if name not in VARIANTS:
        raise HymateError(f"unknown model {name!r}; known: {', '.join(VARIANTS)}")
    return {f.name for f in fields(ARCHITECTURES[VARIANTS[name][0]][1])} - {"n_variables", "n_statics"}


def build_model(name: str, n_variables: int, n_statics: int, options: dict | None = None) -> nn.Module:
    """The model `name` for V variables and S statics; an option the model does not take is an error."""
    known = model_option_names(name)
    arch, preset = VARIANTS[name]
    options = {**(options or {}), **preset}
    unknown = sorted(set(options) - known)
    if unknown:
        raise HymateError(f"the {name} model has no option {', '.join(unknown)}")
    cls, config_cls = ARCHITECTURES[arch]
    return cls(config_cls(n_variables=n_variables, n_statics=n_statics, **options))
