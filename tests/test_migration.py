"""`keras_sn.from_builtin`: models trained with Keras' built-in wrapper."""

import keras
import numpy as np
import pytest

import keras_sn
from backends import to_numpy

BUILTIN = keras.layers.SpectralNormalization


def _builtin_model():
    inputs = keras.Input((8, 8, 3))
    x = BUILTIN(keras.layers.Conv2D(4, 3, padding="same"), name="conv")(inputs)
    x = keras.layers.LeakyReLU(0.1)(x)
    x = BUILTIN(keras.layers.Conv2DTranspose(2, 3, strides=2), name="up")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(8, name="plain")(x)
    outputs = BUILTIN(keras.layers.Dense(1), name="out")(x)
    return keras.Model(inputs, outputs)


def _data(n=32):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, 8, 8, 3)).astype("float32"),
            rng.standard_normal((n, 1)).astype("float32"))


def _kernels(model):
    return {name: to_numpy(model.get_layer(name).layer.kernel)
            for name in ["conv", "up", "out"]}


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(7)
    model = _builtin_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    return model


def test_converted_model_gives_the_same_inference_outputs(trained):
    x, _ = _data(16)
    new = keras_sn.from_builtin(trained)
    assert [type(layer) for layer in keras_sn.wrapped_layers(new)] == [
        keras_sn.SpectralNormalization] * 3
    assert [layer.name for layer in new.layers[1:]] == [
        layer.name for layer in trained.layers[1:]]  # after the InputLayer
    for name, kernel in _kernels(trained).items():  # the trained weights
        np.testing.assert_array_equal(_kernels(new)[name], kernel)
    expected = to_numpy(trained.predict(x, verbose=0))
    # float32 rounding of W * sigma_initial / sigma through four layers.
    np.testing.assert_allclose(
        to_numpy(new.predict(x, verbose=0)), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        to_numpy(new(x, training=False)), expected, rtol=1e-5, atol=1e-5)


def test_converted_model_trains_without_writing_the_kernels(trained):
    x, y = _data()
    new = keras_sn.from_builtin(trained)
    before = _kernels(new)
    u_before = to_numpy(new.get_layer("conv").vector_u)
    # A zero learning rate: the built-in would still write W / sigma into
    # its kernels; ours runs the power iteration and leaves them alone.
    new.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    new.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for name, kernel in _kernels(new).items():
        np.testing.assert_array_equal(kernel, before[name])
    assert to_numpy(new.get_layer("conv").vector_u).shape == u_before.shape
    # A real optimizer: the raw kernels are updated, and the model goes on.
    new.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    history = new.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    for name, kernel in _kernels(new).items():
        assert not np.array_equal(kernel, before[name]), name
    # The original model is untouched by the conversion and the training.
    np.testing.assert_array_equal(
        _kernels(trained)["out"], to_numpy(trained.get_layer("out").layer.kernel))


def test_options_override_the_defaults(trained):
    new = keras_sn.from_builtin(trained, target_norm=1.0, power_iterations=2)
    for layer in keras_sn.wrapped_layers(new):
        assert layer.target_norm == 1.0 and layer.power_iterations == 2


@pytest.mark.parametrize(
    "model", [keras.layers.Dense(2), "model.keras", None],
    ids=["layer", "path", "none"])
def test_rejects_what_is_not_a_model(model):
    with pytest.raises(ValueError, match="from_builtin` takes a Keras"):
        keras_sn.from_builtin(model)


def test_rejects_name_option(trained):
    with pytest.raises(ValueError, match="names each wrapper"):
        keras_sn.from_builtin(trained, name="x")
