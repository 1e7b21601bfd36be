"""Everything a user can see as lost is on screen: every count of report.json is in the table."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hymate.cli import app
from hymate.data import losses
from tests.conftest import default_lines, record_text, write_p12
from tests.data.test_physionet2019_bad_input import default_rows, psv, row, write_p19

runner = CliRunner()
FIRST = 200000


def flat(text: str) -> str:
    return " ".join(text.split())


def test_every_p12_loss_reaches_the_prepare_screen(tmp_path):
    raw = tmp_path / "raw"
    overrides = {
        FIRST: record_text(FIRST, [*default_lines(0), "05:00,:x:,1", "25:99,HR,80", "06:00,K,1e308", "[red]x,HR,1"]),
        FIRST + 1: record_text(FIRST + 1, []),  # no time series: the stay is excluded
    }
    write_p12(raw, overrides=overrides)
    with open(raw / "Outcomes-a.txt", "a") as f:
        f.write("299990,10,5,7,-1,0\n")  # an Outcomes row without a record file
    result = runner.invoke(app, ["prepare", "physionet2012", "--data-dir", str(raw), "--cache-dir", str(tmp_path / "c"), "-q"])
    assert result.exit_code == 0, result.output
    out = flat(result.output)
    for shown in ("unknown parameter ':x:'", "unparseable time", "implausible K measurement", "no time series",
                  "an Outcomes row whose RecordID", "[red]x,HR,1"):  # fmt: skip
        assert shown in out, shown
    assert "❌" not in result.output  # ':x:' is data, not an emoji code
    assert "left out: 1 stays, 4 lines, 1 outcome rows" in out


def test_p19_static_changes_reach_the_screen(tmp_path):
    rows = default_rows(2, False)
    rows[4] = row(5, HR=90, Age=62.5)  # Age changes within the stay
    write_p19(tmp_path / "raw", overrides={2: psv(rows)})
    result = runner.invoke(app, ["prepare", "physionet2019", "--data-dir", str(tmp_path / "raw"), "--cache-dir", str(tmp_path / "c"), "-q"])
    assert result.exit_code == 0, result.output
    assert "Age changes within the stay" in flat(result.output) and "statics" in result.output


@pytest.mark.parametrize("reader", ["p12", "p19"])
def test_no_count_in_a_report_escapes_the_loss_table(tmp_path, reader):
    from hymate.data import physionet2012, physionet2019
    from hymate.data.sources import Source

    if reader == "p12":
        write_p12(tmp_path)
        report = physionet2012.read(Source(tmp_path), progress=False).report
    else:
        write_p19(tmp_path)
        report = physionet2019.read(Source(tmp_path), progress=False).report
    assert losses.unclassified_keys(report) == []
    assert losses.unclassified_keys({**report, "new_kind_dropped": 3}) == ["new_kind_dropped"]


def test_errors_print_data_as_written_not_as_markup(tmp_path):
    raw = tmp_path / "raw"
    write_p12(raw)
    (raw / "Outcomes-a.txt").write_text("RecordID,In-hospital_death\n[bold]1:x:,2\n")
    result = runner.invoke(app, ["prepare", "physionet2012", "--data-dir", str(raw), "--cache-dir", str(tmp_path / "c"), "-q"])
    assert result.exit_code == 2
    assert "[bold]1:x:" in result.output or "[bold]1:x:" in flat(result.output), result.output
