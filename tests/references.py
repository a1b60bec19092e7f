"""Independent references for the tests: the paper's matrix of every layer type.

Each function turns a layer's kernel into the dense `d_out x d_in` matrix of
the reshape convention (Miyato et al.; PyTorch's `dim`), written directly from
the layer type's semantics with numpy, without any keras_sn code. Block-diagonal
operators (grouped and depthwise convolutions) are expanded to the kernel of
the equivalent ordinary convolution, whose outputs the tests check against the
layer's own.
"""

import dataclasses

import keras
import numpy as np


def output_axis_matrix(kernel, axis=-1):
    """Rows indexed by `axis` (the output units), columns by everything else."""
    kernel = np.asarray(kernel, np.float64)
    return np.moveaxis(kernel, axis, 0).reshape(kernel.shape[axis], -1)


def grouped_to_dense_kernel(kernel, groups):
    """(*k, in/groups, out) grouped kernel -> (*k, in, out) with zero blocks."""
    kernel = np.asarray(kernel, np.float64)
    *spatial, in_per_group, filters = kernel.shape
    out_per_group = filters // groups
    dense = np.zeros((*spatial, in_per_group * groups, filters))
    for g in range(groups):
        rows = slice(g * in_per_group, (g + 1) * in_per_group)
        cols = slice(g * out_per_group, (g + 1) * out_per_group)
        dense[..., rows, cols] = kernel[..., :, cols]
    return dense


def depthwise_to_dense_kernel(kernel):
    """(*k, in, mult) depthwise kernel -> (*k, in, in * mult) ordinary kernel.

    Output channel `c * mult + m` reads only input channel `c` (Keras' and
    TensorFlow's depthwise channel order).
    """
    kernel = np.asarray(kernel, np.float64)
    *spatial, channels, multiplier = kernel.shape
    dense = np.zeros((*spatial, channels, channels * multiplier))
    for c in range(channels):
        dense[..., c, c * multiplier:(c + 1) * multiplier] = kernel[..., c, :]
    return dense


def block_diagonal(blocks):
    """Dense block-diagonal matrix from a list of 2-D blocks."""
    rows = sum(b.shape[0] for b in blocks)
    cols = sum(b.shape[1] for b in blocks)
    out = np.zeros((rows, cols))
    r = c = 0
    for b in blocks:
        out[r:r + b.shape[0], c:c + b.shape[1]] = b
        r, c = r + b.shape[0], c + b.shape[1]
    return out


@dataclasses.dataclass
class LayerCase:
    """A layer type under test: how to make it, feed it and read its matrix."""

    id: str
    make: callable  # () -> a fresh, unbuilt layer
    input_shape: tuple  # with batch size
    matrices: callable  # layer -> {weight name: reference matrix}
    integer_input: int = 0  # vocabulary size for Embedding, else 0

    def inputs(self, seed=0):
        rng = np.random.default_rng(seed)
        if self.integer_input:
            return rng.integers(0, self.integer_input, self.input_shape)
        return rng.standard_normal(self.input_shape).astype("float32")


def _w(layer, name):
    return np.asarray(getattr(layer, name), np.float64)


LAYER_CASES = [
    LayerCase(
        "dense",
        lambda: keras.layers.Dense(7),
        (3, 5),
        lambda l: {"kernel": output_axis_matrix(_w(l, "kernel"))},
    ),
    LayerCase(
        "einsum_dense_output_axes",  # two output axes d, e; contracted c
        lambda: keras.layers.EinsumDense("abc,cde->abde", (None, 3, 4)),
        (2, 6, 5),
        lambda l: {"kernel": _w(l, "kernel").reshape(5, 12).T},
    ),
    LayerCase(
        "einsum_dense_contracted_axes",  # attention output: contract c, d
        lambda: keras.layers.EinsumDense("abcd,cde->abe", (None, 6)),
        (2, 4, 3, 5),
        lambda l: {"kernel": _w(l, "kernel").reshape(15, 6).T},
    ),
    LayerCase(
        "einsum_dense_shared_axis",  # b in input, kernel and output: blocks
        lambda: keras.layers.EinsumDense("abc,bcd->abd", (3, 4)),
        (2, 3, 5),
        lambda l: {
            "kernel": block_diagonal([k.T for k in _w(l, "kernel")])
        },
    ),
    LayerCase(
        "conv1d",
        lambda: keras.layers.Conv1D(6, 3),
        (2, 9, 4),
        lambda l: {"kernel": output_axis_matrix(_w(l, "kernel"))},
    ),
    LayerCase(
        "conv2d",
        lambda: keras.layers.Conv2D(5, (3, 2), strides=2, padding="same"),
        (2, 8, 7, 3),
        lambda l: {"kernel": output_axis_matrix(_w(l, "kernel"))},
    ),
    LayerCase(
        "conv3d",
        lambda: keras.layers.Conv3D(4, 2),
        (2, 4, 5, 4, 3),
        lambda l: {"kernel": output_axis_matrix(_w(l, "kernel"))},
    ),
    LayerCase(
        "conv1d_grouped",
        lambda: keras.layers.Conv1D(6, 3, groups=3),
        (2, 9, 6),
        lambda l: {
            "kernel": output_axis_matrix(
                grouped_to_dense_kernel(_w(l, "kernel"), 3)
            )
        },
    ),
    LayerCase(
        "conv2d_grouped",
        lambda: keras.layers.Conv2D(8, 3, groups=2),
        (2, 7, 6, 4),
        lambda l: {
            "kernel": output_axis_matrix(
                grouped_to_dense_kernel(_w(l, "kernel"), 2)
            )
        },
    ),
    LayerCase(
        "conv1d_transpose",
        lambda: keras.layers.Conv1DTranspose(5, 3, strides=2),
        (2, 6, 3),
        lambda l: {"kernel": output_axis_matrix(_w(l, "kernel"), axis=-2)},
    ),
    LayerCase(
        "conv2d_transpose",
        lambda: keras.layers.Conv2DTranspose(3, 4, strides=2, padding="same"),
        (2, 4, 5, 6),
        lambda l: {"kernel": output_axis_matrix(_w(l, "kernel"), axis=-2)},
    ),
    LayerCase(
        "conv3d_transpose",
        lambda: keras.layers.Conv3DTranspose(2, 2),
        (2, 3, 3, 2, 5),
        lambda l: {"kernel": output_axis_matrix(_w(l, "kernel"), axis=-2)},
    ),
    LayerCase(
        "depthwise_conv1d",
        lambda: keras.layers.DepthwiseConv1D(3, depth_multiplier=2),
        (2, 8, 5),
        lambda l: {
            "kernel": output_axis_matrix(
                depthwise_to_dense_kernel(_w(l, "kernel"))
            )
        },
    ),
    LayerCase(
        "depthwise_conv2d",
        lambda: keras.layers.DepthwiseConv2D((3, 2), depth_multiplier=3),
        (2, 6, 5, 4),
        lambda l: {
            "kernel": output_axis_matrix(
                depthwise_to_dense_kernel(_w(l, "kernel"))
            )
        },
    ),
    LayerCase(
        "separable_conv1d",
        lambda: keras.layers.SeparableConv1D(7, 3, depth_multiplier=2),
        (2, 8, 3),
        lambda l: {
            "depthwise_kernel": output_axis_matrix(
                depthwise_to_dense_kernel(_w(l, "depthwise_kernel"))
            ),
            "pointwise_kernel": output_axis_matrix(_w(l, "pointwise_kernel")),
        },
    ),
    LayerCase(
        "separable_conv2d",
        lambda: keras.layers.SeparableConv2D(5, 3, depth_multiplier=2),
        (2, 7, 6, 3),
        lambda l: {
            "depthwise_kernel": output_axis_matrix(
                depthwise_to_dense_kernel(_w(l, "depthwise_kernel"))
            ),
            "pointwise_kernel": output_axis_matrix(_w(l, "pointwise_kernel")),
        },
    ),
    LayerCase(
        "embedding",
        lambda: keras.layers.Embedding(11, 6),
        (3, 4),
        lambda l: {"embeddings": output_axis_matrix(_w(l, "embeddings"))},
        integer_input=11,
    ),
]

LAYER_CASE_IDS = [case.id for case in LAYER_CASES]


def reference_sigma(matrix):
    """Largest singular value by numpy SVD, in float64."""
    return float(np.linalg.svd(np.asarray(matrix, np.float64), compute_uv=False)[0])


def copy_with_weights(layer, weights, input_shape):
    """A fresh layer of the same config, built, holding `weights`."""
    twin = layer.__class__.from_config(layer.get_config())
    twin.build(input_shape)
    twin.set_weights(weights)
    return twin


def central_differences(function, kernel, step=1e-6):
    """d function / d kernel by central differences, one entry at a time.

    `function` maps a numpy kernel to a float; use it in float64.
    """
    grad = np.zeros_like(kernel)
    for index in np.ndindex(kernel.shape):
        plus, minus = kernel.copy(), kernel.copy()
        plus[index] += step
        minus[index] -= step
        grad[index] = (function(plus) - function(minus)) / (2 * step)
    return grad
