"""The checkpoint schema's helpers on small inputs (no data needed): every failure names the file and field."""

from __future__ import annotations

import json

import pytest
import torch

from hymate.errors import CheckpointError
from hymate.models.hymate import HyMaTEConfig
from hymate.train.checkpoint_schema import FORMAT_VERSION, Target, build, check_format, check_weights, read_part


def test_read_part_names_the_file_and_the_field(tmp_path):
    path = tmp_path / "target.json"
    path.write_text(json.dumps({"mean": 3.0, "sd": 1.5}))
    assert read_part(path, Target) == Target(mean=3.0, sd=1.5)
    for text, message in (('{"mean": 3', "not valid JSON"), ('{"mean": "x", "sd": 1}', "field 'mean': expected a number, got 'x'"),
                          ('{"mean": 1, "sd": 0}', "field 'sd'"), ('{"mean": 1, "sd": 1, "extra": 2}', "unknown field 'extra'"),
                          ('{"mean": 1}', "field 'sd': missing")):  # fmt: skip
        path.write_text(text)
        with pytest.raises(CheckpointError, match=f"^{path}: .*" + message.replace("(", r"\(")):
            read_part(path, Target)
    with pytest.raises(CheckpointError, match="missing"):
        read_part(tmp_path / "absent.json", Target)


def test_build_names_unknown_missing_and_mistyped_fields():
    good = {"n_variables": 5, "n_statics": 2, "d_model": 16}
    assert build(HyMaTEConfig, good, "c.json") == HyMaTEConfig(5, 2, d_model=16)
    cases = {"unknown field config.width": {**good, "width": 3}, "missing field config.n_statics": {"n_variables": 5},
             "field 'config.d_model': expected an integer, got 'abc'": {**good, "d_model": "abc"}}  # fmt: skip
    for message, data in cases.items():
        with pytest.raises(CheckpointError, match=f"^c.json: {message}"):
            build(HyMaTEConfig, data, "c.json", "config")


def test_a_newer_format_is_refused_and_an_unnumbered_one_is_read():
    check_format({}, "c.json")  # before formats were numbered: read
    check_format({"format_version": FORMAT_VERSION}, "c.json")
    with pytest.raises(CheckpointError, match=f"incompatible checkpoint: format {FORMAT_VERSION + 1}, this hymate reads {FORMAT_VERSION}"):
        check_format({"format_version": FORMAT_VERSION + 1}, "c.json")
    with pytest.raises(CheckpointError, match="format_version"):
        check_format({"format_version": "one"}, "c.json")


def test_check_weights_names_missing_unexpected_and_misshapen_tensors():
    module = torch.nn.Linear(3, 2)
    check_weights(module.state_dict(), module, "m.safetensors")
    with pytest.raises(CheckpointError, match=r"m.safetensors: .*1 missing tensor \(bias\); 1 unexpected tensor \(scale\)"):
        check_weights({"weight": torch.zeros(2, 3), "scale": torch.zeros(1)}, module, "m.safetensors")
    with pytest.raises(CheckpointError, match=r"shape mismatch: weight \[2, 4\] \(expected \[2, 3\]\)"):
        check_weights({"weight": torch.zeros(2, 4), "bias": torch.zeros(2)}, module, "m.safetensors")
