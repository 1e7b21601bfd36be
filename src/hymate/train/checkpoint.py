"""Self-contained model checkpoints: weights as safetensors, config and preprocessing as JSON.

A checkpoint folder holds everything `hymate predict` needs to score new stays:
``model.safetensors`` (weights), ``config.json`` (model name and config, task, calibration,
versions) and ``normalizer.json`` (variable vocabulary, value/static statistics, time window).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import hymate
from hymate.data.normalize import Normalizer
from hymate.errors import HymateError
from hymate.models.registry import ARCHITECTURES as MODELS


def save_checkpoint(folder: Path, model: torch.nn.Module, normalizer: Normalizer, meta: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    name = next((k for k, (cls, _) in MODELS.items() if isinstance(model, cls)), None)
    if name is None:
        raise HymateError(f"no checkpoint format for {type(model).__name__}")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, folder / "model.safetensors")
    config = {"model": name, "config": model.config.to_dict(), "hymate_version": hymate.__version__,
              "torch_version": torch.__version__, **meta}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    normalizer.save(folder / "normalizer.json")
    return folder


def load_checkpoint(folder: Path) -> tuple[torch.nn.Module, Normalizer, dict]:
    folder = Path(folder)
    missing = [f for f in ("model.safetensors", "config.json", "normalizer.json") if not (folder / f).exists()]
    if missing:
        raise HymateError(f"{folder} is not a hymate checkpoint: missing {', '.join(missing)}")
    meta = json.loads((folder / "config.json").read_text())
    if meta.get("model") not in MODELS:
        raise HymateError(f"checkpoint {folder} holds an unknown model {meta.get('model')!r}")
    cls, config_cls = MODELS[meta["model"]]
    model = cls(config_cls(**meta["config"]))
    model.load_state_dict(load_file(folder / "model.safetensors"))
    model.eval()
    return model, Normalizer.load(folder / "normalizer.json"), meta
