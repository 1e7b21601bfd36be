"""`hymate explain`: per-stay and cohort reports from a checkpoint, checked in a real browser,
and one clear error line for bad input."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import torch
from typer.testing import CliRunner

from hymate.cli import app
from hymate.data.normalize import Normalizer
from hymate.data.store import load_dataset
from hymate.models.registry import build_model
from hymate.tasks.registry import get_task
from hymate.tasks.splits import Split
from hymate.train.estimators import NeuralEstimator
from hymate.train.module import TrainConfig
from tests.conftest import write_p12

runner = CliRunner()
TINY = {"d_model": 16, "n_mamba_layers": 1, "n_heads": 2, "d_state": 4, "scan_backend": "reference"}


MORTALITY = get_task("physionet2012", "mortality")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """A synthetic PhysioNet 2012 tree (60 stays), its split files, and an (untrained) HyMaTE
    and GRU-D checkpoint: the command's plumbing, not the model's quality, is under test."""
    root = tmp_path_factory.mktemp("explain")
    ids = write_p12(root / "raw", per_set=20)
    where = ["--data-dir", str(root / "raw"), "--cache-dir", str(root / "cache")]
    assert runner.invoke(app, ["prepare", "physionet2012", *where, "-q"]).exit_code == 0
    view = MORTALITY.view(load_dataset("physionet2012", root / "raw", root / "cache", progress=False))
    split = Split.load(root / "cache" / "splits" / "physionet2012-mortality-strats-seed0-split0.json", view)
    normalizer = Normalizer.fit(view, view.stay_ids, MORTALITY.window_hours, MORTALITY.categorical_statics)
    train = TrainConfig(max_events=64)
    meta = {"task": MORTALITY.name, "label_type": "binary", "classes": [], "split": split.name,
            "split_sha256": split.sha256, "calibration": {"kind": "platt", "a": 1.0, "b": 0.0}, "decision": None,
            "train": train.to_dict()}  # fmt: skip
    torch.manual_seed(0)
    for name in ("hymate", "grud"):
        options = TINY if name == "hymate" else {}
        model = build_model(name, normalizer.n_variables, len(normalizer.static_names), options)
        estimator = NeuralEstimator(name, MORTALITY, train, options, model=model, normalizer=normalizer)
        estimator.save(root / name, {**meta, "model_options": options})
    return {"root": root, "where": where, "stay": min(i for i, s in ids.items() if s == "a")}


def test_stay_report_has_figures_numbers_and_html(setup):
    out = setup["root"] / "out"
    result = runner.invoke(
        app,
        [
            "explain",
            str(setup["root"] / "hymate"),
            "--stay",
            str(setup["stay"]),
            "--out",
            str(out),
            *setup["where"],
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    folder = out / f"stay-{setup['stay']}"
    for name in ("importance.png", "timeline.png", "attention.png", "report.html", "explanation.json"):
        assert (folder / name).stat().st_size > 0, name
    assert (folder / "importance.png").read_bytes()[:4] == b"\x89PNG"


def test_cohort_report_runs_the_deletion_test(setup):
    out = setup["root"] / "out"
    result = runner.invoke(
        app, ["explain", str(setup["root"] / "hymate"), "--cohort", "--out", str(out), *setup["where"], "-q"]
    )
    assert result.exit_code == 0, result.output
    assert "deletion test" in result.output and "integrated gradients" in result.output
    for name in ("importance.png", "attention.png", "deletion.png", "report.html"):
        assert (out / "cohort-test" / name).exists(), name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hymate", "--stay", "999"], "stay 999 is not in physionet2012"),
        (["grud", "--stay", "STAY"], "no per-variable attention weights"),
        (["missing", "--stay", "STAY"], "is not a hymate checkpoint"),
        (["hymate"], "give --stay ID"),
        (["hymate", "--cohort", "--part", "train"], "--part must be test, val or all"),
        (["hymate", "--stay", "STAY", "--class", "1"], "--class applies to multiclass tasks"),
    ],
)
def test_bad_input_is_one_clear_error(setup, args, message):
    argv = [str(setup["root"] / args[0]), *(str(setup["stay"]) if a == "STAY" else a for a in args[1:])]
    result = runner.invoke(app, ["explain", *argv, "--out", str(setup["root"] / "bad"), *setup["where"], "-q"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


CHECK = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const shown = images.filter((i) => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0);
  document.body.setAttribute("data-check", `${images.length}/${shown.length}/${document.querySelectorAll("h2").length}`);
});
</script></body>"""


def test_reports_render_in_a_headless_browser(setup, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium); the HTML was not browser-checked")
    out = setup["root"] / "out"
    if not (out / f"stay-{setup['stay']}" / "report.html").exists():
        test_stay_report_has_figures_numbers_and_html(setup)
    if not (out / "cohort-test" / "report.html").exists():
        test_cohort_report_runs_the_deletion_test(setup)
    for report, (images, sections) in {f"stay-{setup['stay']}": (3, 4), "cohort-test": (3, 3)}.items():
        page = (out / report / "report.html").read_text()
        assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page), "the report must be self-contained"
        probe = tmp_path / f"{report}.html"
        probe.write_text(page.replace("</body>", CHECK))
        done = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--dump-dom", probe.as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        found = re.search(r'data-check="(\d+)/(\d+)/(\d+)"', done.stdout)
        assert found, f"the browser did not run the page: {done.stderr[-500:]}"
        assert tuple(map(int, found.groups())) == (images, images, sections), report
