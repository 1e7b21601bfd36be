"""Train/validation/test splits, declared as protocols, saved as files with checksums.

A protocol is data: a name, what it needs of the stays (`needs`: the source groups it reads,
e.g. P12's sets or P19's hospitals; none for the generic ones) and how it draws its splits. Every
draw is stratified by the stay's label (binary: positive at any prediction time; multiclass: the
stay's first class; regression: the quartile of its first value), seeded, over the stays of the
task's view that have a label.

- ``strats``  (STraTS, the HyMaTE authors' code): test = P12 set a; sets b + c split 80/20 into
  train/validation. Needs source groups a, b, c.
- ``splits5`` (Raindrop, ViTST, Warpformer, ...): five 80/10/10 splits over all labelled stays.
- ``kfold5``: five folds (each stay in one test fold); the other stays are split 8:1 into
  train/validation, i.e. ~70/10/20.
- ``a2b``: train/validation on source group A (9:1), test on all of group B (P19's hospitals:
  external validation). Needs groups A and B.
- ``meds``: a MEDS dataset's own ``subject_splits.parquet`` (train / tuning / held_out become
  train / validation / test); nothing is drawn.

A protocol a task's data cannot support is a clear error, never a silent switch to another.
A split file records the ids of each part, the task, protocol, seed, split index, a fingerprint
of the stay set it was drawn from, and the sha256 of its own content; loading verifies both.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.model_selection import StratifiedKFold, train_test_split

from hymate.data.schema import EventData
from hymate.errors import DataError
from hymate.io import exclusive, write_atomic

PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    task: str
    protocol: str
    seed: int
    index: int
    stays_fingerprint: str
    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"{self.task}-{self.protocol}-seed{self.seed}-split{self.index}"

    def _content(self) -> dict:
        return {
            "task": self.task, "protocol": self.protocol, "seed": self.seed, "index": self.index,
            "stays_fingerprint": self.stays_fingerprint,
            "train": list(self.train), "val": list(self.val), "test": list(self.test),
        }  # fmt: skip

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self._content(), sort_keys=True).encode()).hexdigest()

    def save(self, folder: Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.name}.json"
        write_atomic(path, json.dumps({**self._content(), "sha256": self.sha256}))
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
            raise DataError(f"split file {path} was drawn from a different set of stays (the data or the task's "
                            "labelled stays changed since): delete it to draw the split again, or point the cache "
                            "at the data it was drawn from")  # fmt: skip
        return split


def stays_fingerprint(data: EventData) -> str:
    ids = np.sort(data.stays.get_column("stay_id").to_numpy())
    return hashlib.sha256(ids.astype("<i8").tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    draw: Callable[[np.ndarray, np.ndarray, np.ndarray, int], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]
    n_splits: int = 1
    needs: tuple[str, ...] = ()  # source groups (stays.split_group) the protocol reads
    drawn: bool = True  # False: the parts are given by the data (no random draw, no minimum size)


def _strats(ids, strata, groups, seed):
    test = ids[groups == "a"]
    dev = groups != "a"
    train, val = train_test_split(ids[dev], test_size=0.2, stratify=strata[dev], random_state=seed)
    return [(train, val, test)]


def _splits5(ids, strata, groups, seed):
    out = []
    for k in range(5):
        rs = seed * 1000 + k
        rest, test, y_rest, _ = train_test_split(ids, strata, test_size=0.1, stratify=strata, random_state=rs)
        train, val = train_test_split(rest, test_size=1 / 9, stratify=y_rest, random_state=rs)
        out.append((train, val, test))
    return out


def _kfold5(ids, strata, groups, seed):
    out = []
    for k, (rest, test) in enumerate(StratifiedKFold(n_splits=5, shuffle=True, random_state=seed).split(ids, strata)):
        train, val = train_test_split(ids[rest], test_size=1 / 8, stratify=strata[rest], random_state=seed * 1000 + k)
        out.append((train, val, ids[test]))
    return out


def _a2b(ids, strata, groups, seed):
    a = groups == "A"
    train, val = train_test_split(ids[a], test_size=0.1, stratify=strata[a], random_state=seed)
    return [(train, val, ids[groups == "B"])]


def _meds(ids, strata, groups, seed):
    return [(ids[groups == "train"], ids[groups == "tuning"], ids[groups == "held_out"])]


PROTOCOLS = {
    p.name: p
    for p in (
        Protocol("strats", "test = P12 set a; sets b + c split 80/20 into train/validation", _strats, 1, ("a", "b", "c")),
        Protocol("splits5", "five stratified 80/10/10 splits", _splits5, 5),
        Protocol("kfold5", "five folds; the rest of each split 8:1 into train/validation", _kfold5, 5),
        Protocol("a2b", "train/validation on source group A (9:1), test on group B", _a2b, 1, ("A", "B")),
        Protocol("meds", "the dataset's own subject_splits.parquet: train / tuning (validation) / held_out (test)",
                 _meds, 1, ("train", "tuning", "held_out"), drawn=False),
    )
}


def stay_strata(view: EventData, label_type: str) -> pl.DataFrame:
    """stay_id, split_group and the stratum of every labelled stay, sorted by stay_id."""
    labels = view.labels.filter(pl.col("label").is_not_null())
    if label_type == "binary":
        per_stay = labels.group_by("stay_id").agg((pl.col("label").max() > 0.5).cast(pl.Int64).alias("stratum"))
    else:
        per_stay = labels.sort("stay_id", "prediction_time").group_by("stay_id").agg(pl.col("label").first().alias("stratum"))
        if label_type == "regression":  # quartiles of the value
            q = np.quantile(per_stay.get_column("stratum").to_numpy(), [0.25, 0.5, 0.75]) if per_stay.height else []
            per_stay = per_stay.with_columns(pl.col("stratum").map_batches(lambda s: pl.Series(np.searchsorted(q, s.to_numpy(), side="right"))))
        per_stay = per_stay.with_columns(pl.col("stratum").cast(pl.Int64))
    return per_stay.join(view.stays.select("stay_id", "split_group"), on="stay_id").sort("stay_id")


def make_splits(view: EventData, task, protocol: str, seed: int = 0) -> list[Split]:
    """Draw the splits of `protocol` over the labelled stays of the task's view."""
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    if protocol not in task.protocols:
        raise DataError(f"task {task.name} does not use the {protocol} protocol; its protocols: {', '.join(task.protocols)}")
    spec = PROTOCOLS[protocol]
    per_stay = stay_strata(view, task.label_type)
    groups = per_stay.get_column("split_group").to_numpy().astype(str)
    present = sorted(set(groups.tolist()))
    if spec.needs and not set(spec.needs) <= set(present):
        raise DataError(f"the {protocol} protocol needs source groups {', '.join(spec.needs)}; "
                        f"{view.name} has {', '.join(present) or 'none'}")  # fmt: skip
    ids = per_stay.get_column("stay_id").to_numpy()
    strata = per_stay.get_column("stratum").to_numpy()
    counts = np.bincount(strata - strata.min()) if len(strata) else np.array([])
    if spec.drawn and (len(ids) < 10 or counts[counts > 0].min(initial=len(ids)) < 2):
        raise DataError(f"too few labelled stays to draw {protocol} splits for {task.name}: {len(ids)} stays, "
                        f"strata sizes {counts[counts > 0].tolist()}")  # fmt: skip
    fp = stays_fingerprint(view)
    try:
        parts = spec.draw(ids, strata, groups, seed)
    except ValueError as exc:  # scikit-learn's message for a stratum too small to split
        raise DataError(f"cannot draw {protocol} splits for {task.name}: {exc}") from None
    return [_split(task.name, protocol, seed, k, fp, *p) for k, p in enumerate(parts)]


def _split(task_name, protocol, seed, index, fp, train, val, test) -> Split:
    as_tuple = lambda ids: tuple(int(i) for i in np.sort(ids))  # noqa: E731
    return Split(task_name, protocol, seed, index, fp, as_tuple(train), as_tuple(val), as_tuple(test))


def load_or_make_splits(view: EventData, task, protocol: str, seed: int, folder: Path) -> list[Split]:
    """The protocol's split files from `folder` (verified against a fresh draw), written first if absent.
    Two processes on one folder take turns (a lock in `<folder>/.locks`): the second reads the first's files."""
    drawn = make_splits(view, task, protocol, seed)
    loaded = []
    with exclusive(Path(folder) / ".locks" / f"{task.name}-{protocol}-seed{seed}.lock", f"the split files in {folder}"):
        for split in drawn:
            path = Path(folder) / f"{split.name}.json"
            if path.exists():
                stored = Split.load(path, view)
                if stored.sha256 != split.sha256:
                    raise DataError(f"split file {path} differs from the split drawn with seed {seed}; "
                                    "it was made by another version or from other data. Remove it to redraw.")  # fmt: skip
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

    return Split(split.task, split.protocol, split.seed, split.index, split.stays_fingerprint,
                 pick(split.train, n_train), pick(split.val, n_eval), pick(split.test, n_eval))  # fmt: skip
