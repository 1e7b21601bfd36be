"""Where data live: the raw-data location, the prepared-data cache, and `load_dataset`.

Raw data are found through a data location: the ``--data-dir`` flag, else the ``HYMATE_DATA``
environment variable, else ``<cache>/raw``. Prepared datasets are Parquet folders in the cache
(``--cache-dir``, ``HYMATE_CACHE``, else ``$XDG_CACHE_HOME/hymate`` or ``~/.cache/hymate``),
keyed by the sha256 of the source files and the preparation settings: a second run is a Parquet
read, and a changed input or setting gets a fresh preparation, never a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import polars as pl

from hymate.data import meds, physionet2012, physionet2019, tables
from hymate.data.download import download_physionet2012
from hymate.data.schema import EventData
from hymate.data.sources import Source, is_archive
from hymate.errors import DataError, DataNotFoundError
from hymate.io import atomic_folder, exclusive, remove_leftovers

DATA_ENV = "HYMATE_DATA"
CACHE_ENV = "HYMATE_CACHE"

READERS = {physionet2012.NAME: physionet2012, physionet2019.NAME: physionet2019, meds.NAME: meds, tables.NAME: tables}
# Names a dataset may have inside a data location (first match wins).
_SUBFOLDERS = {
    physionet2012.NAME: ("physionet2012", "physionet-challenge-2012", "challenge-2012"),
    physionet2019.NAME: ("physionet2019", "physionet-challenge-2019", "challenge-2019"),
    meds.NAME: ("meds",),
    tables.NAME: ("table", "tables"),
}
_MARKERS = {
    physionet2012.NAME: ("set-a", "set-a.tar.gz", "physionet-challenge-2012.tar.gz"),
    physionet2019.NAME: ("training_setA", "training_setB", "training", "physionet-challenge-2019-training.tar.gz"),
    meds.NAME: ("data", "metadata"),
    tables.NAME: (tables.SPEC_FILE, "events.csv", "events.parquet", "events"),
}
# How each dataset can be provided (the message of a DataNotFoundError).
_HOW_TO_PROVIDE = {
    physionet2012.NAME: (
        "  * point --data-dir (or ${env}) at a folder holding physionet-challenge-2012.tar.gz, or\n"
        "    set-a/ set-b/ set-c/ and Outcomes-a/b/c.txt, or the official set-a/b/c.tar.gz archives;\n"
        "  * or add --download to fetch the official files from PhysioNet (open access, ~20 MB)."
    ),
    physionet2019.NAME: (
        "  * point --data-dir (or ${env}) at a folder holding physionet2019/ with\n"
        "    physionet-challenge-2019-training.tar.gz, or the extracted training_setA/ and training_setB/\n"
        "    folders of pNNNNNN.psv files (https://physionet.org/content/challenge-2019/1.0.0/, open\n"
        "    access, CC BY 4.0). --download is not available for this dataset: fetch the files yourself."
    ),
    meds.NAME: (
        "  * point --data-dir (or ${env}) at a MEDS dataset's root: the folder holding data/ (the\n"
        "    *.parquet shards) and metadata/ (dataset.json, codes.parquet, subject_splits.parquet),\n"
        "    as a MEDS ETL writes it (MIMIC-IV: MIMIC_IV_MEDS; eICU: eICU_MEDS), or `hymate export meds`."
    ),
    tables.NAME: (
        "  * run `hymate prepare table EVENTS --labels LABELS [--statics S] [--time-unit U]`, which writes\n"
        "    hymate-table.json next to EVENTS; then pass that folder as --data-dir (or ${env}), or\n"
        "  * point --data-dir at a folder holding events.csv or events.parquet (long: stay_id, time,\n"
        "    variable, value; wide: stay_id, time, one column per variable), times in hours."
    ),
}


def cache_dir(override: Path | str | None = None) -> Path:
    if override:
        return Path(override).expanduser()
    if env := os.environ.get(CACHE_ENV):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hymate"


def data_dir(override: Path | str | None = None, cache: Path | str | None = None) -> Path:
    if override:
        return Path(override).expanduser()
    if env := os.environ.get(DATA_ENV):
        return Path(env).expanduser()
    return cache_dir(cache) / "raw"


def locate(dataset: str, root: Path) -> Path:
    """Find `dataset` under a data location: the location itself, an archive, or a subfolder."""
    _check_name(dataset)
    if is_archive(root):
        return root
    if not root.is_dir():
        raise DataNotFoundError(_how_to_provide(dataset, root, f"the data location {root} does not exist"))
    for name in _SUBFOLDERS[dataset]:
        if (root / name).is_dir() or is_archive(root / f"{name}.tar.gz"):
            return locate(dataset, root / name if (root / name).is_dir() else root / f"{name}.tar.gz")
    if any((root / marker).exists() for marker in _MARKERS[dataset]):
        return root
    raise DataNotFoundError(_how_to_provide(dataset, root, f"no {dataset} files under {root}"))


def load_dataset(
    dataset: str,
    data: Path | str | None = None,
    cache: Path | str | None = None,
    download: bool = False,
    force: bool = False,
    progress: bool = True,
    require_labels: bool = True,
) -> EventData:
    """Prepare `dataset` from its raw files, or load the cached preparation if it is current."""
    _check_name(dataset)
    root = data_dir(data, cache)
    if download and not has_data(dataset, root):
        if dataset != physionet2012.NAME:
            raise DataNotFoundError(_how_to_provide(dataset, root, f"--download is not supported for {dataset}"))
        download_physionet2012(root / _SUBFOLDERS[dataset][0], progress=progress)
    source = Source(locate(dataset, root))
    reader = READERS[dataset]
    key = hashlib.sha256(
        json.dumps(
            {"dataset": dataset, "reader_version": reader.READER_VERSION, "source": reader.fingerprint(source) if hasattr(reader, "fingerprint") else source.fingerprint(),
             "window_hours": getattr(reader, "WINDOW_HOURS", None), "ranges": reader.PLAUSIBLE_RANGES,
             "require_labels": require_labels},
            sort_keys=True,
        ).encode()
    ).hexdigest()  # fmt: skip
    folder = cache_dir(cache) / "prepared" / f"{dataset}-{key[:16]}"
    if not force and (cached := _load_cached(folder)) is not None:
        return cached
    # One preparation per cache entry: a second process waits here, then loads the first one's result.
    with exclusive(cache_dir(cache) / "locks" / f"{folder.name}.lock", f"the {dataset} cache entry {folder}"):
        _remove_leftovers(folder)
        if not force and (cached := _load_cached(folder)) is not None:
            return cached
        shutil.rmtree(folder, ignore_errors=True)  # a broken entry is rebuilt, not trusted
        prepared = reader.read(source, progress=progress, require_labels=require_labels)
        prepared.report["cache_key"] = key
        with atomic_folder(folder) as tmp:
            prepared.save(tmp)
    return prepared


def _load_cached(folder: Path) -> EventData | None:
    """The cache entry at `folder`, or None if there is none or it does not load. Entries appear by
    a rename of a complete folder (`atomic_folder`), so one that fails to load was damaged later."""
    if not folder.is_dir():
        return None
    try:
        return EventData.load(folder)
    except (DataError, OSError, ValueError, pl.exceptions.PolarsError):
        return None


def _remove_leftovers(folder: Path) -> None:
    """The temporary folders a killed preparation of `folder` left (hymate.io's, and the
    `<entry>.<random>` ones of versions before it). Called holding the entry's lock."""
    remove_leftovers(folder.parent, folder.name)
    for old in folder.parent.glob(f"{folder.name}.*"):
        shutil.rmtree(old, ignore_errors=True)


# Stay files a user may bring to `predict` outside the official layout: one stay's file pattern,
# names that are not stays, and the folder of the official layout the reader reads them from.
_STAY_FILES = {
    physionet2012.NAME: ("[0-9]*.txt", "<RecordID>.txt", "set-a"),  # not README.txt, Outcomes-a.txt, ...
    physionet2019.NAME: ("p[0-9]*.psv", "pNNNNNN.psv", "training_setA"),
}


def stage_stay_files(dataset: str, path: Path, into: Path) -> Path | None:
    """A single stay file, or a flat folder of them, copied into the official layout under `into`
    (returned); None when `path` is a data location already (or holds no stay files: then the
    usual data-location message explains what is expected)."""
    _check_name(dataset)
    if dataset not in _STAY_FILES:  # a MEDS dataset has no per-stay files: a data location only
        return None
    pattern, named, folder = _STAY_FILES[dataset]
    path = Path(path).expanduser()
    if path.is_file() and not is_archive(path):
        if not path.match(pattern):
            raise DataError(f"{path} is not a {dataset} stay file (expected {named})")
        files = [path]
    elif path.is_dir() and not has_data(dataset, path):
        files = [f for f in sorted(path.glob(pattern)) if f.is_file()]
    else:
        return None
    if not files:
        return None
    target = Path(into) / folder
    target.mkdir(parents=True, exist_ok=True)
    for f in files:  # copies, not links: the staged layout does not change with (or break on) the user's files
        shutil.copyfile(f, target / f.name)
    return Path(into)


def has_data(dataset: str, root: Path) -> bool:
    try:
        locate(dataset, root)
    except DataNotFoundError:
        return False
    return True


def _check_name(dataset: str) -> None:
    if dataset not in READERS:
        raise DataError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(READERS))}")


def _how_to_provide(dataset: str, root: Path, problem: str) -> str:
    return (
        f"{problem}.\n"
        f"Provide {dataset} in one of these ways:\n" + _HOW_TO_PROVIDE[dataset].replace("${env}", f"${DATA_ENV}")
    )
