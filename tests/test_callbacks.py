"""`keras_sn.callbacks.SigmaLogger`: sigma in the logs and in TensorBoard.

References: each layer's `sigma` read after training, and the scalars read
back from the TensorBoard event file with TensorFlow's summary iterator.
"""

import glob

import keras
import numpy as np
import pytest

import keras_sn
from backends import requires_tensorflow

SN = keras_sn.SpectralNormalization


def _model():
    inner = keras.Sequential([
        keras.Input((4,)),
        SN(keras.layers.Dense(3), name="inner_dense"),
    ], name="block")
    return keras.Sequential([
        keras.Input((4,)),
        inner,
        SN(keras.layers.Dense(4), name="hidden", target_norm=2.0),
        keras.layers.Dense(1, name="plain"),
    ])


def _data(n=16):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, 4)).astype("float32"),
            rng.standard_normal((n, 1)).astype("float32"))


def _fit(model, callbacks, epochs=3):
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    x, y = _data()
    return model.fit(x, y, batch_size=4, epochs=epochs, verbose=0,
                     callbacks=callbacks)


def _events(log_dir):
    import tensorflow as tf

    scalars = {}
    for path in glob.glob(f"{log_dir}/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor)
                if array.dtype.kind != "f":  # e.g. Keras' model config
                    continue
                scalars.setdefault(value.tag, []).append(
                    (event.step, float(array)))
    return scalars


def test_sigma_of_every_wrapper_in_the_history():
    model = _model()
    history = _fit(model, [keras_sn.callbacks.SigmaLogger()])
    logged = history.history
    assert set(logged) == {"loss", "sigma/inner_dense", "sigma/hidden"}
    assert len(logged["sigma/hidden"]) == 3
    assert logged["sigma/hidden"][-1] == pytest.approx(
        float(model.layers[1].sigma), rel=1e-6
    )
    assert logged["sigma/inner_dense"][-1] == pytest.approx(
        float(model.layers[0].layers[0].sigma), rel=1e-6
    )
    # The weights change under training, and so does sigma.
    assert logged["sigma/hidden"][0] != logged["sigma/hidden"][-1]


@requires_tensorflow
def test_tensorboard_scalars_per_epoch_and_every_n_batches(tmp_path):
    model = _model()
    log_dir = str(tmp_path / "sigma")
    history = _fit(model, [keras_sn.callbacks.SigmaLogger(
        log_dir=log_dir, update_freq=2)])
    scalars = _events(log_dir)
    assert {"sigma/hidden", "sigma/inner_dense", "batch_sigma/hidden",
            "batch_sigma/inner_dense"} <= set(scalars)
    epochs = scalars["sigma/hidden"]
    assert [step for step, _ in epochs] == [0, 1, 2]
    np.testing.assert_allclose([v for _, v in epochs],
                               history.history["sigma/hidden"], rtol=1e-6)
    # 4 batches per epoch, written every 2: steps 2, 4, ..., 12.
    assert [s for s, _ in scalars["batch_sigma/hidden"]] == list(
        range(2, 13, 2))


def test_separable_conv_logs_each_kernel():
    model = keras.Sequential([
        keras.Input((6, 6, 2)),
        SN(keras.layers.SeparableConv2D(2, 3), name="sep"),
        keras.layers.Flatten(),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(np.ones((2, 6, 6, 2)), np.ones((2, 1)), verbose=0,
                        callbacks=[keras_sn.callbacks.SigmaLogger()])
    logged = {k: v[0] for k, v in history.history.items()}
    assert logged["sigma/sep"] == pytest.approx(
        logged["sigma/sep/depthwise_kernel"]
        * logged["sigma/sep/pointwise_kernel"], rel=1e-6)


@requires_tensorflow
def test_scalars_are_tagged_for_tensorboards_scalars_plugin(tmp_path):
    import tensorflow as tf

    _fit(_model(), [keras_sn.callbacks.SigmaLogger(log_dir=str(tmp_path))],
         epochs=1)
    (path,) = glob.glob(f"{tmp_path}/events.out.tfevents.*")
    plugins = {
        value.metadata.plugin_data.plugin_name
        for event in tf.compat.v1.train.summary_iterator(path)
        for value in event.summary.value
    }
    assert plugins == {"scalars"}


@requires_tensorflow
def test_tensorboard_reads_the_scalars(tmp_path):
    import tensorflow as tf

    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator")
    model = _model()
    history = _fit(model, [keras_sn.callbacks.SigmaLogger(
        log_dir=str(tmp_path))], epochs=2)
    accumulator = event_accumulator.EventAccumulator(str(tmp_path))
    accumulator.Reload()
    assert "sigma/hidden" in accumulator.Tags()["tensors"]
    values = [float(tf.make_ndarray(event.tensor_proto))
              for event in accumulator.Tensors("sigma/hidden")]
    np.testing.assert_allclose(values, history.history["sigma/hidden"],
                               rtol=1e-6)


@requires_tensorflow
def test_a_tensorboard_callback_after_it_writes_sigma_too(tmp_path):
    pytest.importorskip("tensorboard")  # Keras' callback needs it
    model = _model()
    _fit(model, [keras_sn.callbacks.SigmaLogger(),
                 keras.callbacks.TensorBoard(str(tmp_path / "tb"))], epochs=1)
    scalars = _events(str(tmp_path / "tb" / "train"))
    assert "epoch_sigma/hidden" in scalars


@pytest.mark.parametrize("value", [0, -1, "batch", 1.5, True])
def test_update_freq_must_be_epoch_or_positive_int(value):
    with pytest.raises(ValueError, match=r"`update_freq` must be 'epoch' or a"
                       r" positive int.*Received: update_freq="):
        keras_sn.callbacks.SigmaLogger(log_dir="x", update_freq=value)


def test_update_freq_needs_a_log_dir():
    with pytest.raises(ValueError, match="needs a `log_dir`"):
        keras_sn.callbacks.SigmaLogger(update_freq=10)
