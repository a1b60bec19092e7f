"""`keras_sn.report`: every wrapped layer's sigma and the product bound.

References: numpy SVD of the kernels and the dense matrix of each
convolution (built from the plain Keras layer on the identity basis).
"""

import math

import keras
import numpy as np
import pytest

import keras_sn
from backends import to_numpy
from references import output_axis_matrix
from references import reference_sigma

# float64 references and layers: x64 on JAX for these tests.
pytestmark = pytest.mark.float64

SN = keras_sn.SpectralNormalization


def _model():
    return keras.Sequential([
        keras.Input((6, 6, 2)),
        SN(keras.layers.Conv2D(3, 3, padding="same"), name="conv_reshape",
           target_norm=1.5),
        keras.layers.ReLU(),
        SN(keras.layers.Conv2D(4, 3, strides=2, padding="same"),
           name="conv_operator", method="operator", shrink_only=True),
        keras.layers.Flatten(),
        keras.layers.BatchNormalization(name="bn"),
        SN(keras.layers.Dense(2), name="dense", target_norm="initial"),
    ])


def _conv_operator_norm(layer, input_shape, kernel):
    twin = keras.layers.Conv2D(
        kernel.shape[-1], layer.kernel_size, strides=layer.strides,
        padding=layer.padding, use_bias=False, dtype="float64")
    twin.build((None,) + input_shape)
    twin.kernel.assign(kernel)
    n = int(np.prod(input_shape))
    columns = to_numpy(twin(np.eye(n).reshape((n,) + input_shape)))
    return reference_sigma(columns.reshape(n, -1))


def test_rows_match_svd_and_dense_operator_references():
    model = _model()
    model.layers[-1].layer.kernel.assign(model.layers[-1].layer.kernel * 3.0)
    result = keras_sn.report(model)
    rows = {row.name: row for row in result.rows}
    assert list(rows) == ["conv_reshape", "conv_operator", "dense"]
    for row, input_shape in [(rows["conv_reshape"], (6, 6, 2)),
                             (rows["conv_operator"], (6, 6, 3))]:
        wrapper = model.get_layer(row.name)
        kernel = to_numpy(wrapper.layer.kernel).astype(np.float64)
        reshape = reference_sigma(output_axis_matrix(kernel))
        operator = _conv_operator_norm(wrapper.layer, input_shape, kernel)
        effective = to_numpy(wrapper.effective_weights()["kernel"])
        assert row.sigma_estimate == pytest.approx(float(wrapper.sigma))
        expected_exact = operator if row.method == "operator" else reshape
        assert row.sigma_exact == pytest.approx(expected_exact, rel=1e-9)
        assert row.reshape_sigma == pytest.approx(
            reference_sigma(output_axis_matrix(effective)), rel=1e-6)
        assert row.operator_sigma == pytest.approx(
            _conv_operator_norm(wrapper.layer, input_shape, effective),
            rel=1e-6)
        assert row.operator_how == "dense"
        assert row.input_shape == (None,) + input_shape
    assert rows["conv_reshape"].reshape_sigma == pytest.approx(1.5, rel=1e-3)
    assert rows["conv_reshape"].operator_sigma > 1.5  # reshape underestimates
    dense = rows["dense"]
    kernel = to_numpy(model.get_layer("dense").layer.kernel)
    assert dense.sigma_exact == pytest.approx(
        reference_sigma(output_axis_matrix(kernel)), rel=1e-9)
    assert dense.operator_sigma == dense.reshape_sigma
    assert dense.operator_how == "svd"
    # The captured sigma is kept while the kernel grew 3x: scale ~ 1/3.
    assert dense.scale == pytest.approx(1 / 3, rel=1e-3)
    assert result.lipschitz_bound == pytest.approx(
        math.prod(row.operator_sigma for row in result.rows))
    assert result.reshape_bound == pytest.approx(
        math.prod(row.reshape_sigma for row in result.rows))
    assert result.unwrapped == ("bn",)


def test_printed_table():
    text = str(keras_sn.report(_model()))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["layer", "type", "method"]
    assert any(line.startswith("conv_operator  Conv2D") for line in lines)
    assert "Lipschitz bound (product of operator sigmas):" in text
    assert "Not covered (unwrapped layers with weights): bn" in text


def test_separable_conv_has_no_operator_bound():
    model = keras.Sequential([
        keras.Input((6, 6, 2)),
        SN(keras.layers.SeparableConv2D(2, 3)),
    ])
    result = keras_sn.report(model)
    assert result.rows[0].operator_sigma is None
    assert result.lipschitz_bound is None
    assert "n/a" in str(result)


def test_unbuilt_model():
    with pytest.raises(ValueError, match="needs a built Keras model"):
        keras_sn.report(keras.Sequential([SN(keras.layers.Dense(2))]))
