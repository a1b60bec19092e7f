"""The gradient through sigma: finite differences in float64 and eq. 12.

Miyato et al. (2018), eq. 12, in Keras' kernel layout K = Mᵀ (d_in x d_out):
dL/dK = (G - <G, K_SN> v uᵀ) / sigma, with G = dL/dK_SN.
"""

import keras
import numpy as np
import pytest
from keras import ops

import keras_sn
from backends import float64_only
from backends import gradients
from backends import tensorflow_only
from backends import to_numpy
from references import output_axis_matrix
from references import reference_sigma
from references import central_differences

# Finite differences need float64.
pytestmark = [float64_only, pytest.mark.float64]


def _float64_wrapper(inner, input_shape, **options):
    options.setdefault("warmup_iterations", 100)
    layer = keras_sn.SpectralNormalization(inner, **options)
    layer.build(input_shape)
    return layer


def _loss(outputs, weights):
    # A polynomial: exact in float64 on every backend (Keras' JAX `sin`
    # computes float64 inputs in float32, which would swamp the differences).
    weights = ops.convert_to_tensor(
        weights, dtype=keras.backend.standardize_dtype(outputs.dtype)
    )
    return ops.sum((outputs + outputs * outputs * outputs / 3.0) * weights)


def _tape_gradient(layer, x, r, training):
    kernel = layer.layer.trainable_weights[0]
    return gradients(lambda: _loss(layer(x, training=training), r), [kernel])[0]


def _true_sn_layer(make, layer, input_shape, output_axis):
    """`run_at(k)`: an unwrapped copy of `layer` set to `k / sigma_SVD(k)`."""
    plain = make()
    plain.build(input_shape)
    plain.set_weights(layer.layer.get_weights())

    def run_at(k):
        sigma = reference_sigma(output_axis_matrix(k, output_axis))
        plain.kernel.assign(k / sigma)
        return plain

    return run_at


def test_inference_gradient_matches_finite_differences_for_fixed_u_v():
    # With u, v fixed (inference) the function is exactly L(W / (uᵀ M v)).
    layer = _float64_wrapper(
        keras.layers.Dense(3, dtype="float64"), (None, 4), warmup_iterations=1
    )
    rng = np.random.default_rng(0)
    x, r = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    kernel = to_numpy(layer.layer.kernel)

    def loss_at(k):
        layer.layer.kernel.assign(k)
        return float(_loss(layer(x, training=False), r))

    numeric = central_differences(loss_at, kernel)
    layer.layer.kernel.assign(kernel)
    analytic = _tape_gradient(layer, x, r, training=False)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize(
    "make, input_shape, output_axis",
    [
        (lambda: keras.layers.Dense(3, dtype="float64"), (5, 4), -1),
        (lambda: keras.layers.Conv2D(3, 2, dtype="float64"), (2, 4, 4, 2), -1),
        (lambda: keras.layers.Conv2DTranspose(2, 2, strides=2, dtype="float64"),
         (2, 3, 3, 3), -2),
    ],
    ids=["dense", "conv2d", "conv2d_transpose"],
)
@pytest.mark.parametrize("scale_input", [True, False],
                         ids=["scale_input", "scale_kernel"])
def test_training_gradient_matches_finite_differences_of_true_sn(
    make, input_shape, output_axis, scale_input, monkeypatch
):
    monkeypatch.setattr(
        keras_sn.SpectralNormalization, "_input_is_smaller",
        lambda *_: scale_input,
    )
    # Reference: L(layer run with K / sigma_SVD(K)), sigma from numpy SVD, so
    # it checks both the axis convention and the gradient through sigma.
    layer = _float64_wrapper(make(), input_shape, power_iterations=50)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(input_shape)
    r = rng.standard_normal(layer.compute_output_shape(input_shape))
    kernel = to_numpy(layer.layer.kernel)
    run_at = _true_sn_layer(make, layer, input_shape, output_axis)

    def loss_at(k):
        return float(_loss(run_at(k)(x), r))

    numeric = central_differences(loss_at, kernel)
    analytic = _tape_gradient(layer, x, r, training=True)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_grouped_conv_gradient_flows_only_through_the_largest_block():
    inner = keras.layers.Conv1D(4, 2, groups=2, use_bias=False, dtype="float64")
    layer = _float64_wrapper(inner, (2, 5, 4), power_iterations=50)
    kernel = to_numpy(layer.layer.kernel)
    kernel[..., 2:] *= 3.0  # the second group has the larger sigma
    layer.layer.kernel.assign(kernel)
    layer.reestimate(60)
    rng = np.random.default_rng(2)
    x, r = rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 4, 4))
    plain = keras.layers.Conv1D(4, 2, groups=2, use_bias=False, dtype="float64")
    plain.build((2, 5, 4))

    def loss_at(k):
        sigma = max(
            reference_sigma(output_axis_matrix(k[..., g * 2:(g + 1) * 2]))
            for g in range(2)
        )
        plain.kernel.assign(k / sigma)
        return float(_loss(plain(x), r))

    numeric = central_differences(loss_at, kernel)
    analytic = _tape_gradient(layer, x, r, training=True)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_training_gradient_equals_closed_form_of_eq_12():
    layer = _float64_wrapper(
        keras.layers.Dense(4, dtype="float64"), (None, 6), power_iterations=50
    )
    rng = np.random.default_rng(3)
    x, r = rng.standard_normal((7, 6)), rng.standard_normal((7, 4))
    k = to_numpy(layer.layer.kernel)
    left, singular, right = np.linalg.svd(k.T)  # M = Kᵀ = sigma u vᵀ + ...
    sigma, u, v = singular[0], left[:, 0], right[0]
    k_sn = k / sigma
    y = x @ k_sn + to_numpy(layer.layer.bias)
    g = x.T @ ((1.0 + y ** 2) * r)  # dL/dK_SN for L = sum((y + y³/3) * r)
    lam = np.sum(g * k_sn)  # the paper's lambda
    expected = (g - lam * np.outer(v, u)) / sigma
    analytic = _tape_gradient(layer, x, r, training=True)
    np.testing.assert_allclose(analytic, expected, rtol=1e-9, atol=1e-12)
    # ... and it differs from the gradient that ignores sigma (the built-in's).
    assert not np.allclose(analytic, g / sigma, rtol=1e-3)


class _MatrixLayer(keras.layers.Layer):
    """A custom layer: opts in with `weight_name`, so the kernel is replaced."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(3, input_shape[-1]), name="w")

    def call(self, x):
        return keras.ops.tanh(x) @ keras.ops.transpose(self.w)


def test_substituted_weight_gradient_matches_finite_differences_of_true_sn():
    layer = _float64_wrapper(
        _MatrixLayer(dtype="float64"), (4, 5), weight_name="w", axis=0,
        power_iterations=50,
    )
    rng = np.random.default_rng(4)
    x, r = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))

    def loss_at(w):
        w_sn = w / reference_sigma(w)
        y = np.tanh(x) @ w_sn.T
        return float(np.sum((y + y ** 3 / 3.0) * r))

    numeric = central_differences(loss_at, to_numpy(layer.layer.w))
    analytic = _tape_gradient(layer, x, r, training=True)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


@tensorflow_only  # nested tapes; the other backends nest differently
@pytest.mark.parametrize(
    "make, input_shape, output_axis",
    [
        (lambda: keras.layers.Dense(3, dtype="float64"), (5, 4), -1),
        (lambda: keras.layers.Conv2DTranspose(2, 2, strides=2, dtype="float64"),
         (2, 3, 3, 3), -2),
    ],
    ids=["dense", "conv2d_transpose"],
)
def test_gradient_penalty_gradient_matches_finite_differences_of_true_sn(
    make, input_shape, output_axis
):
    # WGAN-GP with SN differentiates the input gradient again: sigma's
    # (custom) gradient must itself be differentiable.
    import tensorflow as tf

    layer = _float64_wrapper(make(), input_shape, power_iterations=50)
    rng = np.random.default_rng(4)
    x = tf.constant(rng.standard_normal(input_shape))
    r = rng.standard_normal(layer.compute_output_shape(input_shape))
    kernel = to_numpy(layer.layer.kernel)
    run_at = _true_sn_layer(make, layer, input_shape, output_axis)

    def penalty(run):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = _loss(run(x), r)
        return tf.reduce_sum(tf.square(tape.gradient(loss, x)))

    def penalty_at(k):
        return float(penalty(run_at(k)))

    numeric = central_differences(penalty_at, kernel)
    with tf.GradientTape() as tape:
        value = penalty(lambda inputs: layer(inputs, training=True))
    analytic = to_numpy(tape.gradient(value, layer.layer.kernel))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
