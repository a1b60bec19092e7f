"""`spectral_norm`: the exact sigma of a weight, a layer or a wrapper.

For analysis and tests, not for training: it runs eagerly with numpy in
float64 (an SVD of the reshaped weight, or the exact operator norm of a
convolution from its dense Gram matrix; see `exact_operator_norm`).
"""

import dataclasses
import functools
import math

import keras
import numpy as np
from keras import ops

from keras_sn import _compat
from keras_sn import weights as weights_lib
from keras_sn._src import arguments
from keras_sn._src import conv_operator
from keras_sn._src import lanczos
from keras_sn._src import power_iteration

METHODS = ("reshape", "operator")


def _in_float64(function):
    # Eager analysis is float64 on every backend (JAX: x64 for the call).
    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        with _compat.float64_scope():
            return function(*args, **kwargs)

    return wrapped



@_in_float64
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
    `MAX_DENSE_DIM` (1024) entries per sample; above
    that it is computed by Golub-Kahan-Lanczos with full reorthogonalization
    until the relative residual of the estimate is below 1e-9 (at most 400
    steps): a lower bound of the true value, within about that tolerance of
    it (see `exact_operator_norm`).

    Args:
        layer_or_weight: A weight, a built `keras.layers.Layer` or a built
            `keras_sn.SpectralNormalization`.
        method: `"reshape"` or `"operator"`; `None` is the wrapper's method
            for a wrapper and `"reshape"` otherwise.
        input_shape: The input shape for `method="operator"` (with or without
            the batch axis); `None` uses the layer's build input shape.
        axis: The kernel axis (or axes) of the output units: for a bare
            weight (default -1), or for a layer, overriding the table (as
            `SpectralNormalization`'s `axis`). Not for a wrapper (it has
            its own) or `method="operator"`. A scalar or a vector has no
            output axis to choose: its norm is its absolute value or its L2
            norm (a 1 x 1 or 1 x n matrix).
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
    from keras_sn._src.spectral_normalization import SpectralNormalization

    axis = arguments.check_axis(axis)
    if axis is not None and (
        method == "operator"
        or isinstance(layer_or_weight, SpectralNormalization)
    ):
        raise ValueError(
            "`axis` applies to a bare weight or a layer read as a matrix "
            "(method='reshape'); a wrapper reads its weights with its own "
            "`axis`, and an operator norm has no output axis to choose. "
            f"Received: axis={axis!r} with a "
            f"{type(layer_or_weight).__name__} and method={method!r}. "
            "Leave `axis` out."
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
        return _layer_norm(
            layer_or_weight, method or "reshape", input_shape, axis=axis
        )
    if method == "operator":
        raise ValueError(
            "`method='operator'` needs the convolution layer (its strides, "
            "padding and input size define the operator), not a bare weight. "
            "Pass the layer."
        )
    return _weight_norm(layer_or_weight, -1 if axis is None else axis)


def to_float64_numpy(value):
    """A float64 numpy copy of an array, tensor or variable (any backend)."""
    if _compat.is_variable(value):
        value = value.value
    return np.asarray(ops.convert_to_numpy(value), np.float64)


def _weight_norm(weight, axis):
    array = _numeric_array(weight)
    # A scalar is read as a 1 x 1 matrix: its one axis is the default -1.
    axes = weights_lib._axes_in_range(
        axis, max(array.ndim, 1), f"a weight of shape {array.shape}"
    )
    _check_finite(array, f"The weight of shape {array.shape}")
    if array.ndim == 0:
        return abs(float(array))
    if array.ndim == 1:
        return float(np.linalg.norm(array))
    view = weights_lib.matrix_view(array.shape, axes)
    return _max_block_sigma(array, view)


def _numeric_array(weight):
    """`weight` as a float64 numpy array, or a ValueError saying why not."""
    if weight is None or isinstance(weight, (str, bytes)):
        array = None
    else:
        try:
            array = to_float64_numpy(weight)
        except (TypeError, ValueError):
            array = None
    if array is None:
        raise ValueError(
            "`keras_sn.spectral_norm` takes a weight (a numeric array, tensor "
            "or variable), a built Keras layer or a "
            "`keras_sn.SpectralNormalization`. Received: "
            f"{weight!r:.80} (of type {type(weight).__name__})"
        )
    return array


def _check_finite(array, what):
    if not np.all(np.isfinite(array)):
        raise ValueError(
            f"{what} has non-finite entries (NaN or inf), so it has no "
            "spectral norm. Received: "
            f"{int(np.sum(~np.isfinite(array)))} of {array.size} entries "
            "non-finite; check the training run that produced it (e.g. its "
            "learning rate) or the values assigned."
        )


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
    operator = conv_operator.conv_operator(
        layer, _build_input_shape(layer, input_shape)
    )
    return exact_operator_norm(kernel, operator)


def _layer_norm(layer, method, input_shape, weight_name=None, axis=None,
                values=None):
    _assert_built(layer)
    if method == "operator":
        conv_operator.check_supported(layer)
        kernel = layer.kernel if values is None else values["kernel"]
        _check_finite(
            to_float64_numpy(kernel), f"The kernel of '{layer.name}'"
        )
        return operator_norm_of(layer, kernel, input_shape).value
    result = 1.0
    for weight in weights_lib.resolve_weights(layer, weight_name, axis):
        value = weight.variable if values is None else values[weight.name]
        array = to_float64_numpy(value)
        _check_finite(array, f"The weight '{weight.name}' of '{layer.name}'")
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


# --- Convolution operators as numpy closures: exact norm and warm-up ---

# Above this many rows and columns, the dense matrix of the convolution is not
# formed and `exact_operator_norm` falls back to Lanczos (see there).
MAX_DENSE_DIM = 1024

# The top singular values of a convolution operator lie much closer together
# than those of a kernel matrix (they come from neighbouring frequencies), so
# the operator warm-up allows this many Lanczos steps per warm-up iteration
# and stops early once the residual of the estimate is below
# `WARMUP_TOLERANCE` (relative; see `keras_sn._src.lanczos`). Measured on the SN-GAN
# discriminator's convolutions at 32x32 (Glorot kernels): 15 steps leave
# sigma 2e-3..7e-3 low, 30 steps < 1e-4, 60 steps < 2e-6 (but sigma can
# stall for tens of steps before it moves on: a change of the estimate is no
# stopping rule, the residual is).
WARMUP_STEPS_PER_ITERATION = 4
WARMUP_TOLERANCE = 1e-5


def conv_matvecs(kernel, operator):
    """``A`` and ``Aᵀ`` of a convolution as float64 numpy closures.

    Each takes a flat vector, or a batch `(n, dim)` of them, and returns the
    same layout: ``matvec`` maps input feature maps to output ones.
    """
    dense = conv_operator.dense_kernel(
        ops.cast(ops.convert_to_tensor(kernel), "float64"), operator
    )

    def apply(function, flat, shape):
        flat = np.asarray(flat, np.float64)
        batch = ops.convert_to_tensor(
            np.reshape(flat, (-1,) + shape), dtype="float64"
        )
        out = ops.convert_to_numpy(function(dense, batch, operator))
        out = np.reshape(out, (batch.shape[0], -1)).astype(np.float64)
        return out[0] if flat.ndim == 1 else out

    def matvec(flat):  # input space -> output space
        return apply(conv_operator.forward, flat, operator.input_shape)

    def rmatvec(flat):  # output space -> input space
        return apply(conv_operator.adjoint, flat, operator.output_shape)

    return matvec, rmatvec


@_in_float64
def warm_up(kernel, operator, u0, iterations):
    """Warm-up feature maps `(u, v)` for the layer state, float64 numpy.

    Runs Golub-Kahan-Lanczos steps through the convolution from `u0` (an
    output feature map, any shape with `prod(output_shape)` entries), at most
    `WARMUP_STEPS_PER_ITERATION * iterations` of them and fewer once the top
    Ritz value has converged to `WARMUP_TOLERANCE`, then one power step; see
    `keras_sn._src.lanczos`.
    """
    matvec, rmatvec = conv_matvecs(kernel, operator)
    u, v, _ = lanczos.top_singular_pair(
        matvec,
        rmatvec,
        np.reshape(np.asarray(u0, np.float64), -1),
        WARMUP_STEPS_PER_ITERATION * iterations,
        tolerance=WARMUP_TOLERANCE,
    )
    return (
        np.reshape(u, (1,) + operator.output_shape),
        np.reshape(v, (1,) + operator.input_shape),
    )


@dataclasses.dataclass(frozen=True)
class OperatorNorm:
    """`exact_operator_norm`'s result: the value and how it was computed.

    `how` is `"dense"` (numpy eigendecomposition of the dense Gram matrix of
    the convolution; exact to float64 rounding) or `"lanczos"` (the input or
    output is larger than `MAX_DENSE_DIM`: Golub-Kahan-Lanczos with full
    reorthogonalization until the relative residual of the top Ritz pair is
    below `tolerance` (see `keras_sn._src.lanczos`); a lower bound of the true value that
    is within about that tolerance of it). `steps` is the Lanczos steps run.
    """

    value: float
    how: str
    steps: int = 0


@_in_float64
def exact_operator_norm(kernel, operator, max_dense_dim=MAX_DENSE_DIM,
                        tolerance=1e-9, max_steps=400, seed=0):
    """The operator norm of the convolution by `kernel`, for analysis.

    When the input or output space has at most `max_dense_dim` entries, the
    dense Gram matrix ``AᵀA`` (or ``AAᵀ``, the smaller one) is built by
    applying the convolution and its adjoint to the identity basis in float64,
    and sigma is the square root of its largest eigenvalue (numpy). Otherwise,
    `max_steps` Lanczos steps at most, stopping at `tolerance`; see
    `OperatorNorm`. (A Lanczos step stores one input and one output feature
    map in float64: 400 steps at 32x32x64 in and 16x16x64 out are 260 MB.)

    Args:
        kernel: The layer's kernel (array or tensor), as stored by the layer.
        operator: A `ConvOperator` (see `conv_operator`).

    Returns:
        An `OperatorNorm`.
    """
    matvec, rmatvec = conv_matvecs(kernel, operator)
    n_in = math.prod(operator.input_shape)
    n_out = math.prod(operator.output_shape)
    n = min(n_in, n_out)
    if n <= max_dense_dim:
        first, second = (matvec, rmatvec) if n == n_in else (rmatvec, matvec)
        gram = np.zeros((n, n))
        chunk = max(1, min(n, 2**22 // max(n_in, n_out)))
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            basis = np.zeros((stop - start, n))
            basis[np.arange(stop - start), np.arange(start, stop)] = 1.0
            gram[start:stop] = second(first(basis))
        gram = 0.5 * (gram + gram.T)
        top = float(np.linalg.eigvalsh(gram)[-1])
        return OperatorNorm(math.sqrt(max(top, 0.0)), "dense")
    rng = np.random.default_rng(seed)
    u0 = rng.standard_normal(n_out)
    steps_run = []

    def counting_rmatvec(x):
        steps_run.append(1)
        return rmatvec(x)

    _, _, ritz = lanczos.top_singular_pair(
        matvec, counting_rmatvec, u0, max_steps, tolerance
    )
    return OperatorNorm(ritz, "lanczos", len(steps_run) - 2)
