"""States a user can reach: builds inside a trace, and u, v that disagree with W.

sigma is ||M v||: positive by construction, at most the true sigma for any
unit v, and equal to u^T M v once u, v and W agree. The references are numpy
SVDs of the kernel read as the paper's matrix (tests/references.py).
"""

import keras
import numpy as np
import pytest

import keras_sn
from backends import to_numpy
from references import output_axis_matrix
from references import reference_sigma


def _conv_sigma(kernel):
    return reference_sigma(output_axis_matrix(kernel, -1))


def test_sequential_without_input_builds_and_trains():
    # Keras' own spectral_normalization_test.py::test_end_to_end, with
    # keras_sn: `fit` builds the model itself (on JAX inside a symbolic
    # trace), and the warm-up must still run on the initialized kernel.
    model = keras.Sequential([
        keras_sn.SpectralNormalization(
            keras.layers.Conv2D(3, 2, padding="same"))
    ])
    model.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6, 6, 2)).astype("float32")
    y = rng.standard_normal((4, 6, 6, 3)).astype("float32")
    history = model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    wrapper = model.layers[0]
    u = to_numpy(wrapper.vector_u)
    np.testing.assert_allclose(np.linalg.norm(u, axis=-1), 1.0, rtol=1e-5)
    # The warm-up (Lanczos on a 3 x 8 matrix: exact), then one power step per
    # SGD step: the estimate trails the moving kernel by a step (seen: 2e-5).
    # Without a warm-up u and v would still be zero and sigma 0.
    kernel = to_numpy(wrapper.layer.kernel)
    assert float(wrapper.sigma) == pytest.approx(_conv_sigma(kernel), rel=1e-3)


def test_sequential_without_input_is_warmed_up_before_its_first_step():
    model = keras.Sequential([
        keras_sn.SpectralNormalization(keras.layers.Dense(8)),
    ])
    model.build((None, 24))
    wrapper = model.layers[0]
    exact = reference_sigma(to_numpy(wrapper.layer.kernel).T)
    assert float(wrapper.sigma) == pytest.approx(exact, rel=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_a_new_kernel_without_reestimate_never_divides_by_a_bad_sigma(seed):
    # The case: wrap Dense(16), build, then set_weights with a random
    # 24x16 kernel and no reestimate(). u^T M v was negative in 2 of 5 seeds.
    wrapper = keras_sn.SpectralNormalization(keras.layers.Dense(16))
    wrapper.build((None, 24))
    rng = np.random.default_rng(seed)
    kernel = rng.standard_normal((24, 16)).astype("float32")
    bias = np.zeros(16, "float32")
    wrapper.layer.set_weights([kernel, bias])
    sigma = float(wrapper.sigma)
    true = reference_sigma(kernel.T.astype(np.float64))
    # ||M v|| for a unit v lies in (0, sigma_max]; float32 products can
    # exceed it by a few ulps of the sum.
    assert 0.0 < sigma <= true * (1 + 1e-5)
    x = rng.standard_normal((3, 24)).astype("float32")
    for training in (False, True, False):
        y = to_numpy(wrapper(x, training=training))
        assert np.all(np.isfinite(y))
        # Each output is bounded by ||x|| * ||W / sigma||: sigma is never
        # floored at epsilon here (that would scale outputs by 1e12).
        bound = np.linalg.norm(x, axis=1) * true / float(wrapper.sigma)
        assert np.all(np.linalg.norm(y, axis=1) <= bound * (1 + 1e-4))


@pytest.mark.parametrize("seed", range(3))
def test_warmup_zero_gives_a_positive_bounded_sigma(seed):
    keras.utils.set_random_seed(seed)
    layer = keras.layers.Conv2D(5, 3)
    wrapper = keras_sn.SpectralNormalization(layer, warmup_iterations=0)
    wrapper.build((None, 6, 6, 4))
    true = _conv_sigma(to_numpy(layer.kernel))
    sigma = float(wrapper.sigma)
    assert 0.0 < sigma <= true * (1 + 1e-5)
    y = to_numpy(wrapper(np.ones((1, 6, 6, 4), "float32")))
    assert np.all(np.isfinite(y))


def test_random_inconsistent_vectors_give_a_positive_bounded_sigma():
    # u and v drawn independently of each other and of W (what a kernel
    # loaded on its own leaves): u^T M v has either sign, ||M v|| does not.
    wrapper = keras_sn.SpectralNormalization(keras.layers.Dense(6))
    wrapper.build((None, 10))
    rng = np.random.default_rng(3)
    kernel = to_numpy(wrapper.layer.kernel)
    true = reference_sigma(kernel.T.astype(np.float64))
    for _ in range(5):
        u = rng.standard_normal((1, 6)).astype("float32")
        v = rng.standard_normal((1, 10)).astype("float32")
        wrapper.vector_u.assign(u / np.linalg.norm(u))
        wrapper.vector_v.assign(v / np.linalg.norm(v))
        sigma = float(wrapper.sigma)
        expected = np.linalg.norm(kernel.T @ (v[0] / np.linalg.norm(v)))
        assert sigma == pytest.approx(expected, rel=1e-5)
        assert 0.0 < sigma <= true * (1 + 1e-5)


@pytest.mark.parametrize("epsilon", [1e-12, 1.5, 40.0])
@pytest.mark.parametrize("method", ["reshape", "operator"])
def test_training_keeps_u_and_v_unit_for_any_epsilon(epsilon, method):
    # epsilon is only the norm floor: with a floor above the norms of the
    # power step's products (40 here) u and v keep their previous values,
    # and below them they are the exact directions. Found by the fuzz test:
    # with epsilon 1.5 and two output units, u came out with norm 0.78.
    keras.utils.set_random_seed(0)
    if method == "reshape":
        layer, shape = keras.layers.Dense(2), (None, 4)
    else:
        layer, shape = keras.layers.Conv2D(2, 3), (None, 6, 6, 2)
    wrapper = keras_sn.SpectralNormalization(
        layer, epsilon=epsilon, method=method
    )
    wrapper.build(shape)
    layer.kernel.assign(3.0 * to_numpy(layer.kernel))  # sigma above 1.5
    x = np.random.default_rng(0).standard_normal((2,) + shape[1:])
    for _ in range(3):
        wrapper(x.astype("float32"), training=True)
    for vector in (wrapper.vector_u, wrapper.vector_v):
        values = to_numpy(vector).reshape(to_numpy(vector).shape[0], -1)
        np.testing.assert_allclose(np.linalg.norm(values, axis=-1), 1.0,
                                   rtol=1e-6)


@pytest.mark.parametrize("data_init", [False, True], ids=["plain", "data_init"])
def test_weight_normalization_in_a_sequential_without_input_fits(data_init):
    model = keras.Sequential([
        keras_sn.WeightNormalization(
            keras.layers.Conv2D(3, 2, padding="same"), data_init=data_init)
    ])
    # A zero learning rate: after `fit` (which builds the model, on JAX and
    # torch symbolically) g is still what initialization gave it.
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6, 6, 2)).astype("float32")
    y = rng.standard_normal((4, 6, 6, 3)).astype("float32")
    history = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    wrapper = model.layers[0]
    kernel = to_numpy(wrapper.layer.kernel).astype(np.float64)
    norms = np.sqrt(np.sum(kernel ** 2, axis=(0, 1, 2)))  # per output channel
    np.testing.assert_allclose(to_numpy(wrapper.g), norms, rtol=1e-6)
