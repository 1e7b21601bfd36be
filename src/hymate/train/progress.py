"""Training progress that works everywhere, and Lightning without its banners.

On a terminal, Lightning's Rich bar. Anywhere else (a log file, CI, ``nohup``), where a bar draws
nothing, `ProgressLines` writes plain lines to stderr: ~10 per epoch (or every `every` steps) and one at
the end of each epoch, with elapsed time, steps/s, the ETA of the epoch and of the run (at `max_epochs`: early
stopping can only make it shorter) and the validation metrics.

`quiet_lightning()` drops, by message, the lines Lightning prints on every `fit` that tell a user
nothing about their run (accelerator availability, a logging-service advertisement, "Loading
`train_dataloader` to estimate...", the stop reason our own lines already give) and one
third-party deprecation warning; every other log record and warning passes. Under ``--verbose``
nothing is dropped.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import warnings

from lightning.pytorch.callbacks import Callback

from hymate.output import verbose

# Lightning's per-fit banners (lightning.pytorch.utilities.rank_zero, INFO level).
_BANNERS = re.compile(
    r"^(GPU available|TPU available|HPU available|IPU available|💡 Tip|Loading `train_dataloader` to estimate"
    r"|`Trainer.fit` stopped: `max_(epochs|steps)=|You are using a CUDA device)"
)
_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero", "lightning.pytorch.accelerators.cuda")


class _DropBanners(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _BANNERS.match(record.getMessage().lstrip())


_FILTER = _DropBanners()


def quiet_lightning() -> None:
    """Idempotent; called before every Trainer is built. A no-op under ``--verbose``."""
    if verbose():
        return
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    # lightning's own pytree shim calls a deprecated torch API; nothing a user can act on. The
    # logging-interval hint is about Lightning's step logging, which hymate does not use.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging interval")
    # A resumed run writes into its own folders: the CSV logger's old rows are read before the fit
    # and put back after it (estimators.fit_and_select), and last.ckpt is what it resumes from.
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


def clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class ProgressLines(Callback):
    """Plain progress lines (see the module docstring) for output that is not a terminal."""

    def __init__(self, every: int | None = None, stream=None) -> None:
        self.every, self.stream = every, stream
        self._fit_start = self._epoch_start = 0.0
        self._epochs_done_here = 0

    def _write(self, line: str) -> None:
        print(line, file=self.stream or sys.stderr, flush=True)

    def on_train_start(self, trainer, pl_module) -> None:
        self._fit_start = time.perf_counter()
        self._epochs_done_here = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_start = time.perf_counter()
        self._loss_sum, self._loss_n = 0.0, 0

    def _steps(self, trainer) -> int:
        n = trainer.num_training_batches
        return int(n) if n not in (None, float("inf")) else 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self._loss_sum, self._loss_n = self._loss_sum + float(loss), self._loss_n + 1
        done, total = batch_idx + 1, self._steps(trainer)
        every = self.every or (max(1, total // 10) if total else 100)
        if done % every or done == total:  # the epoch's own line follows its validation
            return
        elapsed = time.perf_counter() - self._epoch_start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 and total else None
        self._write(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} step {done}/{total or '?'}"
            f" ({rate:.1f} steps/s, {clock(elapsed)} elapsed, epoch ETA {clock(eta) if eta is not None else '?'})"
            + (f" mean loss {self._loss_sum / self._loss_n:.4f}" if self._loss_n else "")
        )

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # after the epoch's validation
        self._epochs_done_here += 1
        now = time.perf_counter()
        per_epoch = (now - self._fit_start) / self._epochs_done_here
        left = trainer.max_epochs - (trainer.current_epoch + 1)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        selection = getattr(getattr(pl_module, "objective", None), "selection", None)
        named = {"score": f"score ({selection}, what selects the epoch)"} if selection else {}
        shown = " ".join(f"{named.get(k.removeprefix('val/'), k.removeprefix('val/'))} {v:.4f}"
                         for k, v in sorted(metrics.items()))  # fmt: skip
        self._write(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} done in {clock(now - self._epoch_start)}"
            f" (run {clock(now - self._fit_start)}, at most {clock(left * per_epoch)} left): val {shown}"
        )
