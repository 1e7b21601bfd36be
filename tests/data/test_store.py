"""The prepared-data cache: instant second runs, never stale."""

from __future__ import annotations

from hymate.data import physionet2012
from hymate.data.store import data_dir, load_dataset, locate
from tests.conftest import write_p12

FIRST = 200000


def test_cache_is_reused_and_invalidated_by_a_changed_input(tmp_path, monkeypatch):
    write_p12(tmp_path / "raw")
    cache = tmp_path / "cache"
    first = load_dataset("physionet2012", tmp_path / "raw", cache, progress=False)
    calls = []
    real_read = physionet2012.read
    monkeypatch.setattr(physionet2012, "read", lambda *a, **k: calls.append(1) or real_read(*a, **k))

    again = load_dataset("physionet2012", tmp_path / "raw", cache, progress=False)
    assert calls == [] and again.events.equals(first.events)

    record = tmp_path / "raw" / "set-a" / f"{FIRST}.txt"
    record.write_text(record.read_text().replace("02:30,HR,75", "02:30,HR,99"))
    changed = load_dataset("physionet2012", tmp_path / "raw", cache, progress=False)
    assert calls == [1]
    assert changed.report["cache_key"] != first.report["cache_key"]
    assert 99.0 in changed.events.get_column("value").to_list()


def test_corrupt_cache_entry_is_rebuilt(tmp_path):
    write_p12(tmp_path / "raw")
    cache = tmp_path / "cache"
    first = load_dataset("physionet2012", tmp_path / "raw", cache, progress=False)
    entry = next((cache / "prepared").iterdir())
    (entry / "events.parquet").write_bytes(b"not parquet")
    rebuilt = load_dataset("physionet2012", tmp_path / "raw", cache, progress=False)
    assert rebuilt.events.equals(first.events)


def test_data_location_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("HYMATE_DATA", str(tmp_path / "env"))
    assert data_dir(None) == tmp_path / "env"
    assert data_dir(tmp_path / "flag") == tmp_path / "flag"  # the flag wins
    write_p12(tmp_path / "root" / "physionet2012")
    assert locate("physionet2012", tmp_path / "root") == tmp_path / "root" / "physionet2012"
    assert locate("physionet2012", tmp_path / "root" / "physionet2012") == tmp_path / "root" / "physionet2012"
