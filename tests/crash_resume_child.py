"""Training child of the crash-and-resume tests (run as a script).

`tests/test_crash_resume.py` runs it in these modes, each in a process
other than the killed ones, as after a real crash:

  reference DIR          The uninterrupted run (`reference.npz`), the run with
                         Keras' step-checkpoint replay (`replay.npz`, see the
                         test) and a `.keras` file saved after the first
                         `keras_split_epochs` epochs (`partial.keras`).
  train DIR BACKUP [E B] `fit` with `BackupAndRestore(BACKUP)`. With E B it
                         writes `DIR/paused` after batch B of epoch E and waits
                         there for the test to SIGKILL it. Otherwise it runs
                         to the end and writes `DIR/<BACKUP name>.npz` and
                         `DIR/<BACKUP name>.json` (the epochs and batches it
                         actually trained).
  continue DIR           Loads `partial.keras` and trains the remaining
                         epochs (`continued.npz`).
  sequence DIR JSON      Runs each argument list of the JSON list in turn, in
                         this one process (every run builds its own model
                         from the seed; Keras' session is cleared between
                         runs). A process start costs about 17 s of CPU
                         (TensorFlow and Keras imports), far more than a run.

Every run seeds Keras, enables TensorFlow op determinism and runs on CPU.
Results are all model weights (kernels, biases, u and v) and the optimizer's
variables, by position.
"""

import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import keras_sn

PAUSE_LIMIT_S = 600  # a pause nobody ends must not outlive the test


def load_config(directory):
    with open(os.path.join(directory, "config.json")) as f:
        return json.load(f)


def make_model(config):
    keras.utils.set_random_seed(config["seed"])
    sn = keras_sn.SpectralNormalization
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        sn(keras.layers.Conv2D(8, 3, strides=2, padding="same")),
        keras.layers.LeakyReLU(0.1),
        sn(keras.layers.Conv2D(8, 3, padding="same"), power_iterations=2),
        keras.layers.LeakyReLU(0.1),
        keras.layers.Flatten(),
        sn(keras.layers.Dense(4)),
    ])
    compile_model(model)
    return model


def compile_model(model):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss="mse", jit_compile=False
    )


def data(config):
    rng = np.random.default_rng(config["seed"])
    n = config["steps_per_epoch"] * config["batch_size"]
    x = rng.standard_normal((n, 8, 8, 1)).astype("float32")
    y = rng.standard_normal((n, 4)).astype("float32")
    return x, y


def fit(model, x, y, config, epochs, callbacks=(), initial_epoch=0):
    # shuffle=False: a restarted process must see the same batches in the
    # same order as the uninterrupted run (a resumed epoch would otherwise be
    # shuffled with a fresh random state).
    return model.fit(
        x, y, batch_size=config["batch_size"], epochs=epochs,
        initial_epoch=initial_epoch, callbacks=list(callbacks),
        shuffle=False, verbose=0,
    )


def state(model):
    """All model and optimizer variables, by position."""
    variables = list(model.weights) + list(model.optimizer.variables)
    return {
        f"{index:03d}:{v.path}": np.asarray(v.numpy())
        for index, v in enumerate(variables)
    }


def save_state(model, path):
    # Paths carry uniquified layer names, which may differ between
    # processes; the test compares by position (the index prefix).
    np.savez(path, **state(model))


class PauseForKill(keras.callbacks.Callback):
    """Writes a marker after batch `batch` of epoch `epoch`, then waits."""

    def __init__(self, marker, epoch, batch):
        super().__init__()
        self.marker, self.target = marker, (epoch, batch)
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.target:
            with open(self.marker, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(PAUSE_LIMIT_S)
            sys.exit("paused for a kill that never came")


class RecordProgress(keras.callbacks.Callback):
    """Records the (epoch, batch) pairs this process trained."""

    def __init__(self):
        super().__init__()
        self.trained, self.epoch = [], None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.trained.append([self.epoch, batch])


def run_reference(directory, config):
    x, y = data(config)
    epochs = config["epochs"]

    model = make_model(config)
    fit(model, x, y, config, epochs)
    save_state(model, os.path.join(directory, "reference.npz"))

    # What Keras 3.15 does after a kill with a step checkpoint taken after
    # batch B of epoch E: restore those weights, then rerun epoch E from its
    # first batch (the batch in the checkpoint's metadata is ignored).
    replay_epoch, replay_batch = config["replay_from"]
    model = make_model(config)
    fit(model, x, y, config, replay_epoch)
    part = (replay_batch + 1) * config["batch_size"]
    fit(model, x[:part], y[:part], config, 1)
    fit(model, x, y, config, epochs - replay_epoch)
    save_state(model, os.path.join(directory, "replay.npz"))

    model = make_model(config)
    fit(model, x, y, config, config["keras_split_epochs"])
    model.save(os.path.join(directory, "partial.keras"))


def run_train(directory, backup, pause_at):
    config = load_config(directory)
    x, y = data(config)
    model = make_model(config)
    record = RecordProgress()
    callbacks = [
        keras.callbacks.BackupAndRestore(
            backup, save_freq=config["save_freq"][os.path.basename(backup)],
            double_checkpoint=True,
        ),
        record,
    ]
    if pause_at:
        callbacks.append(
            PauseForKill(os.path.join(directory, "paused"), *pause_at)
        )
    fit(model, x, y, config, config["epochs"], callbacks)
    name = os.path.join(directory, os.path.basename(backup))
    save_state(model, name + ".npz")
    with open(name + ".json", "w") as f:
        json.dump({"trained": record.trained}, f)


def run_continue(directory, config):
    x, y = data(config)
    model = keras.models.load_model(os.path.join(directory, "partial.keras"))
    fit(model, x, y, config, config["epochs"],
        initial_epoch=config["keras_split_epochs"])
    save_state(model, os.path.join(directory, "continued.npz"))


def main(argv):
    tf.config.experimental.enable_op_determinism()
    mode = argv[0]
    if mode == "sequence":
        for arguments in json.loads(argv[2]):
            keras.backend.clear_session()
            run(arguments)
    else:
        run(argv)


def run(argv):
    mode, directory = argv[0], argv[1]
    if mode == "reference":
        run_reference(directory, load_config(directory))
    elif mode == "train":
        pause_at = [int(a) for a in argv[3:5]]
        run_train(directory, argv[2], pause_at)
    elif mode == "continue":
        run_continue(directory, load_config(directory))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
