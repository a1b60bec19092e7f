"""`method="operator"`: power iteration through the convolution itself.

The reference is the dense matrix of the convolution: a float64 copy of the
plain Keras layer (no bias, no activation) applied to every basis vector of
its input, whose largest singular value numpy's SVD gives. None of it uses
keras_sn code.
"""

import keras
import numpy as np
import pytest
from keras import ops

import keras_sn
from backends import gradients
from backends import tensorflow_only
from backends import to_numpy
from references import central_differences
from keras_sn._src import conv_operator
from keras_sn._src import spectral_norm as analysis

# float64 references and layers: x64 on JAX for these tests.
pytestmark = pytest.mark.float64


# The grid: Conv1D/2D and Conv2DTranspose, 'same' and 'valid',
# strides 1 and 2; then the other supported layers and options.
GRID = {
    f"{name}_{padding}_s{strides}": (
        lambda make=make, padding=padding, strides=strides: make(
            padding=padding, strides=strides
        ),
        shape,
    )
    for name, make, shape in [
        ("conv1d", lambda **kw: keras.layers.Conv1D(3, 3, **kw), (9, 2)),
        ("conv2d", lambda **kw: keras.layers.Conv2D(3, 3, **kw), (6, 7, 2)),
        ("conv2d_k4", lambda **kw: keras.layers.Conv2D(2, 4, **kw), (8, 8, 2)),
        ("conv2d_transpose",
         lambda **kw: keras.layers.Conv2DTranspose(2, 3, **kw), (4, 3, 3)),
    ]
    for padding in ["same", "valid"]
    for strides in [1, 2]
}
GRID.update({
    "conv1d_causal_dilated": (
        lambda: keras.layers.Conv1D(3, 3, padding="causal", dilation_rate=2),
        (10, 2),
    ),
    "conv2d_dilated": (
        lambda: keras.layers.Conv2D(2, 3, padding="same", dilation_rate=2),
        (7, 6, 2),
    ),
    "conv2d_grouped": (
        lambda: keras.layers.Conv2D(4, 3, groups=2, padding="same"),
        (5, 5, 4),
    ),
    "conv2d_channels_first": (
        lambda: keras.layers.Conv2D(
            3, 3, strides=2, padding="same", data_format="channels_first"
        ),
        (2, 7, 6),
    ),
    "conv3d_s2": (
        lambda: keras.layers.Conv3D(2, 2, strides=2, padding="same"),
        (3, 4, 4, 2),
    ),
    "conv1d_transpose_output_padding": (
        lambda: keras.layers.Conv1DTranspose(
            2, 3, strides=2, output_padding=1
        ),
        (5, 3),
    ),
    "conv3d_transpose": (
        lambda: keras.layers.Conv3DTranspose(2, 2, strides=2, padding="same"),
        (2, 3, 2, 2),
    ),
    "depthwise_conv2d": (
        lambda: keras.layers.DepthwiseConv2D(
            3, depth_multiplier=2, padding="same"
        ),
        (5, 5, 3),
    ),
    "depthwise_conv1d_s2": (
        lambda: keras.layers.DepthwiseConv1D(3, strides=2),
        (9, 3),
    ),
})
IDS = sorted(GRID)


def _dense_matrix(layer, input_shape):
    """The float64 matrix of `layer`'s linear map (bias and activation off)."""
    config = layer.get_config()
    config.update(use_bias=False, activation=None, dtype="float64")
    channels_first = config.get("data_format") == "channels_first"
    if channels_first:
        # TensorFlow has no float64 NCHW conv on CPU: use the channels_last
        # layer on the transposed basis (same map, coordinates permuted).
        config["data_format"] = "channels_last"
    twin = layer.__class__.from_config(config)
    n = int(np.prod(input_shape))
    basis = np.eye(n).reshape((n,) + input_shape)
    if channels_first:
        basis = np.moveaxis(basis, 1, -1)
    twin.build((None,) + basis.shape[1:])
    twin.set_weights([np.asarray(layer.get_weights()[0], np.float64)])
    outputs = to_numpy(twin(basis)).astype(np.float64)
    if channels_first:
        outputs = np.moveaxis(outputs, -1, 1)
    return outputs.reshape(n, -1).T  # (output size, input size)


def _reference_norm(layer, input_shape):
    matrix = _dense_matrix(layer, input_shape)
    return float(np.linalg.svd(matrix, compute_uv=False)[0])


def _wrapped(case_id, **options):
    make, input_shape = GRID[case_id]
    layer = keras_sn.SpectralNormalization(make(), method="operator",
                                           **options)
    layer.build((None,) + input_shape)
    return layer, input_shape


def _operator(layer):
    return layer._normalized[0].operator


@pytest.mark.parametrize("case_id", IDS)
def test_adjoint_identity(case_id):
    # <A x, y> = <x, Aᵀ y> in float64, for random x and y.
    layer, _ = _wrapped(case_id)
    operator = _operator(layer)
    kernel = conv_operator.dense_kernel(
        keras.ops.cast(layer.layer.kernel, "float64"), operator
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2,) + operator.input_shape)
    y = rng.standard_normal((2,) + operator.output_shape)
    ax = to_numpy(conv_operator.forward(kernel, x, operator))
    aty = to_numpy(conv_operator.adjoint(kernel, y, operator))
    assert ax.shape == y.shape and aty.shape == x.shape
    np.testing.assert_allclose(np.sum(ax * y), np.sum(x * aty), rtol=1e-10)


@pytest.mark.parametrize("case_id", IDS)
def test_forward_is_the_layers_convolution(case_id):
    layer, input_shape = _wrapped(case_id)
    operator = _operator(layer)
    x = np.random.default_rng(1).standard_normal((2,) + input_shape)
    x = x.astype("float32")
    kernel = conv_operator.dense_kernel(layer.layer.kernel, operator)
    bias = to_numpy(layer.layer.bias)  # zeros at init, but be exact
    expected = to_numpy(layer.layer(x)) - (
        bias if operator.data_format == "channels_last"
        else bias.reshape((-1,) + (1,) * operator.rank)
    )
    np.testing.assert_allclose(
        to_numpy(conv_operator.forward(kernel, x, operator)), expected,
        rtol=1e-5, atol=1e-5,
    )


@pytest.mark.parametrize("case_id", IDS)
def test_sigma_after_warm_up_matches_the_dense_operator_norm(case_id):
    layer, input_shape = _wrapped(case_id)
    reference = _reference_norm(layer.layer, input_shape)
    assert abs(float(layer.sigma) / reference - 1) < 1e-3
    # ... and it is the operator's, not the reshaped kernel's. Where the
    # patches do not overlap (kernel <= strides) the operator is block
    # diagonal, one block per patch: the reshaped kernel for a convolution,
    # and for a transposed one the kernel read as (k^d * c_out) x c_in.
    reshaped = keras_sn.spectral_norm(layer.layer)
    inner = layer.layer
    if all(k <= s for k, s in zip(inner.kernel_size, inner.strides)):
        kernel = to_numpy(inner.kernel)
        if isinstance(inner, keras.layers.Conv3DTranspose):
            block = kernel.reshape(-1, kernel.shape[-1])
            np.testing.assert_allclose(
                np.linalg.svd(block, compute_uv=False)[0], reference,
                rtol=1e-6)
            assert abs(reshaped / reference - 1) > 1e-3
        else:
            np.testing.assert_allclose(reshaped, reference, rtol=1e-9)
    else:
        assert abs(reshaped / reference - 1) > 1e-3


@pytest.mark.parametrize("case_id", IDS)
def test_exact_operator_norm_matches_the_dense_reference(case_id):
    layer, input_shape = _wrapped(case_id)
    reference = _reference_norm(layer.layer, input_shape)
    exact = keras_sn.spectral_norm(
        layer.layer, method="operator", input_shape=input_shape
    )
    np.testing.assert_allclose(exact, reference, rtol=1e-9)
    lanczos = analysis.exact_operator_norm(
        layer.layer.kernel, _operator(layer), max_dense_dim=0
    )
    assert lanczos.how == "lanczos"
    np.testing.assert_allclose(lanczos.value, reference, rtol=1e-7)


def test_the_operator_is_built_at_the_input_size():
    # The operator norm grows with the input size; each wrapper uses its own.
    small, _ = _wrapped("conv2d_same_s1")
    large = keras_sn.SpectralNormalization(
        keras.layers.Conv2D(3, 3, padding="same"), method="operator"
    )
    large.build((None, 12, 12, 2))
    large.layer.set_weights(small.layer.get_weights())
    large.reestimate()
    assert tuple(large.vector_u.shape) == (1, 12, 12, 3)
    assert tuple(large.vector_v.shape) == (1, 12, 12, 2)
    reference = _reference_norm(large.layer, (12, 12, 2))
    np.testing.assert_allclose(float(large.sigma), reference, rtol=1e-3)
    assert reference > float(small.sigma) * (1 + 1e-3)


def test_training_step_is_a_power_step_through_the_conv():
    layer, input_shape = _wrapped("conv2d_same_s2", warmup_iterations=0)
    operator = _operator(layer)
    kernel = to_numpy(layer.layer.kernel).astype(np.float64)
    u0 = to_numpy(layer.vector_u).astype(np.float64)
    matrix = _dense_matrix(layer.layer, input_shape)  # output x input
    x = np.zeros((1,) + input_shape, "float32")
    layer(x, training=True)
    v = matrix.T @ u0.reshape(-1)
    v /= np.linalg.norm(v)
    u = matrix @ v
    u /= np.linalg.norm(u)
    np.testing.assert_allclose(
        to_numpy(layer.vector_v).reshape(-1), v, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        to_numpy(layer.vector_u).reshape(-1), u, rtol=1e-4, atol=1e-5)
    assert operator.output_shape == tuple(layer.vector_u.shape[1:])
    np.testing.assert_array_equal(to_numpy(layer.layer.kernel), kernel)  # not written


def test_normalized_layer_has_operator_norm_one():
    layer, input_shape = _wrapped("conv2d_valid_s2")
    effective = to_numpy(layer.effective_weights()["kernel"])
    twin = keras.layers.Conv2D(3, 3, strides=2, padding="valid")
    twin.build((None,) + input_shape)
    twin.set_weights([np.asarray(effective), np.zeros(3)])
    np.testing.assert_allclose(
        _reference_norm(twin, input_shape), 1.0, rtol=1e-3
    )


def test_inference_equals_the_last_training_call_and_changes_no_state():
    layer, input_shape = _wrapped("conv2d_same_s1", warmup_iterations=0)
    x = np.random.default_rng(2).standard_normal((3,) + input_shape)
    x = x.astype("float32")
    for _ in range(2):
        y = to_numpy(layer(x, training=True))
        state = [to_numpy(w).copy() for w in layer.weights]
        np.testing.assert_allclose(to_numpy(layer(x, training=False)), y,
                                   rtol=1e-6)
        for old, new in zip(state, layer.weights):
            np.testing.assert_array_equal(old, to_numpy(new))
    norm = np.linalg.norm(to_numpy(layer.vector_u))
    np.testing.assert_allclose(norm, 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    "make, input_shape",
    [
        (lambda: keras.layers.Conv1D(2, 3, strides=2, padding="same",
                                     dtype="float64"), (7, 2)),
        (lambda: keras.layers.Conv2DTranspose(2, 2, strides=2,
                                              dtype="float64"), (2, 2, 2)),
    ],
    ids=["conv1d", "conv2d_transpose"],
)
def test_training_gradient_matches_finite_differences_of_true_operator_sn(
    make, input_shape
):
    # Reference: L(layer run with K / ||A(K)||), the operator norm from the
    # dense matrix; the wrapper's power iteration is converged (u, v fixed
    # at the top singular vectors, as in the paper's gradient).
    layer = keras_sn.SpectralNormalization(
        make(), method="operator", power_iterations=60, warmup_iterations=30
    )
    layer.build((None,) + input_shape)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2,) + input_shape)
    r = rng.standard_normal(layer.compute_output_shape((2,) + input_shape))
    plain = make()
    plain.build((None,) + input_shape)
    plain.set_weights(layer.layer.get_weights())
    kernel = to_numpy(layer.layer.kernel).copy()

    def loss(outputs):  # a polynomial: exact in float64 on every backend
        weights = ops.cast(r, outputs.dtype)
        return ops.sum((outputs + outputs * outputs * outputs / 3.0) * weights)

    def loss_at(k):
        plain.kernel.assign(k)
        sigma = _reference_norm(plain, input_shape)
        plain.kernel.assign(k / sigma)
        return float(loss(plain(x)))

    numeric = central_differences(loss_at, kernel)
    (analytic,) = gradients(lambda: loss(layer(x, training=True)),
                            [layer.layer.kernel])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_fit_with_xla_and_keras_file_round_trip(tmp_path):
    model = keras.Sequential([
        keras.Input((8, 8, 2)),
        keras_sn.SpectralNormalization(
            keras.layers.Conv2D(3, 3, strides=2, padding="same"),
            method="operator",
        ),
        keras.layers.LeakyReLU(0.1),
        keras_sn.SpectralNormalization(
            keras.layers.Conv2DTranspose(2, 3, strides=2, padding="same"),
            method="operator", target_norm=0.5,
        ),
        keras.layers.Flatten(),
        keras_sn.SpectralNormalization(keras.layers.Dense(1)),
    ])
    # torch has no XLA: its `jit_compile=True` is torch.compile, for which
    # tests/test_torch_compile.py trains the operator method too.
    model.compile(optimizer="adam", loss="mse",
                  jit_compile=keras.backend.backend() != "torch")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((8, 8, 8, 2)).astype("float32")
    y = rng.standard_normal((8, 1)).astype("float32")
    u = to_numpy(model.layers[0].vector_u).copy()
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert not np.array_equal(to_numpy(model.layers[0].vector_u), u)
    path = str(tmp_path / "operator.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.layers[0].method == "operator"
    for original, restored in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(to_numpy(original), to_numpy(restored))
    np.testing.assert_array_equal(model.predict(x, verbose=0),
                                  loaded.predict(x, verbose=0))


def test_mixed_precision_keeps_float32_state():
    keras.config.set_dtype_policy("mixed_float16")
    layer, input_shape = _wrapped("conv2d_same_s2")
    y = layer(np.ones((1,) + input_shape, "float32"), training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert layer.vector_u.dtype == layer.vector_v.dtype == "float32"


def test_unknown_spatial_size_at_build_says_how_to_fix():
    layer = keras_sn.SpectralNormalization(
        keras.layers.Conv2D(3, 3), method="operator"
    )
    with pytest.raises(
        ValueError,
        match=r"needs the input's spatial size.*Received: input_shape=\(None, "
              r"None, None, 3\).*keras.Input\(\(32, 32, 3\)\)",
    ):
        layer.build((None, None, None, 3))
    assert not layer.built
    assert layer.non_trainable_weights == []


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: keras.layers.Dense(3),
         r"needs one of: Conv1D/2D/3D.*use method='reshape'.*"
         r"Received: layer=Dense 'dense"),
        (lambda: keras.layers.Embedding(5, 3),
         r"Received: layer=Embedding"),
        (lambda: keras.layers.SeparableConv2D(3, 3),
         r"does not support SeparableConv layers.*Received: layer="
         r"SeparableConv2D"),
    ],
    ids=["dense", "embedding", "separable"],
)
def test_operator_method_rejects_non_convolutions(make, match):
    with pytest.raises(ValueError, match=match):
        keras_sn.SpectralNormalization(make(), method="operator")


@pytest.mark.parametrize(
    "options",
    [{"axis": -2}, {"weight_name": "bias"}],
    ids=["axis", "weight_name"],
)
def test_operator_method_rejects_axis_and_other_weights(options):
    with pytest.raises(ValueError, match=r"has no `axis` or other weight"):
        keras_sn.SpectralNormalization(
            keras.layers.Conv2D(3, 3), method="operator", **options
        )


@pytest.mark.slow
@tensorflow_only
def test_mirrored_strategy_keeps_feature_map_state_identical_on_replicas():
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest configures two logical CPUs"

    def model():
        return keras.Sequential([
            keras.Input((6, 6, 2)),
            keras_sn.SpectralNormalization(
                keras.layers.Conv2D(3, 3, strides=2, padding="same"),
                method="operator", target_norm="initial", shrink_only=True),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ])

    # Not the default collective all-reduce: its instance keys collide with
    # those of another MirroredStrategy made earlier in the same process.
    strategy = tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    with strategy.scope():
        mirrored = model()
        mirrored.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    single = model()
    single.set_weights(mirrored.get_weights())
    single.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 6, 6, 2)).astype("float32")
    y = rng.standard_normal((16, 2)).astype("float32")
    for m in (mirrored, single):
        m.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for dist_var, single_var in zip(mirrored.layers[0].weights,
                                    single.layers[0].weights):
        replicas = [to_numpy(v) for v in dist_var.value.values]
        np.testing.assert_array_equal(replicas[0], replicas[1])
        np.testing.assert_allclose(replicas[0], to_numpy(single_var),
                                   rtol=1e-4, atol=1e-5)
