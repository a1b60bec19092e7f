"""Behaviour of the wrapper in training and inference, state and edge cases."""

import keras
import numpy as np
import pytest
from keras.backend import standardize_dtype

import keras_sn
from backends import float64_only
from backends import gradients
from backends import to_numpy
from references import reference_sigma


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _dense(units=4, inputs=6, **options):
    layer = keras_sn.SpectralNormalization(keras.layers.Dense(units), **options)
    layer.build((None, inputs))
    return layer


def _state(layer):
    return [to_numpy(w) for w in layer.weights]


def _x(shape=(5, 6), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def test_training_call_runs_one_power_step_from_stored_u():
    layer = _dense()
    k = to_numpy(layer.layer.kernel).astype(np.float64)  # (d_in, d_out) = M^T
    u0 = to_numpy(layer.vector_u).astype(np.float64)
    layer(_x(), training=True)
    v_ref = _unit(u0 @ k.T)
    u_ref = _unit(v_ref @ k)
    np.testing.assert_allclose(to_numpy(layer.vector_v), v_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(layer.vector_u), u_ref, rtol=1e-5, atol=1e-6)


def test_power_iterations_steps_per_training_call():
    layer = _dense(warmup_iterations=0, power_iterations=3)
    k = to_numpy(layer.layer.kernel).astype(np.float64)
    u = to_numpy(layer.vector_u).astype(np.float64)
    layer(_x(), training=True)
    for _ in range(3):
        v = _unit(u @ k.T)
        u = _unit(v @ k)
    np.testing.assert_allclose(to_numpy(layer.vector_u), u, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("training", [False, None], ids=["false", "none"])
def test_inference_changes_no_state(training):
    layer = _dense()
    layer(_x(), training=True)
    before = _state(layer)
    for _ in range(3):
        layer(_x(), training=training)
    for old, new in zip(before, _state(layer)):
        np.testing.assert_array_equal(old, new)


def test_inference_equals_preceding_training_call_at_same_weights():
    layer = _dense(warmup_iterations=0)  # u far from converged: a real check
    x = _x()
    for _ in range(3):
        y_train = to_numpy(layer(x, training=True))
        np.testing.assert_allclose(
            to_numpy(layer(x, training=False)), y_train, rtol=1e-6
        )
        np.testing.assert_allclose(to_numpy(layer(x)), y_train, rtol=1e-6)


def test_inference_before_any_training_call_is_normalized():
    layer = _dense()
    x = _x()
    k = to_numpy(layer.layer.kernel).astype(np.float64)
    expected = x @ (k / reference_sigma(k)) + to_numpy(layer.layer.bias)
    np.testing.assert_allclose(to_numpy(layer(x)), expected, rtol=1e-4, atol=1e-5)


def test_training_changes_u_and_keeps_it_unit_norm():
    layer = _dense(warmup_iterations=0)
    u0 = to_numpy(layer.vector_u)
    layer(_x(), training=True)
    assert not np.allclose(layer.vector_u, u0)
    assert np.linalg.norm(layer.vector_u) == pytest.approx(1.0, rel=1e-6)
    assert np.linalg.norm(layer.vector_v) == pytest.approx(1.0, rel=1e-6)


def test_frozen_wrapper_does_not_update_state_in_training():
    layer = _dense(warmup_iterations=0)
    layer.trainable = False
    before = _state(layer)
    layer(_x(), training=True)
    for old, new in zip(before, _state(layer)):
        np.testing.assert_array_equal(old, new)


def test_sigma_property_is_u_m_v_and_changes_nothing():
    layer = _dense(warmup_iterations=2)
    before = _state(layer)
    k = to_numpy(layer.layer.kernel).astype(np.float64)
    u = to_numpy(layer.vector_u).astype(np.float64)[0]
    v = to_numpy(layer.vector_v).astype(np.float64)[0]
    assert float(layer.sigma) == pytest.approx(u @ k.T @ v, rel=1e-6)
    for old, new in zip(before, _state(layer)):
        np.testing.assert_array_equal(old, new)


def test_default_warmup_gives_accurate_sigma_at_first_call():
    # 15 Lanczos steps from a random start: how close they get depends on
    # the start (docs/lipschitz.md's table: median 5e-8, worst 4e-6 over 10
    # seeds for this shape on TensorFlow; an unlucky start on JAX gave
    # 1.6e-3). One power step from a random u is 25-50% low.
    errors = []
    for _ in range(5):
        layer = _dense(units=128, inputs=64)
        k = to_numpy(layer.layer.kernel)
        errors.append(abs(float(layer.sigma) / reference_sigma(k) - 1))
    assert max(errors) < 5e-3
    assert np.median(errors) < 1e-4


def test_reestimate_after_set_weights_tracks_new_weights():
    layer = _dense(units=20, inputs=30)
    rng = np.random.default_rng(5)
    pretrained = rng.standard_normal((30, 20)).astype("float32") * 3.0
    layer.layer.set_weights([pretrained, np.zeros(20, "float32")])
    layer.reestimate()
    assert float(layer.sigma) == pytest.approx(
        reference_sigma(pretrained), rel=1e-4
    )


def test_warmup_is_deterministic_under_keras_seed():
    keras.utils.set_random_seed(7)
    first = to_numpy(_dense(warmup_iterations=0).vector_u)
    keras.utils.set_random_seed(7)
    second = to_numpy(_dense(warmup_iterations=0).vector_u)
    np.testing.assert_array_equal(first, second)


def test_all_zero_kernel_gives_finite_outputs_and_recovers():
    layer = keras_sn.SpectralNormalization(
        keras.layers.Dense(4, kernel_initializer="zeros", bias_initializer="ones")
    )
    layer.build((None, 6))
    for training in (True, False, True):
        y = to_numpy(layer(_x(), training=training))
        np.testing.assert_array_equal(y, np.ones_like(y))
    np.testing.assert_allclose(np.linalg.norm(layer.vector_u), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(layer.vector_v), 1.0, rtol=1e-6)
    # Once the kernel is non-zero the iteration resumes from the kept vectors.
    kernel = np.random.default_rng(1).standard_normal((6, 4)).astype("float32")
    layer.layer.kernel.assign(kernel)
    for _ in range(200):
        layer(_x(), training=True)
    assert float(layer.sigma) == pytest.approx(reference_sigma(kernel), rel=1e-4)


def test_gradient_of_all_zero_kernel_is_finite():
    layer = keras_sn.SpectralNormalization(
        keras.layers.Dense(4, kernel_initializer="zeros")
    )
    layer.build((None, 6))
    grads = gradients(
        lambda: keras.ops.sum(layer(_x(), training=True)), layer.trainable_weights
    )
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_tiny_kernel_is_normalized_to_unit_sigma():
    kernel = np.random.default_rng(2).standard_normal((6, 4)) * 1e-8
    dense = keras.layers.Dense(4, use_bias=False)
    dense.build((None, 6))
    dense.kernel.assign(kernel.astype("float32"))
    layer = keras_sn.SpectralNormalization(dense)
    layer.build((None, 6))
    x = np.eye(6, dtype="float32")
    effective = to_numpy(layer(x, training=True)).astype(np.float64)  # W/sigma
    assert np.all(np.isfinite(effective))
    assert reference_sigma(effective) == pytest.approx(1.0, rel=1e-4)


@float64_only
@pytest.mark.float64
def test_float64_layer_computes_in_float64():
    layer = keras_sn.SpectralNormalization(
        keras.layers.Dense(5, dtype="float64"), warmup_iterations=60
    )
    layer.build((None, 7))
    assert standardize_dtype(layer.vector_u.dtype) == "float64"
    y = layer(np.ones((2, 7)), training=True)
    assert standardize_dtype(y.dtype) == "float64"
    k = to_numpy(layer.layer.kernel)
    assert float(layer.sigma) == pytest.approx(reference_sigma(k), rel=1e-12)


def test_embedding_on_integer_ids_returns_floats():
    layer = keras_sn.SpectralNormalization(keras.layers.Embedding(10, 3))
    ids = np.array([[1, 2, 3], [4, 5, 9]], dtype="int32")
    y = layer(ids, training=True)
    assert standardize_dtype(y.dtype) == "float32"
    table = to_numpy(layer.layer.embeddings).astype(np.float64)
    expected = table[ids] / reference_sigma(table)
    np.testing.assert_allclose(to_numpy(y), expected, rtol=1e-4, atol=1e-6)


def test_embedding_mask_passes_through():
    layer = keras_sn.SpectralNormalization(
        keras.layers.Embedding(10, 3, mask_zero=True)
    )
    ids = np.array([[1, 0, 3]])
    mask = layer.compute_mask(ids)
    np.testing.assert_array_equal(to_numpy(mask), [[True, False, True]])
    model = keras.Sequential([keras.Input((3,), dtype="int32"), layer,
                              keras.layers.LSTM(2)])
    assert tuple(model(ids).shape) == (1, 2)


def test_activity_regularizer_loss_of_wrapped_layer_is_kept():
    inner = keras.layers.Dense(3, activity_regularizer=keras.regularizers.L2(1.0))
    model = keras.Sequential(
        [keras.Input((4,)), keras_sn.SpectralNormalization(inner)]
    )
    x = _x((2, 4))
    model(x, training=True)
    assert len(model.losses) == 1
    # The reference: a plain Dense with the same regularizer and the weights
    # the wrapper ran with (how Keras scales the loss changed in 3.14).
    wrapper = model.layers[0]
    plain = keras.layers.Dense(
        3, activity_regularizer=keras.regularizers.L2(1.0))
    plain.build((None, 4))
    plain.set_weights([to_numpy(wrapper.effective_weights()["kernel"]),
                       to_numpy(inner.bias)])
    plain(x, training=True)
    assert float(to_numpy(model.losses[0])) == pytest.approx(
        float(to_numpy(plain.losses[0])), rel=1e-5)


class _Counter(keras.layers.Layer):
    """A custom layer with a matrix `w` stored (d_out, d_in) and own state."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(3, input_shape[-1]), name="w")
        self.calls = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="calls"
        )

    def call(self, x):
        self.calls.assign_add(1.0)
        return x @ keras.ops.transpose(self.w)


def test_custom_layer_opts_in_with_weight_name_and_axis():
    layer = keras_sn.SpectralNormalization(
        _Counter(), weight_name="w", axis=0, warmup_iterations=60
    )
    x = _x((2, 5))
    y = to_numpy(layer(x, training=True))
    w = to_numpy(layer.layer.w).astype(np.float64)
    assert layer.vector_u.shape == (1, 3)  # d_out = 3 from axis=0
    np.testing.assert_allclose(y, x @ (w / reference_sigma(w)).T, rtol=1e-4)
    # The wrapped layer's own state update survives the substitution scope.
    assert float(to_numpy(layer.layer.calls)) == 1.0
    layer(x)
    assert float(to_numpy(layer.layer.calls)) == 2.0


class _KernelLayer(keras.layers.Layer):
    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], 2), name="kernel")

    def call(self, x):
        return x @ self.kernel


def test_unknown_layer_with_matrix_kernel_uses_its_last_axis():
    layer = keras_sn.SpectralNormalization(_KernelLayer(), warmup_iterations=60)
    layer.build((None, 5))
    k = to_numpy(layer.layer.kernel)
    assert float(layer.sigma) == pytest.approx(reference_sigma(k), rel=1e-5)


def test_separable_conv_sigma_is_product_and_each_has_own_u():
    layer = keras_sn.SpectralNormalization(keras.layers.SeparableConv2D(4, 3))
    layer.build((None, 8, 8, 3))
    names = sorted(w.path.split("/")[-1] for w in layer.non_trainable_weights)
    assert names == [
        "pointwise_kernel_vector_u",
        "pointwise_kernel_vector_v",
        "vector_u",
        "vector_v",
    ]
    sigmas = layer.sigmas
    assert float(layer.sigma) == pytest.approx(
        float(sigmas["depthwise_kernel"]) * float(sigmas["pointwise_kernel"])
    )


def test_sequential_discriminator_summary_and_call():
    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras_sn.SpectralNormalization(keras.layers.Conv2D(8, 3, strides=2)),
        keras.layers.LeakyReLU(0.1),
        keras.layers.Flatten(),
        keras_sn.SpectralNormalization(keras.layers.Dense(1)),
    ])
    lines = []
    model.summary(print_fn=lines.append)
    assert any("spectral_normalization" in line for line in lines)
    assert tuple(model(np.zeros((2, 16, 16, 3)), training=True).shape) == (2, 1)


def test_effective_weights_are_what_inference_runs_with():
    layer = _dense(warmup_iterations=1)
    layer(_x(), training=True)
    before = _state(layer)
    effective = layer.effective_weights()
    assert list(effective) == ["kernel"]
    kernel = to_numpy(layer.layer.kernel).astype(np.float64)
    u = to_numpy(layer.vector_u).astype(np.float64)[0]
    v = to_numpy(layer.vector_v).astype(np.float64)[0]
    np.testing.assert_allclose(
        to_numpy(effective["kernel"]), kernel / (u @ kernel.T @ v), rtol=1e-6
    )
    x = _x()
    np.testing.assert_allclose(
        to_numpy(layer(x)),
        x @ to_numpy(effective["kernel"]) + to_numpy(layer.layer.bias),
        rtol=1e-5,
    )
    for old, new in zip(before, _state(layer)):
        np.testing.assert_array_equal(old, new)


class _SquaredDense(keras.layers.Dense):
    """Not linear in its input: the wrapper must not scale the input."""

    def call(self, inputs):
        return super().call(inputs * inputs)


def test_dense_subclass_that_transforms_its_input_is_still_exact():
    layer = keras_sn.SpectralNormalization(_SquaredDense(3), warmup_iterations=60)
    x = _x((4, 5))
    y = to_numpy(layer(x, training=True)).astype(np.float64)
    k = to_numpy(layer.layer.kernel).astype(np.float64)
    expected = (x.astype(np.float64) ** 2) @ (k / reference_sigma(k))
    np.testing.assert_allclose(y, expected + to_numpy(layer.layer.bias), rtol=1e-4)
