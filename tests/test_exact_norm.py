"""`keras_sn.spectral_norm`: exact sigma of weights, layers and wrappers.

References: numpy SVD of the matrices in `references.py` (written from each
layer type's semantics) and the dense matrix of a convolution.
"""

import keras
import numpy as np
import pytest

import keras_sn
from backends import to_numpy
from references import LAYER_CASE_IDS
from references import LAYER_CASES
from references import output_axis_matrix
from references import reference_sigma

# float64 references and layers: x64 on JAX for these tests.
pytestmark = pytest.mark.float64


def test_known_answers():
    assert keras_sn.spectral_norm(4.0 * np.eye(3)) == pytest.approx(4.0)
    assert keras_sn.spectral_norm(np.diag([1.0, -5.0, 2.0])) == pytest.approx(
        5.0
    )
    assert keras_sn.spectral_norm(np.array([3.0, 4.0])) == pytest.approx(5.0)


def test_weight_matches_svd_along_the_given_axis():
    kernel = np.random.default_rng(0).standard_normal((3, 3, 4, 5))
    assert keras_sn.spectral_norm(kernel) == pytest.approx(
        reference_sigma(output_axis_matrix(kernel, -1)), rel=1e-12
    )
    assert keras_sn.spectral_norm(kernel, axis=-2) == pytest.approx(
        reference_sigma(output_axis_matrix(kernel, -2)), rel=1e-12
    )
    variable = keras.Variable(kernel.astype("float32"))
    assert keras_sn.spectral_norm(variable) == pytest.approx(
        reference_sigma(output_axis_matrix(kernel, -1)), rel=1e-6
    )


@pytest.mark.parametrize("case", LAYER_CASES, ids=LAYER_CASE_IDS)
def test_layer_matches_the_reference_matrices(case):
    layer = case.make()
    layer.build(case.input_shape)
    expected = np.prod(
        [reference_sigma(m) for m in case.matrices(layer).values()]
    )
    assert keras_sn.spectral_norm(layer) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("case", LAYER_CASES, ids=LAYER_CASE_IDS)
def test_wrapper_gives_the_exact_value_of_its_estimate(case):
    layer = keras_sn.SpectralNormalization(case.make())
    layer.build(case.input_shape)
    exact = keras_sn.spectral_norm(layer)
    assert exact == pytest.approx(keras_sn.spectral_norm(layer.layer))
    assert float(layer.sigma) == pytest.approx(exact, rel=1e-3)
    per_weight = len(layer.sigmas)
    assert keras_sn.spectral_norm(layer, normalized=True) == pytest.approx(
        1.0, rel=1e-3 * per_weight
    )


def _conv_dense_reference(kernel, input_shape, **conv_options):
    conv = keras.layers.Conv2D(kernel.shape[-1], kernel.shape[:2],
                               use_bias=False, dtype="float64",
                               **conv_options)
    conv.build((None,) + input_shape)
    conv.kernel.assign(kernel)
    n = int(np.prod(input_shape))
    columns = to_numpy(conv(np.eye(n).reshape((n,) + input_shape)))
    return reference_sigma(columns.reshape(n, -1))


def test_operator_method_on_a_layer_uses_its_build_input_shape():
    conv = keras.layers.Conv2D(3, 3, strides=2, padding="same")
    conv.build((None, 7, 6, 2))
    kernel = to_numpy(conv.kernel).astype(np.float64)
    expected = _conv_dense_reference(kernel, (7, 6, 2), strides=2,
                                     padding="same")
    assert keras_sn.spectral_norm(conv, method="operator") == pytest.approx(
        expected, rel=1e-9
    )
    other = _conv_dense_reference(kernel, (4, 4, 2), strides=2,
                                  padding="same")
    assert keras_sn.spectral_norm(
        conv, method="operator", input_shape=(4, 4, 2)
    ) == pytest.approx(other, rel=1e-9)


def test_operator_wrapper_defaults_to_its_method_and_input_size():
    wrapper = keras_sn.SpectralNormalization(
        keras.layers.Conv2D(3, 3, padding="same"), method="operator",
        target_norm=2.0,
    )
    wrapper.build((None, 6, 6, 2))
    kernel = to_numpy(wrapper.layer.kernel).astype(np.float64)
    expected = _conv_dense_reference(kernel, (6, 6, 2), padding="same")
    assert keras_sn.spectral_norm(wrapper) == pytest.approx(expected, rel=1e-9)
    assert keras_sn.spectral_norm(wrapper, normalized=True) == pytest.approx(
        2.0, rel=1e-3
    )
    assert keras_sn.spectral_norm(wrapper, method="reshape") == pytest.approx(
        reference_sigma(output_axis_matrix(kernel)), rel=1e-9
    )


def test_bad_method():
    with pytest.raises(ValueError, match=r"`method` must be None, 'reshape' "
                       r"or 'operator'. Received: method='svd'"):
        keras_sn.spectral_norm(np.eye(2), method="svd")


def test_operator_method_needs_a_layer():
    with pytest.raises(ValueError, match="needs the convolution layer"):
        keras_sn.spectral_norm(np.ones((3, 3, 2, 2)), method="operator")


def test_operator_method_on_a_dense_layer():
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    with pytest.raises(ValueError, match="use method='reshape'"):
        keras_sn.spectral_norm(dense, method="operator")


def test_operator_method_needs_an_input_shape():
    conv = keras.layers.Conv2D(2, 3)
    conv.build((None, None, None, 3))
    with pytest.raises(ValueError, match="needs the input's spatial size"):
        keras_sn.spectral_norm(conv, method="operator")


def test_unbuilt_layer():
    with pytest.raises(ValueError, match="needs a built layer"):
        keras_sn.spectral_norm(keras.layers.Dense(3))


def test_normalized_needs_a_wrapper():
    with pytest.raises(ValueError, match="`normalized=True` applies to"):
        keras_sn.spectral_norm(np.eye(2), normalized=True)


@pytest.mark.parametrize("weight", [None, "x", object(), [["a", 1.0]]],
                         ids=["none", "string", "object", "strings"])
def test_a_weight_that_is_not_numeric(weight):
    with pytest.raises(ValueError, match=r"takes a weight \(a numeric array"):
        keras_sn.spectral_norm(weight)


@pytest.mark.parametrize("axis", [3, -4, (0, 0), (0, -3)])
def test_a_weight_axis_out_of_range_or_repeated(axis):
    kernel = np.ones((2, 3, 4))
    with pytest.raises(ValueError, match=r"`axis` (is out of range|names "
                       r"the same kernel axis twice).*Received: axis="):
        keras_sn.spectral_norm(kernel, axis=axis)


def test_a_vector_has_one_axis_and_a_scalar_its_default_only():
    assert keras_sn.spectral_norm(np.array([3.0, 4.0]), axis=0) == 5.0
    assert keras_sn.spectral_norm(-2.0) == 2.0
    with pytest.raises(ValueError, match="out of range"):
        keras_sn.spectral_norm(np.array([3.0, 4.0]), axis=1)
    with pytest.raises(ValueError, match="out of range"):
        keras_sn.spectral_norm(-2.0, axis=1)


def test_axis_on_a_layer_overrides_the_table():
    conv = keras.layers.Conv2D(4, 2, dtype="float64")
    conv.build((None, 5, 5, 3))
    kernel = to_numpy(conv.kernel)
    assert keras_sn.spectral_norm(conv, axis=-2) == pytest.approx(
        reference_sigma(output_axis_matrix(kernel, -2)), rel=1e-12
    )
    # The default differs, so the override is not a no-op.
    assert keras_sn.spectral_norm(conv) == pytest.approx(
        reference_sigma(output_axis_matrix(kernel, -1)), rel=1e-12
    )
    with pytest.raises(ValueError, match="out of range"):
        keras_sn.spectral_norm(conv, axis=4)


def test_axis_with_a_wrapper_or_the_operator_method():
    conv = keras.layers.Conv2D(2, 3)
    conv.build((None, 6, 6, 1))
    with pytest.raises(ValueError, match="Leave `axis` out"):
        keras_sn.spectral_norm(conv, method="operator", axis=-1)
    wrapper = keras_sn.SpectralNormalization(keras.layers.Dense(2))
    wrapper.build((None, 3))
    with pytest.raises(ValueError, match="a wrapper reads its weights"):
        keras_sn.spectral_norm(wrapper, axis=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_weight_has_no_spectral_norm(bad):
    kernel = np.ones((3, 2))
    kernel[1, 0] = bad
    with pytest.raises(ValueError, match=r"non-finite entries.*1 of 6"):
        keras_sn.spectral_norm(kernel)
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    dense.kernel.assign(kernel)
    with pytest.raises(ValueError, match="The weight 'kernel' of"):
        keras_sn.spectral_norm(dense)
    conv = keras.layers.Conv1D(2, 1)
    conv.build((None, 4, 3))
    conv.kernel.assign(kernel[None])
    with pytest.raises(ValueError, match="The kernel of .*non-finite"):
        keras_sn.spectral_norm(conv, method="operator")
