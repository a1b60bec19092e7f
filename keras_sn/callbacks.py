"""`SigmaLogger`: each wrapped layer's sigma in the logs and in TensorBoard."""

import numbers

import keras
from keras import ops

from keras_sn import _compat
from keras_sn._src import model_tools


class SigmaLogger(keras.callbacks.Callback):
    """Writes the sigma estimate of every `SpectralNormalization` layer.

    At the end of each epoch, adds `sigma/<layer name>` (the layer's
    `sigma`: the estimate its weight is divided by; for `SeparableConv` the
    product of both kernels', each also logged as
    `sigma/<layer name>/<weight name>`) to the epoch's logs, so `History`,
    `CSVLogger` and a `TensorBoard` callback listed after this one see them.
    With `log_dir`, it also writes them as TensorBoard scalars there (under
    the same tags, step = epoch; TensorFlow's `tf.summary`), and with
    `update_freq=N` every `N` training batches too (tags
    `batch_sigma/<layer name>`, step = batches since training began).

    Args:
        log_dir: `None`, or the directory of the TensorBoard event file
            (e.g. the `TensorBoard` callback's `log_dir + "/sigma"`).
        update_freq: `"epoch"`, or a positive int `N`: also write the scalars
            every `N` batches (needs `log_dir`).
        prefix: The tag prefix, `"sigma/"` by default.

    Example:

    >>> import numpy as np, keras, keras_sn
    >>> model = keras.Sequential([
    ...     keras.Input((3,)),
    ...     keras_sn.SpectralNormalization(keras.layers.Dense(1), name="d")])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> history = model.fit(np.ones((4, 3)), np.ones((4, 1)), verbose=0,
    ...                     callbacks=[keras_sn.callbacks.SigmaLogger()])
    >>> sorted(history.history)
    ['loss', 'sigma/d']
    """

    def __init__(self, log_dir=None, update_freq="epoch", prefix="sigma/"):
        super().__init__()
        if update_freq != "epoch" and not (
            isinstance(update_freq, numbers.Integral)
            and not isinstance(update_freq, bool)
            and update_freq > 0
        ):
            raise ValueError(
                "`update_freq` must be 'epoch' or a positive int (write "
                f"every N batches). Received: update_freq={update_freq!r}"
            )
        if update_freq != "epoch" and log_dir is None:
            raise ValueError(
                "`update_freq=N` writes TensorBoard scalars every N batches "
                "and needs a `log_dir`. Received: log_dir=None"
            )
        if not isinstance(prefix, str):
            raise ValueError(f"`prefix` must be a str. Received: {prefix!r}")
        self.log_dir = None if log_dir is None else str(log_dir)
        self.update_freq = update_freq
        self.prefix = prefix
        self._writer = None
        self._batches = 0

    def sigmas(self):
        """Dict of tag to float: the current sigma of every wrapped layer."""
        values = {}
        for layer in model_tools.wrapped_layers(self.model):
            if not layer.built:
                continue
            values[f"{self.prefix}{layer.name}"] = float(layer.sigma)
            per_weight = layer.sigmas
            if len(per_weight) > 1:
                for name, value in per_weight.items():
                    values[f"{self.prefix}{layer.name}/{name}"] = float(
                        ops.convert_to_numpy(value)
                    )
        return values

    def _write(self, values, step):
        if self.log_dir is None:
            return
        tf = _compat.require_tensorflow("`SigmaLogger(log_dir=...)`")
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            for tag, value in values.items():
                tf.summary.scalar(tag, value, step=step)
        self._writer.flush()

    def on_train_begin(self, logs=None):
        self._batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if self.update_freq != "epoch" and self._batches % self.update_freq == 0:
            values = {f"batch_{tag}": v for tag, v in self.sigmas().items()}
            self._write(values, self._batches)

    def on_epoch_end(self, epoch, logs=None):
        values = self.sigmas()
        if logs is not None:
            logs.update(values)
        self._write(values, epoch)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
