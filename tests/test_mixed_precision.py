"""Mixed precision: float32 master weights, state and power iteration."""

import keras
import numpy as np
import pytest
from keras.backend import standardize_dtype

import keras_sn
from backends import to_numpy
from references import output_axis_matrix
from references import reference_sigma

POLICIES = ["mixed_float16", "mixed_bfloat16"]


def _model():
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        keras_sn.SpectralNormalization(keras.layers.Conv2D(6, 3)),
        keras.layers.Flatten(),
        keras_sn.SpectralNormalization(keras.layers.Dense(2)),
    ])


@pytest.mark.parametrize("policy", POLICIES)
def test_state_and_sigma_stay_float32_and_master_kernel_is_untouched(policy):
    keras.config.set_dtype_policy(policy)
    model = _model()
    conv = model.layers[0]
    assert standardize_dtype(conv.vector_u.dtype) == "float32"
    # The master weight (read outside any autocast scope).
    assert standardize_dtype(conv.layer.kernel.dtype) == "float32"
    kernel = conv.layer.kernel.numpy().copy()
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 3))
    for training in (True, True, False, None, True):
        y = model(x, training=training)
        assert standardize_dtype(y.dtype) == keras.DTypePolicy(policy).compute_dtype
    np.testing.assert_array_equal(conv.layer.kernel.numpy(), kernel)
    # Sigma computed in float32 from the float32 master: float32 accuracy.
    expected = reference_sigma(output_axis_matrix(kernel))
    assert float(conv.sigma) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("policy", POLICIES)
def test_output_matches_float32_reference_within_compute_precision(policy):
    keras.config.set_dtype_policy(policy)
    layer = keras_sn.SpectralNormalization(keras.layers.Dense(5))
    x = np.random.default_rng(1).standard_normal((3, 7)).astype("float32")
    y = to_numpy(layer(x, training=True)).astype(np.float64)
    k = layer.layer.kernel.numpy().astype(np.float64)
    expected = x @ (k / reference_sigma(k)) + layer.layer.bias.numpy()
    tolerance = 2e-2 if policy == "mixed_bfloat16" else 3e-3
    np.testing.assert_allclose(y, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("policy", POLICIES)
def test_fit_under_mixed_precision_keeps_float32_state(policy):
    keras.config.set_dtype_policy(policy)
    model = _model()
    model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(2).standard_normal((8, 8, 8, 3))
    y = np.zeros((8, 2))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for layer in (model.layers[0], model.layers[-1]):
        assert standardize_dtype(layer.vector_u.dtype) == "float32"
        assert np.linalg.norm(layer.vector_u.numpy()) == pytest.approx(1, 1e-5)
        assert np.all(np.isfinite(layer.layer.kernel.numpy()))


def test_embedding_under_mixed_precision_returns_compute_dtype_floats():
    keras.config.set_dtype_policy("mixed_float16")
    layer = keras_sn.SpectralNormalization(keras.layers.Embedding(10, 4))
    y = layer(np.array([[1, 2]]), training=True)
    assert standardize_dtype(y.dtype) == "float16"
    assert np.any(to_numpy(y) != 0)
