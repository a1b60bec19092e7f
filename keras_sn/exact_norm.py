"""`spectral_norm`: the exact sigma of a weight, a layer or a wrapper.

For analysis and tests, not for training: it runs eagerly with numpy in
float64 (an SVD of the reshaped weight, or the exact operator norm of a
convolution from its dense Gram matrix; see `keras_sn.operator_norm`).
"""

import keras
import numpy as np
from keras import ops

from keras_sn import operator_norm
from keras_sn import power_iteration
from keras_sn import weights as weights_lib
from keras_sn.spectral_normalization import SpectralNormalization

METHODS = ("reshape", "operator")


def spectral_norm(layer_or_weight, method=None, input_shape=None, axis=None,
                  normalized=False):
    """The exact spectral norm sigma of a weight, a layer or a wrapper.

    - A weight (array, tensor or variable): the largest singular value of it
      read as a matrix whose rows are indexed by `axis` (default -1, the
      output units of Dense and Conv kernels), by numpy SVD.
    - A layer: its weights as in `keras_sn.weights.WEIGHT_TABLE` (grouped and
      depthwise kernels are block-diagonal: the largest block's sigma;
      `SeparableConv`: the product of both kernels'). With
      `method="operator"` (convolutions): the operator norm of the
      convolution at `input_shape` (by default the shape the layer was built
      with).
    - A `SpectralNormalization`: the wrapped layer's, with the wrapper's
      method, axis and weights, i.e. the exact value of what `wrapper.sigma`
      estimates; with `normalized=True`, that of the weights inference runs
      with (`wrapper.effective_weights()`), the layer's Lipschitz bound.

    The operator norm is exact (float64 eigendecomposition of the dense Gram
    matrix of the convolution) when the input or the output has at most
    `keras_sn.operator_norm.MAX_DENSE_DIM` (1024) entries per sample; above
    that it is computed by Golub-Kahan-Lanczos with full reorthogonalization
    until the relative residual of the estimate is below 1e-9 (at most 400
    steps): a lower bound of the true value, within about that tolerance of
    it (see `keras_sn.operator_norm.lanczos`).

    Args:
        layer_or_weight: A weight, a built `keras.layers.Layer` or a built
            `keras_sn.SpectralNormalization`.
        method: `"reshape"` or `"operator"`; `None` is the wrapper's method
            for a wrapper and `"reshape"` otherwise.
        input_shape: The input shape for `method="operator"` (with or without
            the batch axis); `None` uses the layer's build input shape.
        axis: For a bare weight, the axis (or axes) of the output units.
        normalized: For a wrapper: `True` gives the norm of its effective
            (normalized) weights instead of the raw ones.

    Returns:
        A Python float.

    Example:

    >>> import numpy as np, keras, keras_sn
    >>> keras_sn.spectral_norm(np.diag([3.0, 1.0]))
    3.0
    >>> conv = keras.layers.Conv2D(1, 2, padding="same", use_bias=False)
    >>> conv.build((None, 4, 4, 1))
    >>> _ = conv.kernel.assign(np.ones((2, 2, 1, 1)))
    >>> keras_sn.spectral_norm(conv)  # the kernel as a 1 x 4 matrix
    2.0
    >>> keras_sn.spectral_norm(conv, method="operator")  # as a conv: < 4
    3.5320...
    """
    if method is not None and method not in METHODS:
        raise ValueError(
            "`method` must be None, 'reshape' or 'operator'. "
            f"Received: method={method!r}"
        )
    if isinstance(layer_or_weight, SpectralNormalization):
        return _wrapper_norm(layer_or_weight, method, input_shape, normalized)
    if normalized:
        raise ValueError(
            "`normalized=True` applies to a `keras_sn.SpectralNormalization` "
            "(the norm of the weights it runs with). Received: "
            f"{type(layer_or_weight).__name__}"
        )
    if isinstance(layer_or_weight, keras.layers.Layer):
        return _layer_norm(layer_or_weight, method or "reshape", input_shape)
    if method == "operator":
        raise ValueError(
            "`method='operator'` needs the convolution layer (its strides, "
            "padding and input size define the operator), not a bare weight. "
            "Pass the layer."
        )
    return _weight_norm(layer_or_weight, -1 if axis is None else axis)


def to_float64_numpy(value):
    """A float64 numpy copy of an array, tensor or variable (any backend)."""
    if isinstance(value, keras.Variable):
        value = value.value
    return np.asarray(ops.convert_to_numpy(value), np.float64)


def _weight_norm(weight, axis):
    array = to_float64_numpy(weight)
    if array.ndim == 0:
        return abs(float(array))
    if array.ndim == 1:
        return float(np.linalg.norm(array))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    view = weights_lib.matrix_view(array.shape, axes)
    return _max_block_sigma(array, view)


def _max_block_sigma(kernel, view):
    matrices = np.asarray(
        ops.convert_to_numpy(
            power_iteration.to_matrix(ops.convert_to_tensor(kernel), view)
        ),
        np.float64,
    )
    return max(
        float(np.linalg.svd(m, compute_uv=False)[0]) for m in matrices
    )


def _build_input_shape(layer, input_shape):
    if input_shape is not None:
        return tuple(input_shape)
    config = layer.get_build_config() if layer.built else None
    shape = (config or {}).get("input_shape")
    if shape is None:
        raise ValueError(
            f"`method='operator'` needs the input shape of {type(layer).__name__}"
            f" '{layer.name}': pass `input_shape=`, or build the layer (e.g. "
            "in a model with a fixed input size) first."
        )
    return tuple(shape)


def _assert_built(layer):
    if not layer.built:
        raise ValueError(
            f"`spectral_norm` needs a built layer ({type(layer).__name__} "
            f"'{layer.name}' has no weights yet): call it on data or build it "
            "first."
        )


def operator_norm_of(layer, kernel, input_shape):
    """`OperatorNorm` of `kernel` used as `layer`'s convolution."""
    operator = operator_norm.conv_operator(
        layer, _build_input_shape(layer, input_shape)
    )
    return operator_norm.exact_operator_norm(kernel, operator)


def _layer_norm(layer, method, input_shape, weight_name=None, axis=None,
                values=None):
    _assert_built(layer)
    if method == "operator":
        operator_norm.check_supported(layer)
        kernel = layer.kernel if values is None else values["kernel"]
        return operator_norm_of(layer, kernel, input_shape).value
    result = 1.0
    for weight in weights_lib.resolve_weights(layer, weight_name, axis):
        value = weight.variable if values is None else values[weight.name]
        array = to_float64_numpy(value)
        result *= _max_block_sigma(array, weight.view)
    return result


def _wrapper_norm(wrapper, method, input_shape, normalized):
    if not wrapper.built:
        raise ValueError(
            "`spectral_norm` needs a built wrapper: call it on data or "
            "build it first."
        )
    method = method or wrapper.method
    if input_shape is None and method == "operator":
        input_shape = wrapper.get_build_config()["input_shape"]
    return _layer_norm(
        wrapper.layer,
        method,
        input_shape,
        weight_name=wrapper.weight_name,
        axis=wrapper.axis,
        values=wrapper.effective_weights() if normalized else None,
    )
