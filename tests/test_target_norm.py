"""`target_norm`, `shrink_only` and `target_norm="initial"`.

References: numpy SVD of the weight inference runs with, outputs of the plain
layer, and float64 finite differences for the gradient.
"""

import json

import keras
import numpy as np
import pytest
from keras import ops

import keras_sn
from backends import gradients
from backends import tensorflow_only
from backends import to_numpy
from references import output_axis_matrix
from references import reference_sigma
from references import central_differences


def _dense(units=4, inputs=6, kernel_sigma=None, **options):
    inner = keras.layers.Dense(units)
    inner.build((None, inputs))
    if kernel_sigma is not None:
        kernel = to_numpy(inner.kernel)
        inner.kernel.assign(kernel * kernel_sigma / reference_sigma(kernel))
    layer = keras_sn.SpectralNormalization(inner, **options)
    layer.build((None, inputs))
    return layer


def _effective_sigma(layer):
    return reference_sigma(
        output_axis_matrix(to_numpy(layer.effective_weights()["kernel"]))
    )


def _loss(outputs, weights):
    # A polynomial: exact in float64 on every backend (see test_gradient).
    weights = ops.cast(weights, outputs.dtype)
    return ops.sum((outputs + outputs * outputs * outputs / 3.0) * weights)


def _x(shape=(5, 6), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


@pytest.mark.parametrize("target", [0.5, 2.0, 7])
def test_target_norm_scales_sigma_to_the_target(target):
    layer = _dense(kernel_sigma=3.0, target_norm=target)
    np.testing.assert_allclose(_effective_sigma(layer), target, rtol=1e-4)
    x = _x()
    kernel = to_numpy(layer.layer.kernel)
    expected = x @ (kernel * target / 3.0) + to_numpy(layer.layer.bias)
    np.testing.assert_allclose(to_numpy(layer(x)), expected, rtol=1e-4, atol=1e-5)


def test_shrink_only_leaves_a_weight_below_the_target_unchanged():
    layer = _dense(kernel_sigma=0.5, shrink_only=True)
    np.testing.assert_array_equal(
        to_numpy(layer.effective_weights()["kernel"]),
        to_numpy(layer.layer.kernel),
    )
    x = _x()
    np.testing.assert_array_equal(to_numpy(layer(x, training=True)),
                                  to_numpy(layer.layer(x)))


@pytest.mark.parametrize("target", [1.0, 2.5])
def test_shrink_only_scales_a_weight_above_the_target_down_to_it(target):
    layer = _dense(kernel_sigma=4.0, shrink_only=True, target_norm=target)
    np.testing.assert_allclose(_effective_sigma(layer), target, rtol=1e-4)


def test_initial_captures_sigma_and_the_layer_runs_unchanged():
    layer = _dense(kernel_sigma=3.0, target_norm="initial")
    assert [w.name for w in layer.non_trainable_weights] == [
        "vector_u", "vector_v", "initial_sigma"
    ]
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(layer.initial_sigma)), 3.0,
                               rtol=1e-4)
    x = _x()
    # The capture is the estimate inference divides by: scale exactly 1.
    np.testing.assert_array_equal(
        to_numpy(layer.effective_weights()["kernel"]),
        to_numpy(layer.layer.kernel),
    )
    np.testing.assert_array_equal(to_numpy(layer(x)),
                                  to_numpy(layer.layer(x)))


@pytest.mark.parametrize(
    "shrink_only, factor, expected_sigma",
    [
        (False, 3.0, 2.0),  # sigma kept at the initial 2.0
        (False, 0.5, 2.0),  # ... also when the weight shrinks
        (True, 3.0, 2.0),  # never grows past the initial 2.0
        (True, 0.5, 1.0),  # ... but may shrink: left as it is
    ],
    ids=["grows_kept", "shrinks_kept", "grows_capped", "shrinks_free"],
)
def test_initial_constrains_a_changed_weight(shrink_only, factor,
                                             expected_sigma):
    layer = _dense(kernel_sigma=2.0, target_norm="initial",
                   shrink_only=shrink_only)
    layer.layer.kernel.assign(layer.layer.kernel * factor)  # "fine-tuning"
    for _ in range(20):  # power steps track the new weight
        layer(_x(), training=True)
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(layer.initial_sigma)), 2.0,
                               rtol=1e-4)
    np.testing.assert_allclose(_effective_sigma(layer), expected_sigma,
                               rtol=1e-3)


def test_reestimate_recaptures_the_initial_sigma():
    layer = _dense(kernel_sigma=2.0, target_norm="initial")
    layer.layer.kernel.assign(layer.layer.kernel * 3.0)
    layer.reestimate()
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(layer.initial_sigma)), 6.0,
                               rtol=1e-4)


def test_initial_sigma_is_restored_by_a_keras_file_not_recaptured(tmp_path):
    model = keras.Sequential([
        keras.Input((6,)),
        keras_sn.SpectralNormalization(keras.layers.Dense(4),
                                       target_norm="initial",
                                       shrink_only=True),
    ])
    wrapper = model.layers[0]
    captured = float(keras.ops.convert_to_numpy(wrapper.initial_sigma))
    wrapper.layer.kernel.assign(wrapper.layer.kernel * 5.0)  # after capture
    path = str(tmp_path / "initial.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.layers[0].target_norm == "initial"
    assert float(keras.ops.convert_to_numpy(loaded.layers[0].initial_sigma)) == captured
    x = _x()
    np.testing.assert_array_equal(to_numpy(model(x)), to_numpy(loaded(x)))


@pytest.mark.float64
def test_float64_layer_keeps_float64_initial_sigma():
    inner = keras.layers.Dense(3, dtype="float64")
    layer = keras_sn.SpectralNormalization(inner, target_norm="initial")
    layer.build((None, 4))
    assert layer.non_trainable_weights[-1].dtype == "float64"


def test_mixed_precision_target_norm():
    keras.config.set_dtype_policy("mixed_float16")
    layer = _dense(target_norm="initial", shrink_only=True)
    y = layer(_x(), training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert all(w.dtype == "float32" for w in layer.weights)


@pytest.mark.float64
@pytest.mark.parametrize(
    "options",
    [{"target_norm": 2.0}, {"target_norm": 0.5, "shrink_only": True},
     {"target_norm": "initial"}],
    ids=["target", "shrink_only_active", "initial"],
)
def test_training_gradient_matches_finite_differences(options):
    # Reference: L(K * target / sigma_SVD(K)) with the kernel's sigma > the
    # target, so shrink_only's min() picks target / sigma.
    inner = keras.layers.Dense(3, dtype="float64")
    inner.build((None, 4))
    layer = keras_sn.SpectralNormalization(
        inner, power_iterations=50, warmup_iterations=50, **options
    )
    layer.build((None, 4))
    target = (float(keras.ops.convert_to_numpy(layer.initial_sigma))
              if options["target_norm"] == "initial"
              else options["target_norm"])
    rng = np.random.default_rng(1)
    x, r = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    kernel = to_numpy(inner.kernel).copy()
    bias = to_numpy(inner.bias)
    kernel *= 2.0  # sigma moves away from the captured initial one
    inner.kernel.assign(kernel)
    assert reference_sigma(output_axis_matrix(kernel)) > target

    def loss_at(k):
        sigma = reference_sigma(output_axis_matrix(k))
        y = x @ (k * target / sigma) + bias
        return float(np.sum((y + y ** 3 / 3.0) * r))

    numeric = central_differences(loss_at, kernel)
    (analytic,) = gradients(
        lambda: _loss(layer(x, training=True), r), [inner.kernel]
    )
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_shrink_only_below_the_target_gives_the_plain_gradient():
    layer = _dense(kernel_sigma=0.5, shrink_only=True)
    x = _x()
    r = np.ones((5, 4), "float32")
    kernel = [layer.layer.kernel]
    np.testing.assert_allclose(
        gradients(lambda: _loss(layer(x, training=True), r), kernel)[0],
        gradients(lambda: _loss(layer.layer(x), r), kernel)[0],
        rtol=1e-6,
    )


def test_config_round_trip_of_the_new_arguments():
    layer = keras_sn.SpectralNormalization(
        keras.layers.Conv2D(3, 3), target_norm="initial", shrink_only=True,
        method="operator",
    )
    config = layer.get_config()
    assert (config["target_norm"], config["shrink_only"], config["method"]) == (
        "initial", True, "operator"
    )
    json.dumps(config)
    restored = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    )
    assert restored.get_config() == config
    default = keras_sn.SpectralNormalization(keras.layers.Dense(2))
    config = default.get_config()
    assert (config["target_norm"], config["shrink_only"], config["method"]) == (
        1.0, False, "reshape"
    )


@pytest.mark.parametrize(
    "value", [0, -1.0, float("nan"), float("inf"), "Initial", True, None,
              [1.0]],
)
def test_target_norm_must_be_positive_or_initial(value):
    with pytest.raises(
        ValueError,
        match=r"`target_norm` must be a positive, finite float.*or 'initial'"
              r".*Received: target_norm=",
    ):
        keras_sn.SpectralNormalization(keras.layers.Dense(3),
                                       target_norm=value)


@pytest.mark.parametrize("value", [1, "yes", None])
def test_shrink_only_must_be_a_bool(value):
    with pytest.raises(ValueError,
                       match=r"`shrink_only` must be a bool.*Received: "):
        keras_sn.SpectralNormalization(keras.layers.Dense(3),
                                       shrink_only=value)


@pytest.mark.parametrize("value", ["Operator", "svd", None, 1])
def test_method_must_be_reshape_or_operator(value):
    with pytest.raises(
        ValueError,
        match=r"`method` must be 'reshape'.*or 'operator'.*Received: method=",
    ):
        keras_sn.SpectralNormalization(keras.layers.Dense(3), method=value)


def _traced_op_types(**options):
    import tensorflow as tf

    layer = keras_sn.SpectralNormalization(keras.layers.Dense(3), **options)
    layer.build((None, 4))
    function = tf.function(lambda x: layer(x, training=True))
    graph = function.get_concrete_function(tf.TensorSpec((2, 4))).graph
    return sorted(op.type for op in graph.get_operations())


@tensorflow_only
def test_the_defaults_trace_the_plain_reciprocal_and_no_extra_op():
    # target_norm=1.0, shrink_only=False branch in Python: W * 1/sigma.
    default = _traced_op_types()
    explicit = _traced_op_types(target_norm=1.0, shrink_only=False,
                                method="reshape")
    assert default == explicit
    assert "Reciprocal" in default
    assert "RealDiv" not in default and "Minimum" not in default
    assert "Minimum" in _traced_op_types(shrink_only=True)
    assert "RealDiv" in _traced_op_types(target_norm=2.0)
