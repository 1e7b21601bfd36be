"""Shared fixtures: the real PhysioNet data (through HYMATE_DATA) and a synthetic P12 builder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hymate.data.store import load_dataset

REAL_DATA_ENV = "HYMATE_DATA"
# Everything the tests keep between sessions lives in the checkout (git-ignored), never in the
# user's ~/.cache: the P19 preparation (minutes), the scan kernel's builds, and whatever a
# command run without --cache-dir prepares.
CHECKOUT_CACHE = Path(__file__).resolve().parents[1] / ".hymate-cache"
os.environ["TORCH_EXTENSIONS_DIR"] = str(CHECKOUT_CACHE / "torch_extensions")
os.environ["HYMATE_CACHE"] = str(CHECKOUT_CACHE / "hymate")


def p19_test_cache() -> Path:
    """Where tests keep the real P19 preparation: keyed by the reader's source, so it is redone
    once per reader version (the cache key of `load_dataset` itself covers the data files)."""
    import hashlib

    from hymate.data import physionet2019

    code = hashlib.sha256(Path(physionet2019.__file__).read_bytes()).hexdigest()[:12]
    return CHECKOUT_CACHE / "tests" / f"physionet2019-reader-{code}"


def real_data_root() -> Path | None:
    root = os.environ.get(REAL_DATA_ENV)
    return Path(root) if root and Path(root).exists() else None


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The shared data location. CI must have it (a missing path fails there); locally it skips."""
    root = real_data_root()
    if root is None:
        if os.environ.get("CI"):
            pytest.fail(f"${REAL_DATA_ENV} is unset or missing in CI; .ci/run sets it to ../shared/data")
        pytest.skip(f"real data not available: set ${REAL_DATA_ENV}")
    return root


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hymate-cache")


@pytest.fixture(scope="session")
def p12(real_data, real_cache):
    """PhysioNet 2012 prepared once per test session from the shared archive."""
    return load_dataset("physionet2012", real_data, real_cache, progress=False)


# --- synthetic PhysioNet 2012 layout ---------------------------------------------------
DESCRIPTORS = [("Age", 54), ("Gender", 0), ("Height", -1), ("ICUType", 4), ("Weight", 80)]


def record_text(record_id: int, lines: list[str], descriptors=DESCRIPTORS, with_id: bool = True) -> str:
    head = ["Time,Parameter,Value"]
    if with_id:
        head.append(f"00:00,RecordID,{record_id}")
    head += [f"00:00,{name},{value}" for name, value in descriptors]
    return "\n".join(head + lines) + "\n"


def default_lines(i: int) -> list[str]:
    return [f"00:{10 + i % 40:02d},HR,{70 + i}", f"01:00,Temp,{36.5 + (i % 3) / 10}", f"02:30,HR,{75 + i}"]


def write_p12(folder: Path, per_set: int = 6, overrides: dict[int, str] | None = None, labels=None) -> dict:
    """Write a small official-layout PhysioNet 2012 tree; return {record id: set letter}."""
    overrides = overrides or {}
    ids = {}
    for s_i, s in enumerate("abc"):
        (folder / f"set-{s}").mkdir(parents=True, exist_ok=True)
        rows = ["RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death"]
        for k in range(per_set):
            rid = 200000 + s_i * 1000 + k
            ids[rid] = s
            text = overrides.get(rid, record_text(rid, default_lines(k)))
            (folder / f"set-{s}" / f"{rid}.txt").write_text(text)
            label = labels(rid) if labels else int(k % 3 == 0)
            if label is not None:
                rows.append(f"{rid},10,5,7,-1,{label}")
        (folder / f"Outcomes-{s}.txt").write_text("\n".join(rows) + "\n")
    return ids


@pytest.fixture
def synthetic_p12(tmp_path) -> Path:
    folder = tmp_path / "p12"
    write_p12(folder)
    return folder
