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
``v <- normalize(Aᵀu)``, ``u <- normalize(A v)``, ``sigma = <u, A v>``.

Layers: `Conv1D/2D/3D` (grouped too), `Conv1D/2D/3DTranspose` and
`DepthwiseConv1D/2D`. Grouped and depthwise kernels are expanded to the
equivalent ordinary kernel (zeros outside the blocks), so they cost as much as
the dense convolution of the same channel counts.

The functions that run inside the layer use `keras.ops`. The exact norm
(`exact_operator_norm`) and the warm-up run eagerly with numpy bookkeeping.
"""

import dataclasses
import math

import keras
import numpy as np
from keras import ops

from keras_sn import power_iteration

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

# Above this many rows and columns, the dense matrix of the convolution is not
# formed and `exact_operator_norm` falls back to Lanczos (see there).
MAX_DENSE_DIM = 1024

# The top singular values of a convolution operator lie much closer together
# than those of a kernel matrix (they come from neighbouring frequencies), so
# the operator warm-up allows this many Lanczos steps per warm-up iteration
# and stops early once the residual of the estimate is below
# `WARMUP_TOLERANCE` (relative; see `lanczos`). Measured on the SN-GAN
# discriminator's convolutions at 32x32 (Glorot kernels): 15 steps leave
# sigma 2e-3..7e-3 low, 30 steps < 1e-4, 60 steps < 2e-6 (but sigma can
# stall for tens of steps before it moves on: a change of the estimate is no
# stopping rule, the residual is).
WARMUP_STEPS_PER_ITERATION = 4
WARMUP_TOLERANCE = 1e-5


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

    As `keras_sn.power_iteration.power_iteration_and_sigma`: the steps run
    without gradient, and ``sigma = <u, A v>`` of the last step is
    differentiable with respect to `kernel` (u, v held constant) and reuses
    the step's last ``A v``.

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
    return ops.sum(u * av), u, v


def sigma_from_vectors(kernel, u, v, operator):
    """``<u, A v>`` from given feature maps, no iteration."""
    return ops.sum(u * forward(dense_kernel(kernel, operator), v, operator))


# --- Eager analysis: warm-up and exact norm (numpy bookkeeping, float64) ---


def _closures(kernel, operator):
    """Flat float64 numpy `A` and `Aᵀ` on batches `(n, dim)`."""
    dense = dense_kernel(ops.cast(ops.convert_to_tensor(kernel), "float64"),
                         operator)

    def apply(function, flat, shape):
        batch = ops.convert_to_tensor(
            np.reshape(flat, (-1,) + shape), dtype="float64"
        )
        out = ops.convert_to_numpy(function(dense, batch, operator))
        return np.reshape(out, (batch.shape[0], -1)).astype(np.float64)

    def matvec(flat):  # input space -> output space
        return apply(forward, flat, operator.input_shape)

    def rmatvec(flat):  # output space -> input space
        return apply(adjoint, flat, operator.output_shape)

    return matvec, rmatvec


def lanczos(matvec, rmatvec, u0, steps, tolerance=None):
    """Golub-Kahan-Lanczos estimate of the top singular pair of ``A``.

    The same algorithm as `keras_sn.lanczos.top_singular_pair` (full
    reorthogonalization, then one power step), with ``A`` given as closures.
    Each step costs one ``A`` and one ``Aᵀ`` product, i.e. one power step.

    Args:
        matvec: `(1, n_in) -> (1, n_out)`, ``A``.
        rmatvec: `(1, n_out) -> (1, n_in)`, ``Aᵀ``.
        u0: float64 `(n_out,)`, non-zero start vector in the output space.
        steps: int >= 0, the most Lanczos steps.
        tolerance: `None`, or stop once the residual of the top Ritz pair
            is at most `tolerance` times the Ritz value: ``A v = sigma u``
            holds exactly and ``||Aᵀ u - sigma v|| = alpha |p_last|``, where
            ``alpha <= ||A||`` is the next step's norm and `p_last` the last
            entry of the top left singular vector of the bidiagonal matrix,
            so the stopping rule is ``|p_last| <= tolerance``. Then a
            singular value of ``A`` lies within about ``tolerance * sigma``
            of the Ritz value (the top one unless the start vector was
            nearly orthogonal to its singular vector).

    Returns:
        `(u, v, ritz)`: unit vectors (with ``u = normalize(A v)``,
        ``v = normalize(Aᵀ u_prev)``) and the last top Ritz value, a lower
        bound of sigma (0.0 when no step ran).
    """
    n_in = rmatvec(u0[None])[0].shape[0]
    u = u0 / np.linalg.norm(u0)
    v_default = np.zeros(n_in)
    v_default[0] = 1.0
    left, right, alphas, betas = [u], [], [], []
    ritz = 0.0
    for _ in range(min(steps, n_in, u.shape[0])):
        v = rmatvec(left[-1][None])[0]
        if right:
            v -= betas[-1] * right[-1]
            basis = np.stack(right)
            v -= basis.T @ (basis @ v)
        alpha = np.linalg.norm(v)
        if alpha <= 1e-300:
            break
        right.append(v / alpha)
        alphas.append(alpha)
        w = matvec(right[-1][None])[0] - alpha * left[-1]
        basis = np.stack(left)
        w -= basis.T @ (basis @ w)
        beta = np.linalg.norm(w)
        betas.append(beta)
        converged = beta <= 1e-12 * alpha
        if not converged:
            left.append(w / beta)
        k = len(alphas)
        bidiagonal = np.zeros((len(left), k))
        bidiagonal[np.arange(k), np.arange(k)] = alphas
        below = np.arange(min(k, len(left) - 1))
        bidiagonal[below + 1, below] = np.asarray(betas)[below]
        p, singular, _ = np.linalg.svd(bidiagonal)
        ritz = float(singular[0])
        u_best = np.stack(left).T @ p[:, 0]
        if converged:
            break
        if tolerance is not None and abs(p[-1, 0]) <= tolerance:
            break
    if right:
        u = _unit(u_best, u)
    v = _unit(rmatvec(u[None])[0], v_default)
    u = _unit(matvec(v[None])[0], u)
    return u, v, ritz


def _unit(x, fallback):
    norm = np.linalg.norm(x)
    return x / norm if norm > 0 else fallback


def warm_up(kernel, operator, u0, iterations):
    """Warm-up feature maps `(u, v)` for the layer state, float64 numpy.

    Runs Golub-Kahan-Lanczos steps through the convolution from `u0` (an
    output feature map, any shape with `prod(output_shape)` entries), at most
    `WARMUP_STEPS_PER_ITERATION * iterations` of them and fewer once the top
    Ritz value has converged to `WARMUP_TOLERANCE`, then one power step; see
    `lanczos`.
    """
    matvec, rmatvec = _closures(kernel, operator)
    u, v, _ = lanczos(
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
    below `tolerance` (see `lanczos`); a lower bound of the true value that
    is within about that tolerance of it). `steps` is the Lanczos steps run.
    """

    value: float
    how: str
    steps: int = 0


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
    matvec, rmatvec = _closures(kernel, operator)
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

    _, _, ritz = lanczos(matvec, counting_rmatvec, u0, max_steps, tolerance)
    return OperatorNorm(ritz, "lanczos", len(steps_run) - 2)
