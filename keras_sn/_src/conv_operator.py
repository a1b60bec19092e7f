"""The operator norm of a convolution: power iteration through the conv itself.

The paper's spectral normalization reads a convolution kernel of shape
``(*kernel_size, c_in, c_out)`` as a ``c_out x (prod(kernel_size) * c_in)``
matrix. The largest singular value of that matrix is not the Lipschitz
constant of the convolution, the linear map ``A`` from input feature maps to
output feature maps: each input pixel is read by several output positions, and
the operator norm ``||A||`` is typically 1.2-3x the reshaped one (Gouk et al.,
2018; Sedghi et al., 2019). Here ``A`` is applied as what it is, the
convolution (``keras.ops.conv``, or ``conv_transpose`` for transposed layers)
with the layer's strides, padding and dilation at a fixed input size, and
``Aᵀ`` as the other one (the gradient of the convolution with respect to its
input), with the output padding that reproduces the input size.

The power iteration then runs in feature-map space: ``u`` is an output feature
map and ``v`` an input feature map (each of batch size 1 and unit L2 norm),
``v <- normalize(Aᵀu)``, ``u <- normalize(A v)``, ``sigma = ||A v||``.

Layers: `Conv1D/2D/3D` (grouped too), `Conv1D/2D/3DTranspose` and
`DepthwiseConv1D/2D`. Grouped and depthwise kernels are expanded to the
equivalent ordinary kernel (zeros outside the blocks), so they cost as much as
the dense convolution of the same channel counts.

Everything here runs inside the layer (traced or eager) and uses `keras.ops`;
the eager analysis (the exact norm, the numpy closures for the warm-up) lives
in `keras_sn._src.spectral_norm`.
"""

import dataclasses
import math

import keras
from keras import ops

from keras_sn._src import power_iteration

_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_TRANSPOSE = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)

SUPPORTED_LAYERS = (
    "Conv1D/2D/3D (also grouped), Conv1D/2D/3DTranspose, DepthwiseConv1D/2D"
)

@dataclasses.dataclass(frozen=True)
class ConvOperator:
    """A convolution layer's linear map at a fixed input size.

    Attributes:
        rank: Number of spatial dimensions.
        transpose: Whether the forward map is a transposed convolution.
        strides: Tuple of `rank` ints, the layer's (a dilated kernel is
            expanded to an undilated one instead, see `expansion`).
        padding: `"valid"` or `"same"` for the conv call; `"causal"` is
            handled as left zero-padding by `causal_padding`.
        causal_padding: Left padding of a causal `Conv1D`, else 0.
        data_format: `"channels_last"` or `"channels_first"`.
        input_shape: Per-sample shape of the input feature map.
        output_shape: Per-sample shape of the output feature map.
        output_padding: Tuple, the `output_padding` of the `conv_transpose`
            call (the forward map of a transposed layer, the adjoint of an
            ordinary one), chosen so that its output has the right size.
        expansion: Tuple of steps that turn the stored kernel into an
            ordinary, undilated convolution kernel (see `dense_kernel`):
            `("groups", g)` or `("depthwise",)`, then `("dilation", rates)`.
    """

    rank: int
    transpose: bool
    strides: tuple
    padding: str
    causal_padding: int
    data_format: str
    input_shape: tuple
    output_shape: tuple
    output_padding: tuple
    expansion: tuple


def _layer_id(layer):
    return f"{layer.__class__.__name__} '{layer.name}'"


def check_supported(layer):
    """Raises a `ValueError` unless `layer` has a convolution operator here."""
    if isinstance(layer, _SEPARABLE):
        raise ValueError(
            "`method='operator'` does not support SeparableConv layers (two "
            "kernels whose composition is the operator). Use "
            "method='reshape', or build the separable convolution as a "
            "DepthwiseConv followed by a 1x1 Conv and wrap each. "
            f"Received: layer={_layer_id(layer)}"
        )
    if not isinstance(layer, _CONV + _TRANSPOSE + _DEPTHWISE):
        raise ValueError(
            "`method='operator'` computes the operator norm of a "
            f"convolution and needs one of: {SUPPORTED_LAYERS}. For Dense, "
            "EinsumDense and Embedding the reshaped sigma already is the "
            "operator norm: use method='reshape' (the default). "
            f"Received: layer={_layer_id(layer)}"
        )


def conv_operator(layer, input_shape):
    """Describes the linear map of convolution `layer` at `input_shape`.

    Args:
        layer: A supported convolution layer (see `check_supported`).
        input_shape: The layer's input shape, with or without the batch axis
            (`len == rank + 2` or `rank + 1`); its spatial sizes must be known.

    Returns:
        A `ConvOperator`.

    Raises:
        ValueError: for an unsupported layer or unknown spatial sizes.
    """
    check_supported(layer)
    rank = layer.rank
    shape = tuple(input_shape)
    if len(shape) == rank + 2:
        shape = shape[1:]
    if len(shape) != rank + 1:
        raise ValueError(
            f"The input shape of {_layer_id(layer)} must have {rank + 1} axes "
            f"per sample ({rank} spatial and the channels). Received: "
            f"input_shape={tuple(input_shape)}"
        )
    channels_last = layer.data_format == "channels_last"
    spatial = shape[:-1] if channels_last else shape[1:]
    if any(s is None for s in shape):
        raise ValueError(
            "`method='operator'` needs the input's spatial size when the "
            f"layer is built: the operator norm of {_layer_id(layer)} "
            "depends on it, and its power-iteration state is a feature map "
            "of that size. Received: input_shape="
            f"{tuple(input_shape)}. Give the model a fixed input size (e.g. "
            "`keras.Input((32, 32, 3))`) or build the layer with one."
        )
    strides = tuple(layer.strides)
    dilation = tuple(layer.dilation_rate)
    kernel_size = tuple(layer.kernel_size)
    effective = tuple((k - 1) * d + 1 for k, d in zip(kernel_size, dilation))
    padding = layer.padding.lower()
    causal = 0
    if padding == "causal":
        causal = effective[0] - 1
        padding = "valid"
    conv_spatial = tuple(s + causal for s in spatial)
    expansion = ()
    if isinstance(layer, _DEPTHWISE):
        expansion += (("depthwise",),)
    elif getattr(layer, "groups", 1) > 1:
        expansion += (("groups", layer.groups),)
    if max(dilation) > 1:
        # A dilated convolution is the ordinary one with a kernel spread out
        # by zeros; TensorFlow has no CPU kernel for the dilated adjoint.
        expansion += (("dilation", dilation),)
    layer_output = tuple(layer.compute_output_shape((1,) + shape))[1:]
    out_spatial = layer_output[:-1] if channels_last else layer_output[1:]
    if isinstance(layer, _TRANSPOSE):
        output_padding = layer.output_padding
    else:
        # conv_transpose from out_spatial back to conv_spatial (Keras' output
        # size rule, inverted): the adjoint of the convolution.
        output_padding = tuple(
            _transpose_output_padding(n, m, k, s, padding)
            for n, m, k, s in zip(conv_spatial, out_spatial, effective, strides)
        )
    if any(s is None or s <= 0 for s in out_spatial):
        raise ValueError(
            f"The input of {_layer_id(layer)} is too small for its kernel: "
            f"input_shape={tuple(input_shape)} gives an empty output."
        )
    return ConvOperator(
        rank=rank,
        transpose=isinstance(layer, _TRANSPOSE),
        strides=strides,
        padding=padding,
        causal_padding=causal,
        data_format=layer.data_format,
        input_shape=tuple(int(s) for s in shape),
        output_shape=tuple(int(s) for s in layer_output),
        output_padding=None if output_padding is None else tuple(output_padding),
        expansion=expansion,
    )


def _transpose_output_padding(n, m, k, s, padding):
    # Keras: valid -> (m - 1) s + k + p; same -> (m - 1) s + k % 2 + p.
    if padding == "same":
        return n - (m - 1) * s - k % 2
    return n - (m - 1) * s - k


def dense_kernel(kernel, operator):
    """The ordinary, undilated convolution kernel equivalent to `kernel`.

    Differentiable (`keras.ops`); returns `kernel` itself when there is
    nothing to expand. A grouped kernel `(*k, c_in / g, c_out)` becomes
    `(*k, c_in, c_out)` with zeros outside the group blocks; a depthwise
    kernel `(*k, c, m)` becomes `(*k, c, c * m)` (output channel `c * m + j`
    reads input channel `c`, Keras' order); a kernel dilated by `d` becomes
    one of size `(k - 1) * d + 1` with zeros between the taps.
    """
    for step in operator.expansion:
        if step[0] == "depthwise":
            kernel = _depthwise_to_dense(kernel)
        elif step[0] == "groups":
            kernel = _grouped_to_dense(kernel, step[1])
        else:
            kernel = _dilate(kernel, step[1])
    return kernel


def _depthwise_to_dense(kernel):
    shape = tuple(kernel.shape)
    spatial, (channels, multiplier) = shape[:-2], shape[-2:]
    flat = ops.reshape(kernel, (math.prod(spatial), channels, multiplier))
    eye = ops.eye(channels, dtype=kernel.dtype)
    dense = ops.einsum("scm,cd->scdm", flat, eye)
    return ops.reshape(dense, spatial + (channels, channels * multiplier))


def _grouped_to_dense(kernel, groups):
    shape = tuple(kernel.shape)
    spatial, (in_per_group, filters) = shape[:-2], shape[-2:]
    flat = ops.reshape(
        kernel, (math.prod(spatial), in_per_group, groups, filters // groups)
    )
    eye = ops.eye(groups, dtype=kernel.dtype)
    dense = ops.einsum("sigf,hg->shigf", flat, eye)
    return ops.reshape(dense, spatial + (groups * in_per_group, filters))


def _dilate(kernel, rates):
    for axis, rate in enumerate(rates):
        if rate == 1:
            continue
        shape = tuple(kernel.shape)
        size = shape[axis]
        spread = ops.expand_dims(kernel, axis + 1)
        pads = [[0, 0]] * len(spread.shape)
        pads[axis + 1] = [0, rate - 1]
        spread = ops.pad(spread, pads)
        spread = ops.reshape(
            spread, shape[:axis] + (size * rate,) + shape[axis + 1:]
        )
        kernel = ops.slice(
            spread,
            [0] * len(shape),
            shape[:axis] + ((size - 1) * rate + 1,) + shape[axis + 1:],
        )
    return kernel


def forward(kernel, x, operator):
    """``A x``: the layer's convolution (no bias) of a batch of inputs.

    Args:
        kernel: The layer's kernel, expanded by `dense_kernel`.
        x: `(batch, *operator.input_shape)`.
        operator: A `ConvOperator`.
    """
    return _channels_last(_forward, kernel, x, operator)


def adjoint(kernel, y, operator):
    """``Aᵀ y``: the gradient of `forward` with respect to its input.

    Satisfies ``<A x, y> = <x, Aᵀ y>`` (tested).
    """
    return _channels_last(_adjoint, kernel, y, operator)


def _channels_last(function, kernel, x, operator):
    # TensorFlow has no CPU kernel for a channels_first conv_transpose: run
    # both maps channels_last (the same linear map, transposed around it).
    if operator.data_format == "channels_last":
        return function(kernel, x, operator)
    x = ops.moveaxis(x, 1, -1)
    return ops.moveaxis(function(kernel, x, operator), -1, 1)


def _conv(x, kernel, operator):
    return ops.conv(
        x,
        kernel,
        strides=operator.strides,
        padding=operator.padding,
        data_format="channels_last",
    )


def _conv_transpose(x, kernel, operator):
    return ops.conv_transpose(
        x,
        kernel,
        strides=operator.strides,
        padding=operator.padding,
        output_padding=operator.output_padding,
        data_format="channels_last",
    )


def _forward(kernel, x, operator):
    if operator.transpose:
        return _conv_transpose(x, kernel, operator)
    if operator.causal_padding:
        pads = [[0, 0]] * (operator.rank + 2)
        pads[1] = [operator.causal_padding, 0]
        x = ops.pad(x, pads)
    return _conv(x, kernel, operator)


def _adjoint(kernel, y, operator):
    # A convolution's adjoint is its transpose with the same kernel, and back.
    if operator.transpose:
        return _conv(y, kernel, operator)
    x = _conv_transpose(y, kernel, operator)
    if operator.causal_padding:  # Conv1D only: crop the left padding
        x = x[:, operator.causal_padding:, :]
    return x


def _normalize(x, epsilon, fallback):
    # One feature map per batch entry (the state has batch size 1): the norm
    # is over all of its axes.
    axes = tuple(range(1, len(x.shape)))
    return power_iteration.l2_normalize(x, epsilon, fallback, axis=axes)


def power_iteration_and_sigma(kernel, u, v, operator, iterations, epsilon):
    """`iterations >= 1` power steps through the convolution; `(sigma, u, v)`.

    As `power_iteration.power_iteration_and_sigma`: the steps run without
    gradient, and ``sigma = ||A v||`` of the last step's `v` is
    differentiable with respect to `kernel` (v held constant) and reuses the
    step's last ``A v``.

    Args:
        kernel: The layer's kernel (not yet expanded).
        u: `(1, *operator.output_shape)` unit feature map.
        v: `(1, *operator.input_shape)` unit feature map.
        operator: A `ConvOperator`.
        iterations: Python int >= 1.
        epsilon: Python float, the norm floor.
    """
    dense = dense_kernel(kernel, operator)
    frozen = ops.stop_gradient(dense)
    for _ in range(iterations - 1):
        v = _normalize(adjoint(frozen, u, operator), epsilon, v)
        u = _normalize(forward(frozen, v, operator), epsilon, u)
    v = ops.stop_gradient(_normalize(adjoint(frozen, u, operator), epsilon, v))
    av = forward(dense, v, operator)  # gradient flows into `kernel` here only
    u = ops.stop_gradient(_normalize(av, epsilon, u))
    return _norm(av), u, v


def sigma_from_vectors(kernel, v, operator):
    """``||A v||`` from a given feature map `v`, no iteration."""
    av = forward(dense_kernel(kernel, operator), v, operator)
    return _norm(av)


def _norm(av):
    # ||A v||, positive by construction, written as its value plus
    # <û, A v - A v> with û = normalize(A v) held constant: the gradient is
    # û vᵀ through the convolution, without the NaN of d sqrt(x) at x = 0.
    axes = tuple(range(len(av.shape)))
    norm, u_hat = power_iteration.norm_and_direction(av, axes)
    norm, u_hat = ops.stop_gradient(norm), ops.stop_gradient(u_hat)
    return norm + ops.sum(u_hat * (av - ops.stop_gradient(av)))
