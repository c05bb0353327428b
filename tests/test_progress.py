"""The training bar counts batches (it moves within a long epoch) and the time limit stops training
before an epoch that would end past it."""

import time

import keras
import numpy as np

from model_builder.progress import EpochProgress


class Slow(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        time.sleep(0.3)


def tiny_fit(progress: EpochProgress, epochs: int, extra=()) -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).random((32, 3)).astype("float32")
    model.fit(x, x[:, :1], validation_data=(x, x[:, :1]), batch_size=8, epochs=epochs, verbose=0,
              callbacks=[*extra, progress])


def test_bar_counts_batches_and_keeps_best_weights():
    progress = EpochProgress(epochs=3, patience=5)
    tiny_fit(progress, 3)
    assert progress.bar.total == 12 and progress.bar.n == 12  # 3 epochs x 4 batches
    assert len(progress.history["val_loss"]) == 3 and progress.best_weights is not None
    progress.close()


def test_time_limit_stops_before_an_epoch_that_would_pass_it():
    progress = EpochProgress(epochs=50, patience=50, time_limit_s=1.0)
    tiny_fit(progress, 50, extra=[Slow()])  # each epoch takes a little over 0.3 s
    epochs = len(progress.history["loss"])
    assert 1 <= epochs <= 3
    assert progress.bar.total == 4 * epochs and progress.bar.n == 4 * epochs  # the ETA shrank to what fits
    progress.close()
