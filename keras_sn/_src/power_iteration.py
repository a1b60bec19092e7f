"""Pure tensor math of spectral normalization, written with `keras.ops`.

A kernel is read as a stack of matrices ``K`` of shape ``(blocks, d_in, d_out)``
(see `keras_sn.weights.MatrixView`). Keras kernels are stored input-major
(``(..., d_in, d_out)``), so for Dense and Conv this view is a free reshape and
the power iteration needs no transposed copy of the kernel: ``M = Kᵀ`` is the
paper's ``d_out x d_in`` matrix, ``Mᵀu = K u`` and ``M v = Kᵀ v``.
`Conv*Transpose` kernels, ``(*kernel_size, filters, in_channels)``, have their
output axis in the middle; `to_operand` reads them as ``(1, P, d_out, Q)``
and the products contract that axis in place, again without a transposed
copy (which cost a full read and write of the kernel per call, and another
in the backward pass).

Nothing here touches a variable; the layer owns all state.
"""

import math

import keras
from keras import ops

from keras_sn import _compat


def to_matrix(kernel, view):
    """Reads `kernel` as the `(blocks, d_in, d_out)` stack described by `view`.

    Args:
        kernel: A tensor of shape `view.kernel_shape`.
        view: A `keras_sn.weights.MatrixView`.

    Returns:
        A tensor of shape `(view.blocks, view.d_in, view.d_out)`.
    """
    if view.split_shape is not None:
        kernel = ops.reshape(kernel, view.split_shape)
    if view.permutation is not None:
        kernel = ops.transpose(kernel, view.permutation)
    return ops.reshape(kernel, (view.blocks, view.d_in, view.d_out))


def to_operand(kernel, view):
    """The kernel as the power iteration reads it: `to_matrix`'s stack, or
    `(1, P, d_out, Q)` for one matrix whose output axes sit between input axes.

    In the second form the input index of ``M`` is ``p * Q + q``, exactly as
    in `to_matrix` (input axes keep their order), so `u` and `v` are the same
    vectors in both forms; only the products differ.
    """
    middle = _middle_output_split(view)
    if middle is None:
        return to_matrix(kernel, view)
    before, after = middle
    return ops.reshape(kernel, (1, before, view.d_out, after))


def _middle_output_split(view):
    """`(P, Q)` when `view` is one matrix whose output axes are contiguous and
    neither first nor last in the kernel (the transpose `to_matrix` makes only
    moves them to the end); otherwise `None`."""
    if view.permutation is None or view.split_shape is not None:
        return None
    if view.blocks != 1:
        return None
    axes = sorted(view.output_axes)
    rank = len(view.kernel_shape)
    first, last = axes[0], axes[-1]
    if axes != list(range(first, last + 1)) or first == 0 or last == rank - 1:
        return None
    shape = view.kernel_shape
    return math.prod(shape[:first]), math.prod(shape[last + 1:])


def l2_normalize(x, epsilon, fallback=None, axis=-1):
    """Normalizes the rows of `x` (along `axis`, an int or a tuple) to unit L2
    norm.

    Computes ``x / max(||x||, epsilon)`` as PyTorch's `F.normalize` does. Where a
    row's norm is at most `epsilon` (an all-zero kernel) and `fallback` is given,
    the row of `fallback` is returned instead, so a stored singular vector never
    collapses to zero and the iteration can resume once the kernel is non-zero.
    """
    x = ops.convert_to_tensor(x)
    squared_norm = ops.sum(ops.square(x), axis=axis, keepdims=True)
    floor = epsilon * epsilon
    normalized = x * ops.rsqrt(ops.maximum(squared_norm, floor))
    if fallback is None:
        return normalized
    return ops.where(squared_norm > floor, normalized, fallback)


def norm_and_direction(x, axis=-1):
    """``(||x||, x / ||x||)`` along `axis` (an int or a tuple), robustly.

    The direction is exact for every non-zero `x`, with no floor: callers
    compare the norm with theirs.

    The norm is taken of `x` divided by its largest magnitude, so squares of
    tiny (1e-31) or huge entries neither underflow nor overflow: sigma is
    positive for any non-zero `x`. The direction is 0 where `x` is.
    """
    # Reciprocals of the (few) norms, then products over the vector.
    # `amax`, not `max`, here and in `_largest`: Keras' torch `max` checks
    # its result for a `.values` attribute, which Dynamo cannot trace, and
    # each call split a `torch.compile` graph (11-26 breaks per wrapper call).
    scale = ops.amax(ops.abs(x), axis=axis, keepdims=True)
    scaled = x * ops.reciprocal(ops.where(scale > 0, scale, 1.0))
    norm = ops.sqrt(ops.sum(ops.square(scaled), axis=axis, keepdims=True))
    # `scaled` has an entry of magnitude 1 unless x is 0, so its norm is
    # >= 1 or exactly 0: the direction needs no floor.
    direction = scaled * ops.reciprocal(ops.where(norm > 0, norm, 1.0))
    return ops.squeeze(scale * norm, axis=axis), direction


def _matvec_in(matrix, u):
    # Mᵀu = K u for every block: (G, d_in, d_out) @ (G, d_out, 1) -> (G, d_in).
    # One form on every runtime: the plain product of the reshaped kernel.
    # Runtime-specific forms (per-slice products on TensorFlow, a transposed
    # dot under XLA) were removed: their gain on a whole training step was
    # inside the run-to-run spread (docs/performance.md).
    if len(matrix.shape) == 4:
        # (1, P, d_out, Q): u (1, 1, d_out) @ each (d_out, Q) slice -> (P, Q).
        _, before, d_out, after = matrix.shape
        slices = ops.reshape(matrix, (before, d_out, after))
        product = ops.matmul(ops.reshape(u, (1, 1, d_out)), slices)
        return ops.reshape(product, (1, before * after))
    blocks, d_in, d_out = matrix.shape
    if blocks == 1:  # one block (Dense, Conv): a 2-D product
        product = ops.matmul(
            ops.reshape(matrix, (d_in, d_out)), ops.reshape(u, (d_out, 1))
        )
        return ops.reshape(product, (1, d_in))
    return ops.squeeze(ops.matmul(matrix, ops.expand_dims(u, -1)), -1)


def _matvec_out(matrix, v):
    # M v = Kᵀ v for every block: (G, 1, d_in) @ (G, d_in, d_out) -> (G, d_out).
    if len(matrix.shape) == 4:
        # (1, P, d_out, Q): sum over p of each (d_out, Q) slice @ v[p] (Q,).
        _, before, d_out, after = matrix.shape
        slices = ops.reshape(matrix, (before, d_out, after))
        columns = ops.reshape(v, (before, after, 1))
        products = ops.matmul(slices, columns)
        return ops.reshape(ops.sum(products, axis=0), (1, d_out))
    blocks, d_in, d_out = matrix.shape
    if _under_xla():
        return _chunked_matvec_out(matrix, v)
    if blocks == 1:  # a 2-D product, as in `_matvec_in`
        return ops.matmul(
            ops.reshape(v, (1, d_in)), ops.reshape(matrix, (d_in, d_out))
        )
    return ops.squeeze(ops.matmul(ops.expand_dims(v, 1), matrix), 1)


# Under XLA, `M v` splits the contracted axis into at most this many chunks
# (see `_chunked_matvec_out`); 16, 64 and 256 gave the same whole-step gain.
_XLA_CHUNKS = 64


def _chunked_matvec_out(matrix, v):
    """`M v` as a sum of `c` partial products over chunks of `d_in`.

    The one runtime-specific form kept, because a whole training step shows
    it (docs/performance.md). XLA:CPU lowers a vector-matrix product that
    contracts the kernel's major axis to a slow loop; cut into `c` batched
    products of `d_in / c` rows, it reads the kernel at about the speed of
    a plain sum over it, and the whole step (with the gradient, a batch of
    rank-one products) is cheaper than with the two-row GEMM used before
    (the discriminator's batch-4 XLA step: 1.02-1.04x plain against
    1.06-1.08x). `c` is the largest divisor of `d_in` up to `_XLA_CHUNKS`,
    so the reshapes are free.
    """
    blocks, d_in, d_out = matrix.shape
    chunks = max(c for c in range(1, _XLA_CHUNKS + 1) if d_in % c == 0)
    rows = d_in // chunks
    partial = ops.matmul(
        ops.reshape(v, (blocks * chunks, 1, rows)),
        ops.reshape(matrix, (blocks * chunks, rows, d_out)),
    )
    return ops.sum(ops.reshape(partial, (blocks, chunks, d_out)), axis=1)


def _under_xla():
    """Whether the ops built now are compiled by XLA: always on JAX; on
    TensorFlow inside a `jit_compile=True` function; never on PyTorch."""
    backend = keras.backend.backend()
    if backend == "jax":
        return True
    if backend != "tensorflow":
        return False
    # TensorFlow marks graphs traced for `jit_compile=True`.
    return _compat.tf_graph_in_xla_context()


def right_vector(matrix, u, v, epsilon):
    """Half a power step without gradient: ``normalize(Mᵀu)``, else `v`."""
    matrix = ops.stop_gradient(ops.convert_to_tensor(matrix))
    return l2_normalize(_matvec_in(matrix, u), epsilon, fallback=v)


def power_iteration(matrix, u, v, iterations, epsilon):
    """Runs `iterations` power steps without gradient.

    One step is ``v <- normalize(Mᵀu)``, ``u <- normalize(M v)``.

    Args:
        matrix: `(blocks, d_in, d_out)` tensor, or a `to_operand` result.
        u: `(blocks, d_out)` unit rows, the left singular vector estimates.
        v: `(blocks, d_in)` unit rows, the right singular vector estimates.
        iterations: Python int >= 0.
        epsilon: Python float > 0, the norm floor.

    Returns:
        The new `(u, v)`.
    """
    matrix = ops.stop_gradient(ops.convert_to_tensor(matrix))
    for _ in range(iterations):
        v = l2_normalize(_matvec_in(matrix, u), epsilon, fallback=v)
        u = l2_normalize(_matvec_out(matrix, v), epsilon, fallback=u)
    return u, v


def power_iteration_and_sigma(matrix, u, v, iterations, epsilon):
    """Runs `iterations >= 1` power steps and returns `(sigma, u, v)`.

    ``sigma = ||M v||`` of the last step's `v` is differentiable with respect
    to `matrix` (v held constant): its gradient is ``û vᵀ`` with
    ``û = M v / ||M v||``, the new `u`, i.e. the paper's. It reuses the step's
    last product ``M v``, so training costs exactly `2 * iterations`
    matrix-vector products per block and no more.

    Returns:
        `sigma`: scalar, the largest of the blocks' estimates (the spectral norm
        of a block-diagonal operator is that of its largest block).
        `u`, `v`: the new singular vector estimates, without gradient.
    """
    matrix = ops.convert_to_tensor(matrix)
    u, v = power_iteration(matrix, u, v, iterations - 1, epsilon)
    v = ops.stop_gradient(right_vector(matrix, u, v, epsilon))
    mv = _matvec_out(matrix, v)  # the one product the gradient flows through
    sigmas, u_hat = _block_sigmas(mv)
    # normalize(M v), or the previous u where M v vanishes (as l2_normalize).
    u = ops.where(ops.expand_dims(sigmas > epsilon, -1), u_hat, u)
    return _largest(sigmas), ops.stop_gradient(u), v


def sigma_from_vectors(matrix, v):
    """``||M v||`` (largest over blocks) from a given `v`, no iteration.

    Positive by construction and, for unit rows `v`, at most the true sigma;
    it equals ``uᵀ M v`` whenever ``u = normalize(M v)``, as after a step.
    """
    matrix, v = (ops.convert_to_tensor(t) for t in (matrix, v))
    return _largest(_block_sigmas(_matvec_out(matrix, v))[0])


def _block_sigmas(mv):
    """``(||M v||, û)`` per block from the product ``mv = M v``.

    The norm is written as its value plus ``<û, M v - M v>`` with
    ``û = normalize(M v)`` held constant, so autodiff gives the paper's
    gradient ``û vᵀ`` through the product (v is constant), without the NaN
    of d sqrt(x) at x = 0 and without a custom gradient, which
    `torch.compile` does not differentiate faithfully (Keras' torch
    `custom_gradient` keeps its backward function on the autograd context).
    """
    frozen = ops.stop_gradient(mv)
    sigmas, u_hat = norm_and_direction(frozen)
    u_hat = ops.stop_gradient(u_hat)
    correction = ops.sum(u_hat * (mv - frozen), axis=-1)
    return ops.stop_gradient(sigmas) + correction, u_hat


def _largest(block_sigmas):
    if block_sigmas.shape[0] == 1:
        return ops.reshape(block_sigmas, ())
    return ops.amax(block_sigmas)
