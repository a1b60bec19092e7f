"""Which weight of which layer type is normalized, read as which matrix.

The table `WEIGHT_TABLE` is the single place that knows about layer types. A
weight is read as a stack of `blocks` matrices of `d_in x d_out`: one block for
an ordinary kernel, one block per group for a grouped convolution and one per
input channel for a depthwise convolution (their operators are block-diagonal,
and the spectral norm of a block-diagonal operator is its largest block's).

Layers not in the table are opted in with `weight_name=` (and `axis=` where the
output axis is not the last one).
"""

import collections
import dataclasses
import math

import keras

from keras_sn import _compat


@dataclasses.dataclass(frozen=True)
class MatrixView:
    """How a kernel is read as a `(blocks, d_in, d_out)` stack of matrices.

    Attributes:
        kernel_shape: The kernel's shape.
        split_shape: Shape the kernel is first reshaped to (splits the output
            channels of a grouped convolution into `(groups, filters_per_group)`),
            or `None`.
        permutation: Transpose applied next, ordering axes as
            `(block axes, input axes, output axes)`, or `None` when the kernel
            is already in that order (no copy is made).
        blocks, d_in, d_out: The sizes of the resulting stack.
        output_axes: The kernel axes that index the output, as given.
        block_axes: The axes of independent blocks (grouped and depthwise
            convolutions), indexing `split_shape` when it is given.
    """

    kernel_shape: tuple
    split_shape: tuple
    permutation: tuple
    blocks: int
    d_in: int
    d_out: int
    output_axes: tuple
    block_axes: tuple = ()

    @property
    def input_axes(self):
        """The axes contracted with the input (of `split_shape` if given)."""
        rank = len(self.split_shape or self.kernel_shape)
        return tuple(
            a
            for a in range(rank)
            if a not in self.output_axes and a not in self.block_axes
        )


def matrix_view(kernel_shape, output_axes, block_axes=(), split_shape=None):
    """Builds a `MatrixView`; axes index `split_shape` when it is given."""
    shape = tuple(split_shape or kernel_shape)
    rank = len(shape)
    output_axes = tuple(a % rank for a in output_axes)
    block_axes = tuple(a % rank for a in block_axes)
    input_axes = tuple(
        a for a in range(rank) if a not in output_axes and a not in block_axes
    )
    permutation = block_axes + input_axes + output_axes
    if permutation == tuple(range(rank)):
        permutation = None
    return MatrixView(
        kernel_shape=tuple(kernel_shape),
        split_shape=tuple(split_shape) if split_shape else None,
        permutation=permutation,
        blocks=math.prod(shape[a] for a in block_axes),
        d_in=math.prod(shape[a] for a in input_axes),
        d_out=math.prod(shape[a] for a in output_axes),
        output_axes=output_axes,
        block_axes=block_axes,
    )


def _last_axis_is_output(layer, shape):
    return matrix_view(shape, (-1,))


def _transposed_conv(layer, shape):
    # Keras stores Conv*Transpose kernels as (*kernel_size, filters, in_channels):
    # the output channels are axis -2 (PyTorch's dim=1 for ConvTranspose).
    return matrix_view(shape, (-2,))


def _conv(layer, shape):
    groups = getattr(layer, "groups", 1) or 1
    if groups == 1:
        return matrix_view(shape, (-1,))
    # (*k, in/groups, filters) -> (*k, in/groups, groups, filters/groups):
    # group g maps its own input channels to its own block of filters.
    split = tuple(shape[:-1]) + (groups, shape[-1] // groups)
    return matrix_view(shape, (-1,), block_axes=(-2,), split_shape=split)


def _depthwise(layer, shape):
    # (*k, in_channels, depth_multiplier): one block per input channel.
    return matrix_view(shape, (-1,), block_axes=(-2,))


def _einsum_dense(layer, shape):
    # Kernel axes in the output index output units; those also in the input
    # are independent maps (blocks); the rest are contracted with the input.
    # (EinsumDense itself rejects kernel axes in neither.)
    inputs, output = layer.equation.replace(" ", "").split("->")
    input_subscripts, kernel_subscripts = inputs.split(",")
    output_axes = tuple(
        axis
        for axis, letter in enumerate(kernel_subscripts)
        if letter in output and letter not in input_subscripts
    )
    block_axes = tuple(
        axis
        for axis, letter in enumerate(kernel_subscripts)
        if letter in output and letter in input_subscripts
    )
    return matrix_view(shape, output_axes, block_axes=block_axes)


TableRow = collections.namedtuple(
    "TableRow", ["classes", "rules", "linear_in_input", "description"]
)
TableRow.__doc__ = """A row of `WEIGHT_TABLE`.

Attributes:
    classes: The layer classes the row applies to.
    rules: Dict of weight attribute name to a `(layer, shape) -> MatrixView`.
    linear_in_input: Whether the layer is `op(x, W) + b` with `op` bilinear, so
        that running it on `x / sigma` equals running it with `W / sigma`.
    description: What the documentation's weight table says.
"""

# Order matters: the first row whose classes match the layer is used.
WEIGHT_TABLE = (
    TableRow(
        (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D),
        {"depthwise_kernel": _depthwise, "pointwise_kernel": _last_axis_is_output},
        True,
        "both kernels, each with its own u: depthwise block-diagonal over "
        "input channels, pointwise output axis -1",
    ),
    TableRow(
        (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D),
        {"kernel": _depthwise},
        True,
        "`kernel`, block-diagonal over input channels",
    ),
    TableRow(
        (
            keras.layers.Conv1DTranspose,
            keras.layers.Conv2DTranspose,
            keras.layers.Conv3DTranspose,
        ),
        {"kernel": _transposed_conv},
        True,
        "`kernel`, output channels are axis -2",
    ),
    TableRow(
        (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D),
        {"kernel": _conv},
        True,
        "`kernel`, output axis -1; with `groups > 1` block-diagonal over groups",
    ),
    TableRow(
        (keras.layers.Dense,),
        {"kernel": _last_axis_is_output},
        True,
        "`kernel`, output axis -1",
    ),
    TableRow(
        (keras.layers.EinsumDense,),
        {"kernel": _einsum_dense},
        True,
        "`kernel`, output axes = kernel axes in the equation's output; axes "
        "also in the input are blocks",
    ),
    TableRow(
        (keras.layers.Embedding,),
        {"embeddings": _last_axis_is_output},
        False,  # integer ids: the lookup is not a product with the input
        "`embeddings`, output axis -1 (the embedding dimension)",
    ),
)


@dataclasses.dataclass(frozen=True)
class NormalizedWeight:
    """One weight of the wrapped layer and how it is read as a matrix."""

    name: str
    variable: object
    view: MatrixView


def _table_row(layer):
    for row in WEIGHT_TABLE:
        if isinstance(layer, row.classes):
            return row
    return None


def _table_rules(layer):
    row = _table_row(layer)
    return row.rules if row else None


def is_supported_by_default(layer):
    """Whether `layer`'s weights are known without `weight_name=`."""
    return _table_row(layer) is not None


def is_linear_in_input(layer, weight_names):
    """Whether dividing `layer`'s input by sigma equals normalizing its weights.

    True for the table's bilinear layers (their exact classes: a subclass may
    transform its input first) when only their table weights are normalized.
    The wrapper then scales the (small) input instead of writing a scaled copy
    of the (large) kernel, which saves a pass over the kernel in the forward
    pass and two in the backward pass.
    """
    row = _table_row(layer)
    return bool(
        row
        and row.linear_in_input
        and type(layer) in row.classes
        and set(weight_names) <= set(row.rules)
    )


def _layer_id(layer):
    return f"{layer.__class__.__name__} '{layer.name}'"


def _variable_names(layer):
    # Attribute names that hold the layer's variables; a private `_kernel`
    # behind a public `kernel` property is reported as `kernel`.
    names = set()
    for name, value in vars(layer).items():
        if _compat.is_variable(value):
            public = name.lstrip("_")
            names.add(public if hasattr(type(layer), public) else name)
    return sorted(names)


def _get_variable(layer, name):
    try:
        value = getattr(layer, name)
    except AttributeError:
        value = None
    if _compat.is_variable(value):
        return value
    if value is None:
        raise ValueError(
            f"{_layer_id(layer)} has no weight named '{name}'. Received: "
            f"weight_name={name!r}. Its weight attributes are "
            f"{_variable_names(layer)}; pass one of them as `weight_name`."
        )
    raise ValueError(
        f"The '{name}' of {_layer_id(layer)} is not a plain Keras variable "
        f"(got {type(value).__name__}); keras_sn's wrappers substitute a "
        "variable, so LoRA and quantized kernels are not supported. Disable "
        "LoRA/quantization or pass the underlying variable's attribute name as "
        "`weight_name`."
    )


def _normalize_axes(axis, rank, layer, name):
    return _axes_in_range(
        axis, rank, f"the weight '{name}' of {_layer_id(layer)}"
    )


def _axes_in_range(axis, rank, subject):
    """`axis` (an int or a tuple of ints) as a tuple of distinct axes of a
    weight of rank `rank`, or a ValueError naming `subject`."""
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if any(not -rank <= a < rank for a in axes):
        raise ValueError(
            f"`axis` is out of range for {subject}, which has rank {rank}. "
            f"Received: axis={axis}. Expected integers in [-{rank}, "
            f"{rank - 1}] naming the output axes."
        )
    if len({a % rank for a in axes}) != len(axes):
        raise ValueError(
            f"`axis` names the same kernel axis twice. Received: axis={axis}."
        )
    return axes


def resolve_weights(layer, weight_name=None, axis=None):
    """Returns the `NormalizedWeight`s of a built `layer`.

    Args:
        layer: A built Keras layer.
        weight_name: `None` (use `WEIGHT_TABLE`), or the attribute name (or
            a list of names) of the weight(s) to normalize.
        axis: `None` (use the table, else the last axis), or the kernel
            axis/axes that index the output. Overrides any block structure.

    Raises:
        ValueError: when a weight is missing, not a float variable, or not a
            matrix, or `axis` is out of range. The message says how to fix it.
    """
    rules = _table_rules(layer) or {}
    if weight_name is None:
        names = list(rules)
        if not names:
            kernel = getattr(layer, "kernel", None)
            if _compat.is_variable(kernel) and len(kernel.shape) >= 2:
                names = ["kernel"]  # any other layer with a matrix `kernel`
            else:
                raise ValueError(
                    f"keras_sn does not know which weight of "
                    f"{_layer_id(layer)} to normalize: it is not one of the "
                    "supported layer types and has no `kernel` of rank >= 2. "
                    "Opt in by passing `weight_name=` (the weight's attribute "
                    "name) and, if its output axis is not the last one, "
                    f"`axis=`. Its weight attributes: {_variable_names(layer)}."
                )
    elif isinstance(weight_name, str):
        names = [weight_name]
    else:
        names = list(weight_name)

    resolved = []
    for name in names:
        variable = _get_variable(layer, name)
        shape = tuple(variable.shape)
        if not keras.backend.is_float_dtype(variable.dtype) or len(shape) == 0:
            raise ValueError(
                f"The weight '{name}' of {_layer_id(layer)} is not a float "
                f"tensor of rank >= 1 (dtype={variable.dtype}, shape={shape}), "
                "so it cannot be normalized. Pass the name of a matrix weight "
                "as `weight_name`."
            )
        if axis is not None:
            axes = _normalize_axes(axis, len(shape), layer, name)
            view = matrix_view(shape, axes)
        elif name in rules:
            view = rules[name](layer, shape)
        else:
            view = matrix_view(shape, (-1,))
        resolved.append(NormalizedWeight(name, variable, view))
    return resolved
