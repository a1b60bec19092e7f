"""Every layer type of the weight table against numpy references.

For each type: sigma against numpy SVD of the reference matrix, the output
against the same layer type run with W / sigma_SVD, the sigma of the effective
weight, the training-time power iteration, and the invariants (kernel never
written, u unit-norm per block).
"""

import keras
import numpy as np
import pytest

import keras_sn
from backends import to_numpy
from references import LAYER_CASE_IDS
from references import LAYER_CASES
from references import copy_with_weights
from references import depthwise_to_dense_kernel
from references import grouped_to_dense_kernel
from references import reference_sigma


def _wrapped(case, **options):
    layer = keras_sn.SpectralNormalization(case.make(), **options)
    layer.build(case.input_shape)
    return layer


def _inner_weights(wrapper):
    return [np.array(w) for w in wrapper.layer.get_weights()]


@pytest.mark.parametrize(
    "make, dense_kernel",
    [
        (lambda: keras.layers.Conv1D(6, 3, groups=3),
         lambda k: grouped_to_dense_kernel(k, 3)),
        (lambda: keras.layers.Conv2D(8, 3, groups=2),
         lambda k: grouped_to_dense_kernel(k, 2)),
        (lambda: keras.layers.DepthwiseConv1D(3, depth_multiplier=2),
         depthwise_to_dense_kernel),
        (lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=3),
         depthwise_to_dense_kernel),
    ],
    ids=["conv1d_groups3", "conv2d_groups2", "depthwise1d", "depthwise2d"],
)
def test_block_diagonal_reference_kernels_reproduce_the_layer(make, dense_kernel):
    # Validates the references: the ordinary convolution with the expanded
    # kernel computes exactly what the grouped/depthwise layer computes.
    layer = make()
    rank = 1 if "1D" in type(layer).__name__ else 2
    channels = 6 if getattr(layer, "groups", 1) == 3 else 4
    shape = (2,) + (7,) * rank + (channels,)
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    y = to_numpy(layer(x))
    kernel = dense_kernel(to_numpy(layer.kernel))
    conv = (keras.layers.Conv1D if rank == 1 else keras.layers.Conv2D)(
        kernel.shape[-1], kernel.shape[:-2], use_bias=False
    )
    conv.build(shape)
    conv.kernel.assign(kernel.astype("float32"))
    np.testing.assert_allclose(
        y - to_numpy(layer.bias), to_numpy(conv(x)), atol=1e-5
    )


@pytest.mark.parametrize("case", LAYER_CASES, ids=LAYER_CASE_IDS)
def test_sigma_matches_numpy_svd_after_warmup(case):
    layer = _wrapped(case, warmup_iterations=60)
    references = case.matrices(layer.layer)
    assert set(layer.sigmas) == set(references)
    for name, matrix in references.items():
        assert matrix.shape[0] != matrix.shape[1]  # non-square on purpose
        expected = reference_sigma(matrix)
        got = float(layer.sigmas[name])
        assert abs(got - expected) / expected < 1e-4, (name, got, expected)


@pytest.fixture(params=["scale_input", "scale_kernel"])
def path(request, monkeypatch):
    """Runs a test with each of the wrapper's two equivalent call paths."""
    force = request.param == "scale_input"
    monkeypatch.setattr(
        keras_sn.SpectralNormalization, "_input_is_smaller", lambda *_: force
    )
    return request.param


@pytest.mark.parametrize("case", LAYER_CASES, ids=LAYER_CASE_IDS)
def test_training_output_equals_layer_run_with_svd_normalized_weights(
    case, path
):
    layer = _wrapped(case, warmup_iterations=60)
    x = case.inputs()
    y = to_numpy(layer(x, training=True))
    weights = dict(zip(
        [w.path.split("/")[-1] for w in layer.layer.weights],
        _inner_weights(layer),
    ))
    for name, matrix in case.matrices(layer.layer).items():
        weights[name] = weights[name] / reference_sigma(matrix)
    reference = copy_with_weights(
        layer.layer,
        [weights[w.path.split("/")[-1]] for w in layer.layer.weights],
        case.input_shape,
    )
    np.testing.assert_allclose(y, to_numpy(reference(x)), rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("case", LAYER_CASES, ids=LAYER_CASE_IDS)
def test_effective_weight_has_unit_sigma_after_default_warmup(case):
    layer = _wrapped(case)  # warmup_iterations=15
    for name, sigma in layer.sigmas.items():
        kernel = to_numpy(getattr(layer.layer, name)).astype(np.float64)
        effective = kernel / float(sigma)
        twin = copy_with_weights(
            layer.layer, _inner_weights(layer), case.input_shape
        )
        getattr(twin, name).assign(effective.astype("float32"))
        matrix = case.matrices(twin)[name]
        assert abs(reference_sigma(matrix) - 1.0) < 1e-3, name


@pytest.mark.parametrize("case", LAYER_CASES, ids=LAYER_CASE_IDS)
def test_training_power_iteration_converges_to_svd_from_random_start(case):
    layer = _wrapped(case, warmup_iterations=0, power_iterations=400)
    layer(case.inputs(), training=True)
    for name, matrix in case.matrices(layer.layer).items():
        expected = reference_sigma(matrix)
        got = float(layer.sigmas[name])
        assert abs(got - expected) / expected < 1e-4, (name, got, expected)


@pytest.mark.parametrize("case", LAYER_CASES, ids=LAYER_CASE_IDS)
def test_wrapped_weights_bit_identical_and_u_unit_norm(case):
    layer = _wrapped(case)
    before = _inner_weights(layer)
    x = case.inputs()
    for training in (True, False, None, True):
        layer(x, training=training)
    for old, new in zip(before, _inner_weights(layer)):
        np.testing.assert_array_equal(old, new)
    for variable in layer.non_trainable_weights:
        norms = np.linalg.norm(to_numpy(variable), axis=-1)
        np.testing.assert_allclose(norms, 1.0, rtol=1e-6)
