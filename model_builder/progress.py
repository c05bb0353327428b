"""Training progress: a bar over epochs with ETA, and the best weights kept as they come."""

from __future__ import annotations

import math
import sys
import time

import keras
from tqdm import tqdm


class EpochProgress(keras.callbacks.Callback):
    """Shows an epoch bar (loss, val_loss, ETA), keeps the weights of the best validation loss,
    and stops after `patience` epochs without improvement or when the time limit is reached."""

    def __init__(self, epochs: int, patience: int, enabled: bool = True, time_limit_s: float = 0.0):
        super().__init__()
        self.patience = patience
        self.time_limit_s = time_limit_s
        self.started = time.monotonic()
        self.best = math.inf
        self.best_weights: list | None = None
        self.wait = 0
        self.history: dict[str, list[float]] = {}
        self.epochs = epochs
        self.steps = 0  # batches per epoch once training starts; 0: unknown, the bar counts epochs
        self.epoch_started = self.started
        self.bar = tqdm(total=epochs, desc="training", unit="batch", disable=not enabled, file=sys.stderr,
                        dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 20)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.steps = int(self.params.get("steps") or 0)  # the bar moves within an epoch
        if self.steps:
            self.bar.total = self.epochs * self.steps
            self.bar.refresh()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_started = time.monotonic()
        self.bar.set_description(f"training, epoch {epoch + 1}")

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.steps:
            self.bar.update(1)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))
        val = float(logs.get("val_loss", math.inf))
        if val < self.best:
            self.best, self.wait = val, 0
            self.best_weights = self.model.get_weights()
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.model.stop_training = True
        now = time.monotonic()
        last_epoch = now - self.epoch_started
        if self.time_limit_s and now - self.started + last_epoch > self.time_limit_s:
            self.model.stop_training = True  # the next epoch would end past the limit
        self.bar.set_postfix(loss=f"{logs.get('loss', math.nan):.5f}", val=f"{val:.5f}", best=f"{self.best:.5f}")
        if not self.steps:
            self.bar.update(1)
        elif self.time_limit_s and last_epoch > 0:  # the ETA of the epochs the time limit leaves
            fit = epoch + 1 + int(max(0.0, self.time_limit_s - (now - self.started)) // last_epoch)
            self.bar.total = self.steps * min(self.epochs, fit)
            self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def fit_keeping_best(model, train, val, epochs: int, progress: EpochProgress, extra_callbacks=()) -> dict:
    """model.fit with the progress bar; Ctrl-C stops training and keeps the best weights so far. The
    model ends with the weights of its best validation epoch; returns the history."""
    from capture.errors import GutcheckError

    try:
        model.fit(train, validation_data=val, epochs=epochs, callbacks=[progress, *extra_callbacks], verbose=0,
                  shuffle=False)
    except KeyboardInterrupt:
        print("\ninterrupted: keeping the best model so far", file=sys.stderr)
    finally:
        progress.close()
    if progress.best_weights is None:
        raise GutcheckError("training was stopped before the first epoch finished; nothing to keep")
    model.set_weights(progress.best_weights)
    return progress.history
