"""`keras_sn.WeightNormalization`: g * V / ||V|| per output unit.

References are numpy: the per-unit norm of each layer type's kernel written
from the layer's semantics (which kernel axes feed one output channel), the
layer run unwrapped with the numpy weight, float64 central differences for the
gradients, and numpy batch statistics for the data-dependent init.
"""

import json

import keras
import numpy as np
import pytest
from keras import ops
from keras.backend import standardize_dtype

import keras_sn
from backends import float64_only
from backends import gradients
from backends import tensorflow_only
from backends import to_numpy
from references import LAYER_CASE_IDS
from references import LAYER_CASES
from references import central_differences
from references import copy_with_weights

# Kernel axes summed over for one output unit's norm, per layer case, from the
# layer types' semantics (PyTorch's `weight_norm(dim=<output axis>)`):
# everything but the axes that index output channels. A grouped conv's output
# channel reads only its group's inputs, which are exactly its kernel column;
# a depthwise output channel (c, m) reads the spatial filter kernel[..., c, m].
REDUCE_AXES = {
    "dense": (0,),
    "einsum_dense_output_axes": (0,),  # kernel (c, d, e), units (d, e)
    "einsum_dense_contracted_axes": (0, 1),  # kernel (c, d, e), units e
    "einsum_dense_shared_axis": (1,),  # kernel (b, c, d), units (b, d)
    "conv1d": (0, 1),
    "conv2d": (0, 1, 2),
    "conv3d": (0, 1, 2, 3),
    "conv1d_grouped": (0, 1),
    "conv2d_grouped": (0, 1, 2),
    "conv1d_transpose": (0, 2),  # (k, filters, in): output axis -2
    "conv2d_transpose": (0, 1, 3),
    "conv3d_transpose": (0, 1, 2, 4),
    "depthwise_conv1d": (0,),
    "depthwise_conv2d": (0, 1),
    "separable_conv1d": {"depthwise_kernel": (0,), "pointwise_kernel": (0, 1)},
    "separable_conv2d": {
        "depthwise_kernel": (0, 1),
        "pointwise_kernel": (0, 1, 2),
    },
    "embedding": (1,),  # one unit per row (token id)
}


def _reduce_axes(case, name):
    axes = REDUCE_AXES[case.id]
    return axes[name] if isinstance(axes, dict) else axes


def _norms(kernel, axes):
    kernel = np.asarray(kernel, np.float64)
    return np.sqrt(np.sum(kernel**2, axis=axes, keepdims=True))


def reference_weight(kernel, g, axes):
    """g * V / ||V||, the norm over `axes`, g in the order of the other axes."""
    norms = _norms(kernel, axes)
    return np.asarray(kernel, np.float64) * np.reshape(g, norms.shape) / norms


def _normalized_names(case):
    axes = REDUCE_AXES[case.id]
    if isinstance(axes, dict):
        return list(axes)
    return ["embeddings" if case.integer_input else "kernel"]


def _g_variables(wrapper, names):
    # The first weight's g is `g`, the others' `<name>_g`.
    by_name = {v.path.split("/")[-1]: v for v in wrapper.weights}
    return [by_name["g" if i == 0 else f"{n}_g"] for i, n in enumerate(names)]


def _run_with_weights(case, wrapper, weights):
    """The unwrapped twin of `wrapper.layer` run with `weights` (by name)."""
    inner = wrapper.layer
    values = [
        weights.get(_attribute_name(inner, v), to_numpy(v))
        for v in inner.weights
    ]
    twin = copy_with_weights(inner, values, case.input_shape)
    return to_numpy(twin(case.inputs()))


def _attribute_name(layer, variable):
    for name in ("kernel", "bias", "embeddings", "depthwise_kernel",
                 "pointwise_kernel"):
        if getattr(layer, name, None) is variable:
            return name
    return None


@pytest.mark.parametrize("case", LAYER_CASES, ids=LAYER_CASE_IDS)
def test_output_equals_layer_run_with_numpy_g_v_over_norm(case):
    wrapper = keras_sn.WeightNormalization(case.make())
    wrapper.build(case.input_shape)
    names = _normalized_names(case)
    rng = np.random.default_rng(5)
    expected_weights = {}
    for name, g_var in zip(names, _g_variables(wrapper, names)):
        kernel = to_numpy(getattr(wrapper.layer, name))
        axes = _reduce_axes(case, name)
        # g starts at ||V||: one entry per output unit.
        np.testing.assert_allclose(
            to_numpy(g_var), _norms(kernel, axes).reshape(-1), rtol=1e-6
        )
        g = rng.uniform(0.5, 2.0, g_var.shape)
        g_var.assign(g)
        expected_weights[name] = reference_weight(kernel, g, axes)
    expected = _run_with_weights(case, wrapper, expected_weights)
    for training in (True, False):
        # float32: weights O(1), outputs sums of <= 60 products: ~1e-6.
        np.testing.assert_allclose(
            to_numpy(wrapper(case.inputs(), training=training)), expected,
            rtol=1e-5, atol=1e-5,
        )
    for name, value in wrapper.effective_weights().items():
        np.testing.assert_allclose(
            to_numpy(value), expected_weights[name], rtol=1e-5, atol=1e-7
        )


@pytest.mark.parametrize("case", LAYER_CASES, ids=LAYER_CASE_IDS)
def test_default_init_computes_what_the_unwrapped_layer_computes(case):
    inner = case.make()
    x = case.inputs()
    unwrapped = to_numpy(inner(x))
    wrapper = keras_sn.WeightNormalization(inner)
    kernels = [to_numpy(w) for w in inner.weights]
    # g = ||V|| in float32: W = V up to two roundings (rel. ~1e-7).
    np.testing.assert_allclose(
        to_numpy(wrapper(x, training=True)), unwrapped, rtol=1e-5, atol=1e-6
    )
    wrapper(x)
    for before, variable in zip(kernels, inner.weights):
        np.testing.assert_array_equal(to_numpy(variable), before)


# ---------------------------------------------------------------- gradients


def _loss(outputs, weights):
    # A polynomial: exact in float64 on every backend.
    weights = ops.convert_to_tensor(
        weights, dtype=standardize_dtype(outputs.dtype)
    )
    return ops.sum((outputs + outputs * outputs * outputs / 3.0) * weights)


GRADIENT_CASES = [
    ("dense", lambda: keras.layers.Dense(3, dtype="float64"), (5, 4), (0,)),
    ("conv2d", lambda: keras.layers.Conv2D(3, 2, dtype="float64"),
     (2, 4, 4, 2), (0, 1, 2)),
    ("conv2d_transpose",
     lambda: keras.layers.Conv2DTranspose(2, 2, strides=2, dtype="float64"),
     (2, 3, 3, 3), (0, 1, 3)),
    ("depthwise_conv1d",
     lambda: keras.layers.DepthwiseConv1D(2, depth_multiplier=2,
                                          dtype="float64"),
     (2, 5, 2), (0,)),
]


@float64_only
@pytest.mark.float64
@pytest.mark.parametrize("data_init", [False, True], ids=["plain", "data_init"])
@pytest.mark.parametrize(
    "make, input_shape, axes",
    [case[1:] for case in GRADIENT_CASES],
    ids=[case[0] for case in GRADIENT_CASES],
)
def test_gradients_for_v_and_g_match_float64_finite_differences(
    make, input_shape, axes, data_init
):
    wrapper = keras_sn.WeightNormalization(make(), data_init=data_init)
    wrapper.build(input_shape)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(input_shape)
    if data_init:
        # After the init, the offsets are constants: the gradient w.r.t. the
        # trainable g is that w.r.t. the g the layer runs with.
        wrapper(rng.standard_normal(input_shape), training=True)
    r = rng.standard_normal(wrapper.compute_output_shape(input_shape))
    inner = wrapper.layer
    kernel, g = to_numpy(inner.kernel), to_numpy(wrapper.g)
    g_run = to_numpy(wrapper.gains["kernel"])
    bias = to_numpy(wrapper.effective_weights().get("bias", inner.bias))
    plain = copy_with_weights(inner, [kernel, bias], input_shape)

    def loss_at(k, gain):
        plain.kernel.assign(reference_weight(k, gain, axes))
        return float(_loss(plain(x), r))

    numeric_v = central_differences(lambda k: loss_at(k, g_run), kernel)
    numeric_g = central_differences(
        lambda value: loss_at(kernel, value + (g_run - g)), g
    )
    analytic_v, analytic_g = gradients(
        lambda: _loss(wrapper(x, training=True), r), [inner.kernel, wrapper.g]
    )
    # Central differences, step 1e-6, float64: truncation ~1e-12 and
    # rounding ~1e-16 * |L| / 1e-6 ~ 1e-9 on gradients of O(1-10).
    np.testing.assert_allclose(analytic_v, numeric_v, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(analytic_g, numeric_g, rtol=1e-6, atol=1e-8)


def test_all_zero_direction_gives_finite_outputs_and_gradients():
    inner = keras.layers.Dense(3)
    wrapper = keras_sn.WeightNormalization(inner)
    wrapper.build((None, 4))
    inner.kernel.assign(np.zeros((4, 3)))
    x = np.random.default_rng(0).standard_normal((2, 4)).astype("float32")
    y = to_numpy(wrapper(x, training=True))
    np.testing.assert_array_equal(y, np.broadcast_to(to_numpy(inner.bias), y.shape))
    grads = gradients(
        lambda: ops.sum(wrapper(x, training=True) ** 2),
        [inner.kernel, wrapper.g],
    )
    for grad in grads:
        assert np.all(np.isfinite(grad))


# --------------------------------------------------------------- data init

DATA_INIT_CASES = [
    ("dense_relu", lambda: keras.layers.Dense(3, activation="relu"), (64, 5)),
    ("dense_no_bias", lambda: keras.layers.Dense(3, use_bias=False), (64, 5)),
    ("conv2d_grouped_tanh",
     lambda: keras.layers.Conv2D(4, 3, groups=2, activation="tanh"),
     (8, 6, 6, 4)),
    ("conv1d_transpose", lambda: keras.layers.Conv1DTranspose(3, 3), (8, 6, 2)),
    ("depthwise_conv2d",
     lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2),
     (8, 6, 6, 3)),
    ("einsum_dense",
     lambda: keras.layers.EinsumDense("abc,cde->abde", (None, 2, 3),
                                      bias_axes="de"),
     (16, 4, 5)),
]


def _batch(shape, seed=0):
    # Mean 3, std 2: far from what the init produces.
    rng = np.random.default_rng(seed)
    return rng.normal(3.0, 2.0, shape).astype("float32")


def _pre_activations(wrapper, x):
    """The wrapped layer run with the effective weights, no activation."""
    inner = wrapper.layer
    config = inner.get_config()
    if "activation" in config:
        config["activation"] = "linear"
    effective = wrapper.effective_weights()
    twin = inner.__class__.from_config(config)
    twin.build(x.shape)
    twin.set_weights([
        to_numpy(effective.get(_attribute_name(inner, v), v))
        for v in inner.weights
    ])
    return to_numpy(twin(x)).astype(np.float64)


def _per_unit(t, layer):
    if isinstance(layer, keras.layers.EinsumDense):
        return t.reshape(-1, t.shape[-2] * t.shape[-1])  # units (d, e)
    return t.reshape(-1, t.shape[-1])


@pytest.mark.parametrize(
    "make, shape", [c[1:] for c in DATA_INIT_CASES],
    ids=[c[0] for c in DATA_INIT_CASES],
)
def test_data_init_gives_first_batch_pre_activations_mean_0_std_1(make, shape):
    wrapper = keras_sn.WeightNormalization(make(), data_init=True)
    x = _batch(shape)
    y = to_numpy(wrapper(x, training=True))
    assert float(to_numpy(wrapper.initialized)) == 1.0
    t = _pre_activations(wrapper, x)
    units = _per_unit(t, wrapper.layer)
    # float32 statistics of O(1) values over >= 64 rows: ~1e-6.
    np.testing.assert_allclose(units.std(axis=0), 1.0, rtol=1e-4)
    if getattr(wrapper.layer, "bias", None) is not None:
        np.testing.assert_allclose(units.mean(axis=0), 0.0, atol=1e-4)
    else:
        assert np.all(np.abs(units.mean(axis=0)) > 0.1)  # no bias to shift
    # The call that initialized already ran with the new g and bias, and the
    # layer's activation is applied on top of the pre-activations.
    activation = keras.activations.get(
        wrapper.layer.get_config().get("activation", "linear")
    )
    np.testing.assert_allclose(
        y, to_numpy(activation(t.astype("float32"))), rtol=1e-5, atol=1e-5
    )


def _data_init_dense():
    wrapper = keras_sn.WeightNormalization(
        keras.layers.Dense(3, activation="relu"), data_init=True
    )
    wrapper.build((None, 5))
    return wrapper


def _state(wrapper):
    return [to_numpy(w).copy() for w in wrapper.weights]


def test_data_init_happens_once_and_kernel_stays_bit_identical():
    wrapper = _data_init_dense()
    before = _state(wrapper)
    wrapper(_batch((32, 5), seed=1), training=False)  # inference: no init
    wrapper(_batch((32, 5), seed=1))
    for old, new in zip(before, _state(wrapper)):
        np.testing.assert_array_equal(old, new)
    wrapper(_batch((32, 5), seed=2), training=True)
    after_first = _state(wrapper)
    assert float(to_numpy(wrapper.initialized)) == 1.0
    assert not np.allclose(to_numpy(wrapper.g_offset), 0.0)
    for seed in (3, 4):
        wrapper(_batch((32, 5), seed=seed) * 5.0, training=True)
    # Every weight (kernel, bias, g, offsets, flag) is bit-identical.
    for old, new in zip(after_first, _state(wrapper)):
        np.testing.assert_array_equal(old, new)


def test_untrainable_wrapper_does_not_initialize():
    wrapper = _data_init_dense()
    wrapper.trainable = False
    wrapper(_batch((8, 5)), training=True)
    assert float(to_numpy(wrapper.initialized)) == 0.0


def test_reloaded_model_is_not_initialized_again(tmp_path):
    model = keras.Sequential([keras.Input((5,)), _data_init_dense()])
    model(_batch((32, 5), seed=1), training=True)
    path = str(tmp_path / "wn.keras")
    model.save(path)
    loaded = keras.models.load_model(path)  # safe_mode, no custom_objects
    layer = loaded.layers[0]
    assert isinstance(layer, keras_sn.WeightNormalization)
    before = _state(layer)
    x = _batch((32, 5), seed=7) * 3.0
    loaded(x, training=True)
    for old, new in zip(before, _state(layer)):
        np.testing.assert_array_equal(old, new)
    np.testing.assert_array_equal(to_numpy(model(x)), to_numpy(loaded(x)))


@pytest.mark.parametrize("data_init", [False, True], ids=["plain", "data_init"])
def test_float32_master_weights_under_mixed_float16(data_init):
    keras.config.set_dtype_policy("mixed_float16")
    wrapper = keras_sn.WeightNormalization(
        keras.layers.Dense(4), data_init=data_init
    )
    wrapper.build((None, 6))
    kernel = to_numpy(wrapper.layer.kernel).copy()
    x = _batch((64, 6))
    y = wrapper(x, training=True)
    assert standardize_dtype(y.dtype) == "float16"
    for weight in wrapper.weights:
        assert standardize_dtype(weight.dtype) == "float32", weight.path
    np.testing.assert_array_equal(to_numpy(wrapper.layer.kernel), kernel)
    effective = {k: to_numpy(v) for k, v in wrapper.effective_weights().items()}
    assert effective["kernel"].dtype == np.float32
    bias = effective.get("bias", to_numpy(wrapper.layer.bias))
    expected = x.astype(np.float64) @ effective["kernel"] + bias
    # float16 compute: inputs, weights and outputs rounded to 11 bits.
    np.testing.assert_allclose(to_numpy(y), expected, rtol=5e-3, atol=2e-2)


# ----------------------------------------------------------- whole models


def _model(data_init=True):
    return keras.Sequential([
        keras.Input((6, 6, 2)),
        keras_sn.WeightNormalization(
            keras.layers.Conv2D(4, 3, activation="relu"), data_init=data_init
        ),
        keras.layers.Flatten(),
        keras_sn.WeightNormalization(keras.layers.Dense(3)),
    ])


def _data(n=32):
    rng = np.random.default_rng(0)
    return (rng.normal(1.0, 2.0, (n, 6, 6, 2)).astype("float32"),
            rng.standard_normal((n, 3)).astype("float32"))


def _offsets_after_direct_init(model, x):
    """The offsets a fresh copy of `model`'s first wrapper gets from `x`."""
    twin = _model()
    twin.set_weights(model.get_weights())
    twin.layers[0].reset()
    twin(x, training=True)
    return to_numpy(twin.layers[0].g_offset), to_numpy(twin.layers[0].bias_offset)


@pytest.mark.slow
@pytest.mark.parametrize("jit_compile", [True, False], ids=["xla", "no_xla"])
def test_fit_initializes_in_graph_once_and_trains_v_and_g(jit_compile):
    if jit_compile and keras.backend.backend() == "torch":
        # Keras' torch `jit_compile` is torch.compile, not XLA; it took 570 s
        # here (2 CPUs) and would dominate the budget.
        pytest.skip("torch.compile is not XLA and too slow for this tier")
    model = _model()
    x, y = _data()
    expected = _offsets_after_direct_init(model, x[:16])
    conv = model.layers[0]
    kernel, g = to_numpy(conv.layer.kernel).copy(), to_numpy(conv.g).copy()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse",
                  jit_compile=jit_compile)
    history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert float(to_numpy(conv.initialized)) == 1.0
    # Set from the first batch only (in the traced step), not re-set later.
    np.testing.assert_allclose(to_numpy(conv.g_offset), expected[0],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(conv.bias_offset), expected[1],
                               rtol=1e-5, atol=1e-6)
    assert not np.array_equal(to_numpy(conv.layer.kernel), kernel)
    assert not np.array_equal(to_numpy(conv.g), g)


def test_keras_file_round_trip_gives_equal_outputs(tmp_path):
    model = _model()
    x, _ = _data()
    model(x, training=True)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    for original, restored in zip(model.weights, loaded.weights):
        assert original.name == restored.name
        np.testing.assert_array_equal(to_numpy(original), to_numpy(restored))
    np.testing.assert_array_equal(to_numpy(model(x)), to_numpy(loaded(x)))


def test_config_round_trip_and_registered_name():
    layer = keras_sn.WeightNormalization(
        keras.layers.Conv2D(3, 2), data_init=True, weight_name="kernel",
        epsilon=1e-9, name="wn",
    )
    config = layer.get_config()
    for key, value in [("data_init", True), ("axis", None),
                       ("weight_name", "kernel"), ("epsilon", 1e-9)]:
        assert config[key] == value
    json.dumps(config)
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == "keras_sn>WeightNormalization"
    restored = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(serialized))
    )
    assert restored.get_config() == config


def test_strip_gives_equal_outputs_with_plain_layers():
    model = _model()
    x, _ = _data()
    model(x, training=True)
    model.layers[-1].g.assign(np.array([0.5, 2.0, 1.5]))
    plain = keras_sn.strip(model)
    assert [type(l).__name__ for l in plain.layers] == [
        "Conv2D", "Flatten", "Dense"]
    # Same float32 weights, one rounding of g * V / ||V||: ~1e-7 relative.
    np.testing.assert_allclose(to_numpy(plain(x)), to_numpy(model(x)),
                               rtol=1e-5, atol=1e-5)


def test_apply_with_weight_normalization_keeps_outputs():
    model = keras.Sequential([
        keras.Input((6, 6, 2)), keras.layers.Conv2D(4, 3),
        keras.layers.Flatten(), keras.layers.Dense(3)])
    wrapped = keras_sn.apply(model, wrapper=keras_sn.WeightNormalization)
    assert [type(l).__name__ for l in wrapped.layers] == [
        "WeightNormalization", "Flatten", "WeightNormalization"]
    x, _ = _data()
    np.testing.assert_allclose(to_numpy(wrapped(x)), to_numpy(model(x)),
                               rtol=1e-5, atol=1e-5)
    with_init = keras_sn.apply(model, wrapper=keras_sn.WeightNormalization,
                               data_init=True)
    assert [l.data_init for l in with_init.layers
            if isinstance(l, keras_sn.WeightNormalization)] == [True, True]
    with pytest.raises(ValueError, match=r"`wrapper` must be.*Received"):
        keras_sn.apply(model, wrapper=keras_sn.WeightNormalization(
            keras.layers.Dense(1)))


@tensorflow_only
@pytest.mark.slow
def test_mirrored_strategy_data_init_uses_global_batch_and_replicas_agree():
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest configures two logical CPUs"
    # Reductions through one device, as the other strategy tests: collective
    # ops keyed by instance would clash with an earlier strategy's in this
    # process.
    strategy = tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    with strategy.scope():
        model = _model()
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    x, y = _data()
    # Skewed halves: replica-local statistics would differ from global ones.
    x[8:16] *= 3.0
    expected = _offsets_after_direct_init(model, x[:16])
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    conv = model.layers[0]
    for variable in conv.weights:
        replicas = [v.numpy() for v in variable.value.values]
        assert len(replicas) == 2
        np.testing.assert_array_equal(replicas[0], replicas[1])
    np.testing.assert_allclose(conv.g_offset.numpy(), expected[0],
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(conv.bias_offset.numpy(), expected[1],
                               rtol=1e-4, atol=1e-6)


@tensorflow_only
@pytest.mark.slow
def test_saved_model_export_reloads_with_equal_outputs(tmp_path):
    import tensorflow as tf

    model = _model()
    x, _ = _data()
    model(x, training=True)
    model.export(str(tmp_path / "saved"))
    reloaded = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(
        np.asarray(reloaded.serve(tf.constant(x))), to_numpy(model(x)),
        rtol=1e-6, atol=1e-6,
    )


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("layer", ["dense", None, keras.layers.Dense],
                         ids=["string", "none", "class"])
def test_not_a_layer(layer):
    with pytest.raises(ValueError, match=r"must be a `keras.layers.Layer`.*"
                       r"WeightNormalization\(.*Received: layer="):
        keras_sn.WeightNormalization(layer)


@pytest.mark.parametrize("value", [0, -1e-3, float("nan"), "1e-12", None])
def test_epsilon_must_be_positive(value):
    with pytest.raises(ValueError, match=r"`epsilon` must be a positive float"
                       r".*Received: epsilon="):
        keras_sn.WeightNormalization(keras.layers.Dense(3), epsilon=value)


@pytest.mark.parametrize("value", [1, None, "yes"])
def test_data_init_must_be_bool(value):
    with pytest.raises(ValueError, match=r"`data_init` must be a bool.*"
                       r"Received: data_init="):
        keras_sn.WeightNormalization(keras.layers.Dense(3), data_init=value)


@pytest.mark.parametrize(
    "wrap", [keras_sn.WeightNormalization, keras_sn.SpectralNormalization],
    ids=["weight", "spectral"])
def test_wrapping_a_wrapper_again(wrap):
    inner = wrap(keras.layers.Dense(3))
    with pytest.raises(ValueError, match=f"already a `{wrap.__name__}`"):
        keras_sn.WeightNormalization(inner)


def test_bad_axis_and_weight_name():
    with pytest.raises(ValueError, match=r"`axis` must be None.*Received"):
        keras_sn.WeightNormalization(keras.layers.Dense(3), axis="a")
    with pytest.raises(ValueError, match=r"`weight_name` must be None.*"
                       r"Received"):
        keras_sn.WeightNormalization(keras.layers.Dense(3), weight_name=[])
    dense = keras.layers.Dense(3)
    dense.build((None, 4))
    with pytest.raises(ValueError, match=r"`axis` is out of range.*"
                       r"Received: axis=2"):
        keras_sn.WeightNormalization(dense, axis=2)


def test_unknown_weight_is_caught_at_build_with_nothing_half_built():
    wrapper = keras_sn.WeightNormalization(
        keras.layers.Dense(3), weight_name="nope")
    with pytest.raises(ValueError, match=r"no weight named 'nope'.*"
                       r"Received: weight_name='nope'"):
        wrapper.build((None, 4))
    assert not wrapper.built
    assert [w for w in wrapper.weights if "/g" in w.path] == []


def test_layer_without_a_matrix_weight():
    with pytest.raises(ValueError, match=r"does not know which weight of "
                       r"LayerNormalization.*`weight_name=`"):
        keras_sn.WeightNormalization(keras.layers.LayerNormalization()).build(
            (None, 4))


@pytest.mark.parametrize(
    "make", [lambda: keras.layers.Embedding(5, 3),
             lambda: keras.layers.SeparableConv2D(3, 2),
             lambda: keras.layers.Dense(3)],
    ids=["embedding", "separable", "dense_with_axis"])
def test_data_init_on_an_unsupported_layer(make):
    options = {"axis": 0} if "Dense" in type(make()).__name__ else {}
    with pytest.raises(ValueError, match=r"`data_init=True` sets.*"
                       r"Use data_init=False.*Received: layer="):
        keras_sn.WeightNormalization(make(), data_init=True, **options)


def test_data_init_with_a_partial_einsum_bias():
    layer = keras.layers.EinsumDense("abc,cde->abde", (None, 2, 3),
                                     bias_axes="e")
    wrapper = keras_sn.WeightNormalization(layer, data_init=True)
    with pytest.raises(ValueError, match=r"bias per output unit.*shape \(3,\)"):
        wrapper.build((None, 4, 5))


def test_embedding_has_one_g_per_row_and_axis_overrides_it():
    per_row = keras_sn.WeightNormalization(keras.layers.Embedding(7, 4))
    per_row.build((None, 3))
    assert tuple(per_row.g.shape) == (7,)
    per_dim = keras_sn.WeightNormalization(keras.layers.Embedding(7, 4),
                                           axis=-1)
    per_dim.build((None, 3))
    assert tuple(per_dim.g.shape) == (4,)
