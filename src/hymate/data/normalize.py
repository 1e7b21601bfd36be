"""Normalisation fitted on training stays only, and saved beside every model.

Values: per variable, clip to the training data's [0.1 %, 99.9 %] quantiles (robust to the
outliers that survive plausibility checks), then z-score with the clipped training mean and sd.
Time: hours scaled to [-1, 1] over the observation window. Statics: numeric columns z-scored
with a missing indicator; categorical columns one-hot over the training categories.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from hymate.data.schema import EventData
from hymate.errors import DataError
from hymate.io import write_atomic

CLIP_QUANTILES = (0.001, 0.999)
OTHER = "OTHER"


def other_token(code: pl.Expr) -> pl.Expr:
    """The "other" token of a code: its prefix's (`LAB//x` -> `LAB//OTHER`), or `OTHER` without one."""
    prefix = code.str.extract(r"^(.*?)//", 1)
    return pl.when(prefix.is_not_null()).then(prefix + "//" + OTHER).otherwise(pl.lit(OTHER))


@dataclass
class Normalizer:
    variables: list[str]  # vocabulary; variable i is encoded as i + 1 (0 is padding)
    value_lo: list[float]
    value_hi: list[float]
    value_mean: list[float]
    value_std: list[float]
    window_hours: float
    static_numeric: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (mean, sd)
    static_categorical: dict[str, list[int]] = field(default_factory=dict)  # name -> categories
    # Codes seen fewer than `min_count` times in training (and codes never seen, when > 0) are read as
    # their prefix's "other" token (`other_token`); 0: off, every training variable is its own.
    min_count: int = 0
    rare_codes: int = 0  # how many training codes were folded into "other" tokens, and their events
    rare_events: int = 0

    # --- fitting ------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        data: EventData,
        train_ids: list[int] | np.ndarray,
        window_hours: float,
        categorical: tuple[str, ...] = (),
        min_count: int = 0,
    ) -> Normalizer:
        ids = pl.Series(np.asarray(train_ids, dtype=np.int64)).implode()
        events = data.events.filter(pl.col("stay_id").is_in(ids))
        if events.height == 0:
            raise DataError("cannot fit normalisation: the training stays have no events")
        rare_codes = rare_events = 0
        if min_count > 1:
            counts = events.group_by("variable").len()
            rare = counts.filter(pl.col("len") < min_count)
            rare_codes, rare_events = rare.height, int(rare.get_column("len").sum())
            is_rare = pl.col("variable").is_in(rare.get_column("variable").implode())
            events = events.with_columns(pl.when(is_rare).then(other_token(pl.col("variable"))).otherwise(pl.col("variable")).alias("variable"))
        lo_q, hi_q = CLIP_QUANTILES
        stats = (
            events.group_by("variable")
            .agg(
                pl.col("value").quantile(lo_q, "linear").alias("lo"),
                pl.col("value").quantile(hi_q, "linear").alias("hi"),
            )
            .join(events, on="variable")
            .with_columns(pl.col("value").clip(pl.col("lo"), pl.col("hi")))
            .group_by("variable")
            .agg(pl.col("lo").first(), pl.col("hi").first(), pl.col("value").mean().alias("mean"),
                 pl.col("value").std(ddof=0).alias("std"))
            .sort("variable")
            # a variable whose events all lack a value (a MEDS code without numbers) has no statistics
            .with_columns(pl.col("lo", "hi", "mean").fill_null(0.0))
        )  # fmt: skip
        std = [s if s and s > 1e-8 else 1.0 for s in stats.get_column("std").to_list()]
        statics = data.statics.filter(pl.col("stay_id").is_in(ids))
        numeric, cats = {}, {}
        for col in statics.columns:
            if col == "stay_id":
                continue
            values = statics.get_column(col).drop_nulls()
            if col in categorical:
                cats[col] = sorted(int(v) for v in values.unique().to_list())
            else:
                mean = float(values.mean()) if len(values) else 0.0
                sd = float(values.std(ddof=0)) if len(values) > 1 else 1.0
                numeric[col] = (mean, sd if sd > 1e-8 else 1.0)
        return cls(
            variables=stats.get_column("variable").to_list(),
            value_lo=stats.get_column("lo").to_list(),
            value_hi=stats.get_column("hi").to_list(),
            value_mean=stats.get_column("mean").to_list(),
            value_std=std,
            window_hours=window_hours,
            static_numeric=numeric,
            static_categorical=cats,
            min_count=min_count,
            rare_codes=rare_codes,
            rare_events=rare_events,
        )

    # --- applying -----------------------------------------------------------------------
    @property
    def n_variables(self) -> int:
        return len(self.variables)

    @property
    def static_names(self) -> list[str]:
        names = []
        for col in self.static_numeric:
            names += [col, f"{col}_missing"]
        for col, categories in self.static_categorical.items():
            names += [f"{col}={c}" for c in categories]
        return names

    def encode_events(self, events: pl.DataFrame, unknown: str = "error") -> pl.DataFrame:
        """Add var_idx (1..V), z (normalised value) and t (time in [-1, 1]) columns.

        `unknown` says what to do with variables outside the vocabulary: "error" raises, "drop"
        removes them (callers compare row counts to report how many were dropped).
        """
        vocab = pl.DataFrame(
            {
                "variable": self.variables,
                "var_idx": np.arange(1, self.n_variables + 1, dtype=np.int32),
                "_lo": self.value_lo, "_hi": self.value_hi,
                "_mean": self.value_mean, "_std": self.value_std,
            }
        )  # fmt: skip
        if self.min_count > 0:  # a rare or unseen code is read as its prefix's "other" token, where there is one
            vocabulary = pl.Series(self.variables, dtype=pl.String).implode()
            known, other = pl.col("variable").is_in(vocabulary), other_token(pl.col("variable"))
            usable = other.is_in(vocabulary)
            events = events.with_columns(pl.when(~known & usable).then(other).otherwise(pl.col("variable")).alias("variable"))
        joined = events.join(vocab, on="variable", how="left", maintain_order="left")
        unknown_rows = joined.filter(pl.col("var_idx").is_null())
        if unknown_rows.height:
            names = sorted(unknown_rows.get_column("variable").unique().to_list())
            if unknown == "error":
                raise DataError(
                    f"{unknown_rows.height} events have variables the model was not trained on: {names[:20]}"
                )
            joined = joined.filter(pl.col("var_idx").is_not_null())
        # A null value is an event without one ("present": z is NaN, the batch flags it); NaN is an error.
        bad = joined.filter(pl.col("value").is_nan() | pl.col("value").is_infinite() | pl.col("time").is_nan())
        if bad.height:
            raise DataError(f"{bad.height} events have NaN or infinite values or times, e.g. {bad.head(3).rows()}")
        return joined.select(
            "stay_id",
            "time",
            "var_idx",
            ((pl.col("value").clip(pl.col("_lo"), pl.col("_hi")) - pl.col("_mean")) / pl.col("_std"))
            .cast(pl.Float32)
            .alias("z"),
            (2.0 * pl.col("time") / self.window_hours - 1.0).cast(pl.Float32).alias("t"),
        )

    def scale_time(self, hours: np.ndarray) -> np.ndarray:
        """Hours -> the model's clock: float32 in [-1, 1] over the window, exactly as `encode_events` scales event times."""
        return (2.0 * np.asarray(hours, dtype=np.float64) / self.window_hours - 1.0).astype(np.float32)

    def encode_statics(self, statics: pl.DataFrame) -> np.ndarray:
        """Return a float32 matrix [rows of `statics`, len(static_names)]."""
        missing = [c for c in [*self.static_numeric, *self.static_categorical] if c not in statics.columns]
        if missing:
            raise DataError(f"statics lack columns {missing} that the model was fitted with")
        exprs = []
        for col, (mean, sd) in self.static_numeric.items():
            exprs += [
                ((pl.col(col).cast(pl.Float64) - mean) / sd).fill_null(0.0).fill_nan(0.0).alias(col),
                pl.col(col).is_null().cast(pl.Float64).alias(f"{col}_missing"),
            ]
        for col, categories in self.static_categorical.items():
            exprs += [(pl.col(col) == c).fill_null(False).cast(pl.Float64).alias(f"{col}={c}") for c in categories]
        if not exprs:
            return np.zeros((statics.height, 0), dtype=np.float32)
        return statics.select(exprs).to_numpy().astype(np.float32)

    # --- persistence --------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Normalizer:
        raw = json.loads(text)
        raw["static_numeric"] = {k: tuple(v) for k, v in raw["static_numeric"].items()}
        return cls(**raw)

    def save(self, path: Path) -> None:
        write_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> Normalizer:
        return cls.from_json(path.read_text())

    def __post_init__(self) -> None:
        n = len(self.variables)
        if not all(len(x) == n for x in (self.value_lo, self.value_hi, self.value_mean, self.value_std)):
            raise DataError("normaliser statistics do not match its vocabulary length")
        if not (self.window_hours > 0 and math.isfinite(self.window_hours)):
            raise DataError(f"window_hours must be a positive number, got {self.window_hours}")
