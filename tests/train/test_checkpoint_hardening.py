"""Every malformed checkpoint is one CheckpointError naming its file (and field), and from the CLI one
error line with no traceback; a checkpoint of an older hymate (no format_version) still loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from hymate.cli import app
from hymate.errors import CheckpointError
from hymate.tasks.registry import get_task
from hymate.tasks.splits import make_splits, subsample
from hymate.train.checkpoint_schema import FORMAT_VERSION
from hymate.train.estimators import NeuralEstimator, TabularEstimator, load_checkpoint
from hymate.train.module import TrainConfig
from hymate.train.run import run_one

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

TINY = {"d_model": 16, "n_mamba_layers": 1, "n_heads": 2, "d_state": 8}
MORTALITY = get_task("physionet2012", "mortality")


@pytest.fixture(scope="module")
def trained(p12, tmp_path_factory) -> dict[str, Path]:
    """A real tiny HyMaTE checkpoint and a logistic-regression one (trained once for the module)."""
    view = MORTALITY.view(p12)
    split = subsample(make_splits(view, MORTALITY, "strats", 0)[0], n_train=200, n_eval=100, seed=0)
    out = {}
    for model, options in (("hymate", TINY), ("logreg", None)):
        folder = tmp_path_factory.mktemp(model)
        config = TrainConfig(max_epochs=1, batch_size=32, max_events=128, seed=0)
        run_one(MORTALITY, view, split, model, config, folder, options, progress=False, n_boot=10)
        out[model] = folder / "strats-split0-seed0" / "checkpoint"
    return out


def edit_json(name: str, change):
    def apply(folder: Path) -> None:
        data = json.loads((folder / name).read_text())
        change(data)
        (folder / name).write_text(json.dumps(data))

    return apply


def write(name: str, text: str | bytes):
    return lambda folder: (folder / name).write_bytes(text if isinstance(text, bytes) else text.encode())


def truncate(name: str):
    return lambda folder: (folder / name).write_bytes((folder / name).read_bytes()[:200])


def reshape_first_tensor(folder: Path) -> None:
    state = load_file(folder / "model.safetensors")
    key = next(iter(state))
    state[key] = torch.zeros(*(n + 1 for n in state[key].shape))
    save_file(state, folder / "model.safetensors")


def foreign_tensors(folder: Path) -> None:
    save_file({"encoder.weight": torch.zeros(4, 4), "head.bias": torch.zeros(1)}, folder / "model.safetensors")


def joblib_instead(folder: Path) -> None:
    (folder / "logreg.safetensors").unlink()
    (folder / "logreg.joblib").write_bytes(b"\x80\x04\x95 an old pickle")


# (model, how it is broken, the file the message names, what else it says)
CASES = {
    "config not JSON": ("hymate", write("config.json", "{not json"), "config.json", "not valid JSON"),
    "config a list": ("hymate", write("config.json", "[1, 2]"), "config.json", "expected a JSON object, got list"),
    "unknown key": ("hymate", edit_json("config.json", lambda c: c["config"].update(bogus=1)), "config.json",
                    "unknown field config.bogus"),
    "missing key": ("hymate", edit_json("config.json", lambda c: c["config"].pop("n_variables")), "config.json",
                    "missing field config.n_variables"),
    "missing train settings": ("hymate", edit_json("config.json", lambda c: c.pop("train")), "config.json",
                               "field 'train': missing"),
    "wrong type": ("hymate", edit_json("config.json", lambda c: c["config"].update(d_model="abc")), "config.json",
                   "field 'config.d_model': expected an integer, got 'abc'"),
    "bad training setting": ("hymate", edit_json("config.json", lambda c: c["train"].update(lr=-1)), "config.json",
                             "lr must be"),
    "newer format": ("hymate", edit_json("config.json", lambda c: c.update(format_version=FORMAT_VERSION + 1)),
                     "config.json", f"incompatible checkpoint: format {FORMAT_VERSION + 1}, this hymate reads {FORMAT_VERSION}"),
    "other label type": ("hymate", edit_json("config.json", lambda c: c.update(label_type="regression")), "config.json",
                         "label type 'regression'"),
    "truncated weights": ("hymate", truncate("model.safetensors"), "model.safetensors", "not a readable safetensors"),
    "garbage weights": ("hymate", write("model.safetensors", b"\x00" * 64), "model.safetensors", "not a readable safetensors"),
    "weights of another shape": ("hymate", reshape_first_tensor, "model.safetensors", "shape mismatch"),
    "foreign weights": ("hymate", foreign_tensors, "model.safetensors", "missing tensors"),
    "missing weights": ("hymate", lambda f: (f / "model.safetensors").unlink(), "model.safetensors", "missing"),
    "bad normaliser JSON": ("hymate", write("normalizer.json", '{"variables": ['), "normalizer.json", "not valid JSON"),
    "bad normaliser field": ("hymate", edit_json("normalizer.json", lambda n: n.update(window_hours="long")),
                             "normalizer.json", "field 'window_hours': expected a number"),
    "normaliser of another length": ("hymate", edit_json("normalizer.json", lambda n: n["value_lo"].pop()),
                                     "normalizer.json", "do not match"),
    "normaliser of another vocabulary": ("hymate", edit_json("normalizer.json", lambda n: [n[k].pop() for k in (
        "variables", "value_lo", "value_hi", "value_mean", "value_std")]), "normalizer.json", "but the model in config.json reads"),
    "bad calibration": ("hymate", edit_json("config.json", lambda c: c.update(calibration={"kind": "platt", "a": "x", "b": 0})),
                        "config.json", "calibration"),
    "calibration of another label type": ("hymate", edit_json("config.json", lambda c: c.update(
        calibration={"kind": "temperature", "temperature": 1.5})), "config.json", "does not apply to binary"),
    "unknown calibration": ("hymate", edit_json("config.json", lambda c: c.update(calibration={"kind": "isotonic"})),
                            "config.json", "calibration"),
    "bad decision threshold": ("hymate", edit_json("config.json", lambda c: c.update(decision={"metric": "utility", "threshold": "high"})),
                               "config.json", "field 'decision.threshold': expected a number, got 'high'"),
    "logreg.joblib present": ("logreg", joblib_instead, "logreg.joblib", "retrain"),
    "truncated logreg": ("logreg", truncate("logreg.safetensors"), "logreg.safetensors", "not a readable safetensors"),
    "bad features": ("logreg", edit_json("features.json", lambda f: f.update(variables="HR")), "features.json",
                     "field 'variables': expected a list"),
}  # fmt: skip


def broken(trained, tmp_path, case: str) -> tuple[Path, str, str]:
    model, damage, file, message = CASES[case]
    folder = tmp_path / "checkpoint"
    shutil.copytree(trained[model], folder)
    damage(folder)
    return folder, file, message


@pytest.mark.parametrize("case", CASES)
def test_a_malformed_checkpoint_is_one_error_naming_its_file(trained, tmp_path, case):
    folder, file, message = broken(trained, tmp_path, case)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(folder)
    text = str(caught.value)
    assert str(folder / file) in text and message in text, text
    assert "\n" not in text


@pytest.mark.parametrize("case", ["wrong type", "newer format", "truncated weights", "logreg.joblib present"])
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_the_cli_on_a_malformed_checkpoint_prints_one_line_and_no_traceback(trained, tmp_path, case, command):
    folder, file, message = broken(trained, tmp_path, case)
    extra = ["--data-dir", str(tmp_path)] if command == "predict" else []
    result = CliRunner().invoke(app, [command, str(folder), *extra, "-q"])
    assert result.exit_code == 2, result.output  # the CLI's exit status for every HymateError
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and file in lines[0] and message in lines[0], result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, CheckpointError)


def test_configs_record_their_format_and_an_older_unversioned_checkpoint_still_loads(trained, tmp_path):
    for model, cls in (("hymate", NeuralEstimator), ("logreg", TabularEstimator)):
        config = json.loads((trained[model] / "config.json").read_text())
        assert config["format_version"] == FORMAT_VERSION and config["hymate_version"]
        assert config["task"] == MORTALITY.name and config["label_type"] == "binary"
        old = tmp_path / model
        shutil.copytree(trained[model], old)
        edit_json("config.json", lambda c: [c.pop(k) for k in ("format_version", "label_type")])(old)
        estimator, task, meta = load_checkpoint(old)
        assert isinstance(estimator, cls) and task == MORTALITY and "format_version" not in meta
    assert not list(trained["logreg"].glob("*.joblib")) and (trained["logreg"] / "logreg.safetensors").exists()
    assert not [p for p in trained["hymate"].parent.iterdir() if p.name.endswith((".tmp", ".old"))]  # atomic saves leave nothing
