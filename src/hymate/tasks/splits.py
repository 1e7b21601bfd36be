"""Train/validation/test splits, saved as files with checksums so every model uses the same.

Protocols for PhysioNet 2012:

- ``strats``  (STraTS, and the HyMaTE authors' code): test = set-a; sets b + c split 80/20
  into train/validation, stratified by label, seeded.
- ``splits5`` (Raindrop, ViTST, Warpformer, ...): five stratified 80/10/10 splits over all
  usable stays, seeded; results are reported as mean +- sd over the five test sets.

A split file records the ids of each part, the protocol, seed, split index, a fingerprint of
the stay set it was drawn from, and the sha256 of its own content; loading verifies both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.model_selection import train_test_split

from hymate.data.schema import EventData
from hymate.errors import DataError

PROTOCOLS = ("strats", "splits5")
PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    dataset: str
    protocol: str
    seed: int
    index: int
    stays_fingerprint: str
    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.protocol}-seed{self.seed}-split{self.index}"

    def _content(self) -> dict:
        return {
            "dataset": self.dataset, "protocol": self.protocol, "seed": self.seed, "index": self.index,
            "stays_fingerprint": self.stays_fingerprint,
            "train": list(self.train), "val": list(self.val), "test": list(self.test),
        }  # fmt: skip

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self._content(), sort_keys=True).encode()).hexdigest()

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.name}.json"
        path.write_text(json.dumps({**self._content(), "sha256": self.sha256}))
        return path

    @classmethod
    def load(cls, path: Path, data: EventData | None = None) -> Split:
        try:
            raw = json.loads(Path(path).read_text())
            stored = raw.pop("sha256")
            split = cls(**{k: tuple(v) if k in PARTS else v for k, v in raw.items()})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"split file {path} is unreadable or incomplete: {exc}") from None
        if split.sha256 != stored:
            raise DataError(f"split file {path} fails its checksum: it was edited or corrupted")
        if data is not None and split.stays_fingerprint != stays_fingerprint(data):
            raise DataError(f"split file {path} was drawn from a different set of {split.dataset} stays")
        return split


def stays_fingerprint(data: EventData) -> str:
    ids = np.sort(data.stays.get_column("stay_id").to_numpy())
    return hashlib.sha256(ids.astype("<i8").tobytes()).hexdigest()[:16]


def make_splits(data: EventData, protocol: str, seed: int = 0) -> list[Split]:
    """Draw the splits of `protocol` (one for strats, five for splits5) over the labelled stays."""
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    labelled = data.stays.join(data.labels.select("stay_id", "label"), on="stay_id", how="inner").sort("stay_id")
    fp = stays_fingerprint(data)
    if protocol == "strats":
        return [_strats(data.name, labelled, seed, fp)]
    ids = labelled.get_column("stay_id").to_numpy()
    y = labelled.get_column("label").to_numpy()
    splits = []
    for k in range(5):
        rs = seed * 1000 + k
        rest, test, y_rest, _ = train_test_split(ids, y, test_size=0.1, stratify=y, random_state=rs)
        train, val = train_test_split(rest, test_size=1 / 9, stratify=y_rest, random_state=rs)
        splits.append(_split(data.name, "splits5", seed, k, fp, train, val, test))
    return splits


def _strats(name: str, labelled: pl.DataFrame, seed: int, fp: str) -> Split:
    groups = set(labelled.get_column("split_group").unique().to_list())
    if not {"a", "b", "c"} <= groups:
        raise DataError(f"the strats protocol needs PhysioNet sets a, b and c; found {sorted(groups)}")
    test = labelled.filter(pl.col("split_group") == "a").get_column("stay_id").to_numpy()
    dev = labelled.filter(pl.col("split_group") != "a")
    train, val = train_test_split(
        dev.get_column("stay_id").to_numpy(), test_size=0.2,
        stratify=dev.get_column("label").to_numpy(), random_state=seed,
    )  # fmt: skip
    return _split(name, "strats", seed, 0, fp, train, val, test)


def _split(name, protocol, seed, index, fp, train, val, test) -> Split:
    as_tuple = lambda ids: tuple(int(i) for i in np.sort(ids))  # noqa: E731
    return Split(name, protocol, seed, index, fp, as_tuple(train), as_tuple(val), as_tuple(test))


def load_or_make_splits(data: EventData, protocol: str, seed: int, folder: Path) -> list[Split]:
    """The protocol's split files from `folder` (verified), written there first if absent."""
    splits = make_splits(data, protocol, seed)
    loaded = []
    for split in splits:
        path = folder / f"{split.name}.json"
        if path.exists():
            stored = Split.load(path, data)
            if stored.sha256 != split.sha256:
                raise DataError(
                    f"split file {path} differs from the split drawn with seed {seed}; "
                    "it was made by another version or from other data. Remove it to redraw."
                )
            loaded.append(stored)
        else:
            split.save(folder)
            loaded.append(split)
    return loaded


def subsample(split: Split, n_train: int | None, n_eval: int | None, seed: int = 0) -> Split:
    """A smaller split for quick runs: random stays of each part (same seed, same result)."""
    rng = np.random.default_rng(seed)

    def pick(ids: tuple[int, ...], n: int | None) -> tuple[int, ...]:
        if n is None or n >= len(ids):
            return ids
        return tuple(sorted(rng.choice(np.array(ids), n, replace=False).tolist()))

    return Split(split.dataset, split.protocol, split.seed, split.index, split.stays_fingerprint,
                 pick(split.train, n_train), pick(split.val, n_eval), pick(split.test, n_eval))  # fmt: skip
