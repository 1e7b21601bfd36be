"""The regression loss is a training setting: Huber, L1 or MSE on standardised targets, checked
against torch's own losses; an unknown one, or one given for a task of another label type, is one
clear error."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F
from typer.testing import CliRunner

from hymate.cli import app
from hymate.errors import HymateError
from hymate.train.module import Objective, OutcomeModule, TrainConfig
from tests.conftest import write_p12


def test_each_regression_loss_is_the_named_loss_on_standardised_targets():
    objective = Objective("regression", "neg_mae", target_mean=10.0, target_sd=4.0)
    out = torch.tensor([[0.5], [-3.0], [2.0]])
    labels = torch.tensor([12.0, 2.0, 30.0])  # standardised: 0.5, -2, 5 (residuals 0, 1, 3)
    target = (labels - 10.0) / 4.0
    expected = {"huber": F.huber_loss(out[:, 0], target, delta=1.0), "l1": F.l1_loss(out[:, 0], target),
                "mse": F.mse_loss(out[:, 0], target)}  # fmt: skip
    got = {name: OutcomeModule(torch.nn.Identity(), TrainConfig(regression_loss=name), objective)._loss(out, labels).item()
           for name in expected}  # fmt: skip
    assert got == pytest.approx({k: v.item() for k, v in expected.items()}, rel=1e-6)
    assert len(set(got.values())) == 3  # they differ here: a setting that changed nothing would fail
    assert TrainConfig().regression_loss == "huber"  # the default, as before the setting existed


def test_unknown_or_misplaced_regression_loss_is_one_clear_error(tmp_path):
    with pytest.raises(HymateError, match="regression_loss must be one of huber, l1, mse"):
        TrainConfig(regression_loss="cubic")
    write_p12(tmp_path / "raw", per_set=20)
    args = ["--data-dir", str(tmp_path / "raw"), "--cache-dir", str(tmp_path / "cache"), "-q"]
    result = CliRunner().invoke(app, ["train", "physionet2012", "--regression-loss", "l1", *args])
    assert result.exit_code == 2 and "--regression-loss applies to regression tasks" in result.output
    assert "physionet2012-mortality is binary" in " ".join(result.output.split())
