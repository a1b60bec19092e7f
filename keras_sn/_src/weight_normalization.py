"""The `WeightNormalization` wrapper layer."""

import contextlib
import math

import keras
import numpy as np
from keras import ops

from keras_sn import _compat
from keras_sn import weights as weights_lib
from keras_sn._src import arguments
from keras_sn._src import substitution
from keras_sn._src.spectral_normalization import SpectralNormalization


@keras.saving.register_keras_serializable(package="keras_sn")
class WeightNormalization(keras.layers.Wrapper):
    """Runs a layer with `g * V / ||V||` per output unit, never overwriting V.

    Weight normalization (Salimans & Kingma, 2016) splits each output unit's
    weight vector into a direction `V / ||V||` and a length `g` that is
    learned on its own, which conditions the optimization like batch
    normalization does, without depending on the batch. The wrapped layer's
    weight is the direction `V`: it stays the layer's own trainable variable
    and is never written; the wrapper adds a trainable `g` and runs the layer
    with `W = g * V / ||V||` in place of `V`, so the gradient reaches `g` and
    `V` through the reparametrization.

    Which weight of which layer type is normalized is the table of
    `SpectralNormalization` (`keras_sn.weights.WEIGHT_TABLE`); the norm is
    taken per output unit, over every other kernel axis:

    - `Dense`, `Conv1D/2D/3D`: per output channel (kernel axis -1).
    - Grouped `Conv1D/2D/3D`: per output channel; each reads only its
      group's input channels, so the norm is over those.
    - `Conv1D/2D/3DTranspose`: per output channel (kernel axis -2; PyTorch's
      `weight_norm` default `dim=0` is the input channel there).
    - `DepthwiseConv1D/2D`: per output channel `c * depth_multiplier + m`:
      the norm of the spatial filter `kernel[..., c, m]`.
    - `SeparableConv1D/2D`: both kernels, each per its output channel; the
      pointwise kernel's `g` is `pointwise_kernel_g`.
    - `EinsumDense`: per entry of the kernel axes that appear in the output
      (the norm is over the contracted axes).
    - `Embedding`: per row, the vector of one token id (as PyTorch's
      `weight_norm(embedding, dim=0)`); pass `axis=-1` for one `g` per
      embedding dimension instead.

    Other layers opt in with `weight_name=` (and `axis=`).

    Args:
        layer: A `keras.layers.Layer` with a matrix weight, e.g. `Dense`,
            `EinsumDense`, a convolution or `Embedding`.
        data_init: Bool. `False` (default, PyTorch's behaviour): `g` starts
            at `||V||`, so the wrapped layer computes what it computed
            unwrapped. `True` (TF Addons' data-dependent initialization):
            the first call with `training=True` sets, per output unit,
            `g = 1 / std(t)` and `bias = -mean(t) / std(t)`, where `t` is
            that batch's pre-activation (the layer's output with the unit
            direction `V / ||V||` and no bias, before its activation), so
            that the layer's pre-activations on that batch have mean 0 and
            standard deviation 1. It happens once: the saved `initialized`
            flag keeps a reloaded model from doing it again. Supported for
            `Dense`, `EinsumDense`, `Conv1D/2D/3D` (also grouped),
            `Conv1D/2D/3DTranspose` and `DepthwiseConv1D/2D` with their table
            weight.
        axis: `None`, or the int (or tuple of ints) kernel axis that indexes
            the output units, to override the table (e.g. for a custom
            layer). The norm is then over all other axes.
        weight_name: `None`, or the attribute name (or list of names) of the
            weight(s) of `layer` to normalize, to opt in custom layers.
        epsilon: Positive float, the floor of `||V||`, so that an all-zero
            direction gives zeros (and zero gradients), never NaN. With
            `data_init`, also the floor of `std(t)`.
        **kwargs: Base layer keyword arguments, e.g. `name`. The `dtype`
            defaults to the wrapped layer's dtype policy.

    Call arguments:
        inputs: The input of the wrapped layer.
        training: Python bool. With `data_init=True`, the first call with
            `True` on a wrapper with `trainable=True` initializes `g` and the
            bias from its batch (in-graph: under `fit`, XLA and
            `tf.distribute`, where the statistics cover the global batch).
            Otherwise no argument changes what the layer computes.

    Input shape:
        That of the wrapped layer.

    Output shape:
        That of the wrapped layer, in its compute dtype.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_sn
    >>> dense = keras.layers.Dense(2, use_bias=False)
    >>> dense.build((None, 2))
    >>> _ = dense.kernel.assign([[3.0, 0.0], [4.0, 1.0]])
    >>> layer = keras_sn.WeightNormalization(dense)
    >>> layer.build((None, 2))
    >>> keras.ops.convert_to_numpy(layer.g)  # ||V|| of each output unit
    array([5., 1.], dtype=float32)
    >>> _ = layer.g.assign([1.0, 2.0])
    >>> keras.ops.convert_to_numpy(layer.effective_weights()["kernel"])
    array([[0.6, 0. ],
           [0.8, 2. ]], dtype=float32)
    >>> float(dense.get_weights()[0][0, 0])  # the wrapped kernel is untouched
    3.0

    With data-dependent initialization:

    >>> x = np.random.default_rng(0).normal(3.0, 2.0, (64, 4))
    >>> layer = keras_sn.WeightNormalization(
    ...     keras.layers.Dense(3, activation="relu"), data_init=True)
    >>> _ = layer(x, training=True)  # initializes g and the bias once
    >>> float(keras.ops.convert_to_numpy(layer.initialized))
    1.0

    Reference:
        - [Salimans & Kingma, 2016, Weight Normalization: A Simple
          Reparameterization to Accelerate Training of Deep Neural
          Networks](https://arxiv.org/abs/1602.07868)

    What happens to the weights: the wrapped layer's weights are trainable as
    before and are never assigned by this wrapper. It owns a trainable `g` of
    shape `(units,)` per normalized weight (`units` the number of output
    units, e.g. `filters`; `pointwise_kernel_g` for the second kernel of a
    `SeparableConv`), in float32 (float64 for float64 layers), never cast to
    half precision. With `data_init=True` it also owns non-trainable
    `initialized` (0 or 1), `g_offset` and `bias_offset` (`(units,)`): the
    data-dependent initialization writes only these, and the layer runs with
    `g + g_offset` and `bias + bias_offset` (see `gains`), because only
    non-trainable state persists out of stateless training steps (JAX's
    `fit`) and out of replicas (`tf.distribute`). The offsets are constant
    after the first training call, so the gradient and the optimizer act on
    `g` and the bias exactly as if they had been assigned. All of them are
    saved with the model.
    """

    def __init__(
        self,
        layer,
        data_init=False,
        axis=None,
        weight_name=None,
        epsilon=1e-12,
        **kwargs,
    ):
        # Validate everything before the base class records anything.
        arguments.check_layer(
            layer, "WeightNormalization", "keras.layers.Dense(10)"
        )
        if isinstance(layer, (WeightNormalization, SpectralNormalization)):
            raise ValueError(
                f"`layer` is already a `{type(layer).__name__}`; wrapping it "
                "in a `WeightNormalization` would normalize a wrapper, which "
                "has no weight of its own to normalize. Wrap the inner layer "
                f"once, with one of them. Received: layer={layer.name!r}"
            )
        if not isinstance(data_init, bool):
            raise ValueError(
                "`data_init` must be a bool: True initializes g and the bias "
                "from the first training batch (TF Addons), False starts g "
                "at ||V|| (PyTorch). Received: data_init="
                f"{data_init!r}"
            )
        epsilon = arguments.check_epsilon(epsilon, "the weight norms")
        axis = arguments.check_axis(axis)
        weight_name = arguments.check_weight_name(weight_name)
        if data_init:
            _check_data_init_layer(layer, axis, weight_name)
        if layer.built:
            # Missing weights, bad axes and bad biases are found now.
            resolved = _resolve(layer, weight_name, axis)
            if data_init:
                _data_init_layout(layer, resolved[0])

        kwargs.setdefault("dtype", layer.dtype_policy)
        # The wrapper reads the float32 master weights itself; only the
        # wrapped layer autocasts (to its compute dtype) when it runs.
        kwargs["autocast"] = False
        super().__init__(layer, **kwargs)
        self.data_init = data_init
        self.axis = axis
        self.weight_name = weight_name
        self.epsilon = epsilon
        self.supports_masking = layer.supports_masking
        self.initialized = None
        self.g_offset = None
        self.bias_offset = None
        self._normalized = ()
        self._bias = None
        self._output_axes = None

    def build(self, input_shape=None):
        # Created eagerly even when the first call is traced: the initial `g`
        # reads the kernel's value.
        with arguments.outside_of_traced_functions():
            self._build_state(input_shape)

    def _build_state(self, input_shape):
        super().build(input_shape)
        _compat.mark_wrapper_unbuilt(self)
        # Resolve (and validate) first: on error no state has been created.
        resolved = _resolve(self.layer, self.weight_name, self.axis)
        if self.data_init:
            self._bias, self._output_axes = _data_init_layout(
                self.layer, resolved[0]
            )
        normalized = []
        for index, weight in enumerate(resolved):
            prefix = "" if index == 0 else f"{weight.name}_"
            state = _Direction(weight, self._norm_floor())
            state.g = self.add_weight(
                name=f"{prefix}g",
                shape=(state.units,),
                # ||V|| of the kernel's value: at once, or (JAX's `fit` on a
                # model without an Input) when Keras initializes the
                # deferred variables, after the kernel.
                initializer=state.initial_g,
                dtype=arguments.state_dtype(weight.variable.dtype),
                trainable=True,
                autocast=False,
            )
            normalized.append(state)
        self._normalized = tuple(normalized)
        self.g = normalized[0].g
        if self.data_init:
            dtype = self.g.dtype
            units = normalized[0].units
            self.initialized = self.add_weight(
                name="initialized",
                shape=(),
                initializer="zeros",
                dtype=dtype,
                trainable=False,
                autocast=False,
                # Every replica computes the same values from the globally
                # reduced statistics; keep the first replica's copy.
                aggregation="only_first_replica",
            )
            self.g_offset = self.add_weight(
                name="g_offset",
                shape=(units,),
                initializer="zeros",
                dtype=dtype,
                trainable=False,
                autocast=False,
                aggregation="only_first_replica",
            )
            self.bias_offset = self.add_weight(
                name="bias_offset",
                shape=(units,),
                initializer="zeros",
                dtype=dtype,
                trainable=False,
                autocast=False,
                aggregation="only_first_replica",
            )
        self.built = True

    def _norm_floor(self):
        # ||V|| = sqrt(max(sum V^2, floor)): sqrt's gradient at 0 never runs.
        return max(self.epsilon**2, float(np.finfo(np.float32).tiny))

    def reset(self):
        """Restarts `g` from the current weights, as when the wrapper was built.

        Sets `g` to `||V||` of the current kernel (so the layer computes what
        it computes unwrapped) and, with `data_init=True`, clears
        `initialized` and the offsets, so the next training call initializes
        again. Call it after replacing the wrapped layer's weights by other
        means than training (e.g. `set_weights` with pretrained values).
        Runs eagerly.
        """
        self._assert_built("reset()")
        for state in self._normalized:
            state.g.assign(state.initial_g(None))
        if self.data_init:
            self.initialized.assign(0.0)
            self.g_offset.assign(np.zeros(self.g_offset.shape))
            self.bias_offset.assign(np.zeros(self.bias_offset.shape))

    @property
    def gains(self):
        """Dict of weight name to the `g` the layer runs with (no state change).

        `g`, plus `g_offset` with `data_init=True`.
        """
        self._assert_built("gains")
        offset = self._stored_offsets()
        return {
            state.weight.name: ops.stop_gradient(
                self._gain(state, offset, index)
            )
            for index, state in enumerate(self._normalized)
        }

    def effective_weights(self):
        """Dict of weight name to the weight the layer runs with.

        `g * V / ||V||` per output unit for each normalized weight and, with
        `data_init=True` on a layer with a bias, `"bias"`: `bias +
        bias_offset`. Computed without any state change, in each weight's
        dtype. `keras_sn.strip` bakes them into plain layers.
        """
        self._assert_built("effective_weights()")
        return {
            name: ops.stop_gradient(value)
            for name, (_, value) in self._named_substitutions(
                self._stored_offsets()
            )
        }

    def call(self, inputs, training=None):
        offsets = self._stored_offsets()
        if self.data_init and bool(training) and self.trainable:
            offsets = self._initialize_once(inputs)
        substitutions = [
            pair for _, pair in self._named_substitutions(offsets)
        ]
        return substitution.call_with(self.layer, substitutions, inputs)

    def _stored_offsets(self):
        if not self.data_init:
            return None
        return (
            ops.convert_to_tensor(self.g_offset),
            ops.convert_to_tensor(self.bias_offset),
        )

    def _gain(self, state, offsets, index):
        g = ops.convert_to_tensor(state.g)
        if offsets is not None and index == 0:
            g = g + offsets[0]
        return g

    def _named_substitutions(self, offsets):
        """`[(name, (variable, value))]`: each `g * V / ||V||`, the bias."""
        substitutions = []
        for index, state in enumerate(self._normalized):
            value = state.weight_from(
                state.kernel(), self._gain(state, offsets, index)
            )
            substitutions.append(
                (state.weight.name, _in_dtype_of(state.weight.variable, value))
            )
        if offsets is not None and self._bias is not None:
            bias = ops.convert_to_tensor(self._bias)
            offset = ops.reshape(
                ops.cast(offsets[1], arguments.dtype_of(bias)), bias.shape
            )
            substitutions.append(("bias", (self._bias, bias + offset)))
        return substitutions

    def _initialize_once(self, inputs):
        """Data-dependent init in-graph; returns the offsets to run with.

        While `initialized` is 0, computes the batch's per-unit mean and
        std of the pre-activations (over all replicas), and the offsets that
        make `g + g_offset = 1 / std` and `bias + bias_offset = -mean / std`;
        stores them and sets `initialized` to 1. Afterwards the stored
        offsets are kept (the statistics branch does not run).
        """
        state = self._normalized[0]
        dtype = state.g.dtype
        done = ops.convert_to_tensor(self.initialized) > 0.5
        count, mean, m2 = ops.cond(
            done,
            lambda: (
                ops.zeros((), dtype),
                ops.zeros((state.units,), dtype),
                ops.zeros((state.units,), dtype),
            ),
            lambda: self._batch_statistics(inputs, state),
        )
        count, mean, m2 = _sum_over_replicas(count, mean, m2)
        variance = m2 / ops.maximum(count, 1.0)
        std = ops.sqrt(ops.maximum(variance, self._norm_floor()))
        new_g = 1.0 / std
        new_bias = -mean / std
        g = ops.convert_to_tensor(state.g)
        g_offset = new_g - g
        if self._bias is not None:
            bias = ops.cast(
                ops.reshape(ops.convert_to_tensor(self._bias), (-1,)), dtype
            )
            bias_offset = new_bias - bias
        else:
            # No bias to shift: only the scale is initialized.
            bias_offset = ops.zeros_like(new_bias)
        old_g_offset, old_bias_offset = self._stored_offsets()
        g_offset = ops.stop_gradient(ops.where(done, old_g_offset, g_offset))
        bias_offset = ops.stop_gradient(
            ops.where(done, old_bias_offset, bias_offset)
        )
        self.g_offset.assign(g_offset)
        self.bias_offset.assign(bias_offset)
        self.initialized.assign(ops.ones((), dtype))
        return g_offset, bias_offset

    def _batch_statistics(self, inputs, state):
        """This replica's `(count, mean, sum of squared deviations)` per unit.

        Of the pre-activations: the layer run with `V / ||V||` (g = 1), a
        zero bias and no activation.
        """
        dtype = state.g.dtype
        substitutions = [
            _in_dtype_of(
                state.weight.variable,
                state.weight_from(state.kernel(), ops.ones((state.units,), dtype)),
            )
        ]
        if self._bias is not None:
            substitutions.append(
                (self._bias, ops.zeros(self._bias.shape, self._bias.dtype))
            )
        with _without_activation(self.layer):
            outputs = substitution.call_with(self.layer, substitutions, inputs)
        outputs = ops.cast(outputs, dtype)
        rank = len(outputs.shape)
        axes = [a % rank for a in self._output_axes]
        outputs = ops.moveaxis(
            outputs, axes, list(range(rank - len(axes), rank))
        )
        t = ops.reshape(outputs, (-1, state.units))
        count = ops.sum(ops.ones_like(t[:, 0]))
        mean = ops.mean(t, axis=0)
        m2 = ops.sum(ops.square(t - mean), axis=0)
        return count, mean, m2

    def _assert_built(self, what):
        if not self.built:
            raise ValueError(
                f"`{what}` needs a built layer: call the layer on data or "
                "call `build(input_shape)` first."
            )

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def compute_output_spec(self, inputs, training=None):
        return self.layer.compute_output_spec(inputs)

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    def get_config(self):
        config = {
            "data_init": self.data_init,
            "axis": self.axis,
            "weight_name": self.weight_name,
            "epsilon": self.epsilon,
        }
        base_config = super().get_config()
        return {**base_config, **config}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # The base class pops "layer" from the dict it is given; work on a
        # copy so the caller's config stays whole.
        return super().from_config(dict(config), custom_objects=custom_objects)


class _Direction:
    """A normalized weight `V`: its per-unit norm and its `g` variable.

    The kernel is read in the layout of its `MatrixView` (`split_shape` for a
    grouped convolution); the units are the entries of its output and block
    axes, flattened in axis order, which is the order of the layer's output
    channels. A plain class so that Keras' attribute tracking leaves it alone.
    """

    def __init__(self, weight, floor):
        self.weight = weight
        self.floor = floor
        view = weight.view
        self.shape = tuple(view.split_shape or view.kernel_shape)
        self.reduce_axes = view.input_axes
        self.g_shape = tuple(
            1 if axis in self.reduce_axes else size
            for axis, size in enumerate(self.shape)
        )
        self.units = math.prod(self.g_shape)
        self.g = None

    def kernel(self):
        """`V` as a tensor in the state dtype (float32 or float64)."""
        kernel = ops.convert_to_tensor(self.weight.variable)
        dtype = arguments.state_dtype(self.weight.variable.dtype)
        if arguments.dtype_of(kernel) != dtype:
            kernel = ops.cast(kernel, dtype)
        return kernel

    def weight_from(self, kernel, g):
        """`g * V / ||V||`, in the kernel's shape."""
        kernel = ops.reshape(kernel, self.shape)
        if self.reduce_axes:
            squares = ops.sum(
                ops.square(kernel), axis=self.reduce_axes, keepdims=True
            )
        else:  # a vector weight: each entry is a unit of its own
            squares = ops.square(kernel)
        norm = ops.sqrt(ops.maximum(squares, self.floor))
        scale = ops.reshape(ops.cast(g, norm.dtype), self.g_shape) / norm
        return ops.reshape(kernel * scale, self.weight.view.kernel_shape)

    def initial_g(self, shape, dtype=None):
        """`||V||` per unit, from the kernel's current value (float64 math)."""
        if _compat.in_stateless_scope():
            # A symbolic build (e.g. `fit` building a Sequential without an
            # Input) reads deferred variables through their initializers:
            # shapes only; the real value comes at initialization, eagerly.
            return ops.ones(shape, dtype=dtype)
        kernel = np.asarray(
            ops.convert_to_numpy(ops.convert_to_tensor(self.weight.variable)),
            np.float64,
        ).reshape(self.shape)
        squares = np.sum(np.square(kernel), axis=self.reduce_axes)
        norm = np.sqrt(np.maximum(squares, self.floor)).reshape(-1)
        return norm.astype(arguments.state_dtype(self.weight.variable.dtype))


def _in_dtype_of(variable, value):
    if arguments.dtype_of(value) != variable.dtype:
        value = ops.cast(value, variable.dtype)
    return variable, value


def _resolve(layer, weight_name, axis):
    """`resolve_weights`, with one `g` per row of an Embedding by default."""
    resolved = weights_lib.resolve_weights(layer, weight_name, axis)
    if (
        isinstance(layer, keras.layers.Embedding)
        and axis is None
        and weight_name in (None, "embeddings", ["embeddings"])
    ):
        # The output of token id i is row i of the table: it is the output
        # unit, as in PyTorch's `weight_norm(embedding, dim=0)`.
        resolved = [
            weights_lib.NormalizedWeight(
                weight.name,
                weight.variable,
                weights_lib.matrix_view(weight.variable.shape, (0,)),
            )
            for weight in resolved
        ]
    return resolved


# The layer types data-dependent init supports: one normalized weight whose
# units are the output's channels, a `bias` over them and an `activation`.
_DATA_INIT_TYPES = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
)
_NOT_DATA_INIT_TYPES = (
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)


def _check_data_init_layer(layer, axis, weight_name):
    supported = (
        isinstance(layer, _DATA_INIT_TYPES)
        and not isinstance(layer, _NOT_DATA_INIT_TYPES)
        and axis is None
        and weight_name in (None, "kernel", ["kernel"])
    )
    if not supported:
        raise ValueError(
            "`data_init=True` sets each output unit's g and bias from the "
            "statistics of that unit's output channel; it supports Dense, "
            "EinsumDense, Conv1D/2D/3D (also grouped), Conv1D/2D/3DTranspose "
            "and DepthwiseConv1D/2D with their default weight and axis "
            "(SeparableConv has two kernels, Embedding no bias or "
            "activation). Use data_init=False for this layer. Received: "
            f"layer={type(layer).__name__} {layer.name!r}, axis={axis!r}, "
            f"weight_name={weight_name!r}"
        )


def _data_init_layout(layer, weight):
    """`(bias variable or None, output axes of the units)` for data init."""
    units = math.prod(
        1 if a in weight.view.input_axes else size
        for a, size in enumerate(weight.view.split_shape or weight.view.kernel_shape)
    )
    if isinstance(layer, keras.layers.EinsumDense):
        output_axes = _einsum_unit_axes(layer, weight)
    elif isinstance(layer, keras.layers.Dense):
        output_axes = (-1,)
    else:
        channels_first = getattr(layer, "data_format", None) == "channels_first"
        output_axes = (1,) if channels_first else (-1,)
    bias = getattr(layer, "bias", None)
    if bias is not None and math.prod(bias.shape) != units:
        raise ValueError(
            f"`data_init=True` sets a bias per output unit, but the bias of "
            f"{type(layer).__name__} '{layer.name}' has shape "
            f"{tuple(bias.shape)}, not one entry for each of its {units} "
            "units (an EinsumDense with `bias_axes` over only some of its "
            "output axes). Give the layer a bias over all of its output "
            "axes, or none, or use data_init=False."
        )
    return bias, output_axes


def _einsum_unit_axes(layer, weight):
    """The output axes of an EinsumDense that index its kernel's units."""
    inputs, output = layer.equation.replace(" ", "").split("->")
    kernel_subscripts = inputs.split(",")[1]
    view = weight.view
    unit_letters = [
        kernel_subscripts[a]
        for a in sorted(view.output_axes + view.block_axes)
    ]
    ellipsis = output.find("...")
    letters = output.replace("...", "")
    indices = [letters.index(letter) for letter in unit_letters]
    if indices != sorted(indices):
        raise ValueError(
            "`data_init=True` needs the EinsumDense output to list the "
            "kernel's output axes in the kernel's order (so that its bias "
            f"and its units line up). Received: equation={layer.equation!r}. "
            "Reorder the kernel subscripts, or use data_init=False."
        )
    # Letters after a `...` are counted from the end.
    positions = [
        index - len(letters) if ellipsis != -1 and index >= ellipsis else index
        for index in indices
    ]
    return tuple(positions)


def _sum_over_replicas(count, mean, m2):
    """Combines per-replica statistics into those of the global batch.

    Under a `tf.distribute` strategy with several replicas (in a replica
    context), all-reduces `count`, `count * mean` and `m2 + count * mean^2`;
    otherwise returns its arguments (exact two-pass statistics).
    """
    if keras.backend.backend() != "tensorflow":
        return count, mean, m2
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return count, mean, m2
    units = mean.shape[0]
    packed = ops.concatenate(
        [ops.reshape(count, (1,)), count * mean, m2 + count * mean * mean]
    )
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, packed)
    count = total[0]
    mean = total[1 : 1 + units] / ops.maximum(count, 1.0)
    m2 = ops.maximum(total[1 + units :] - count * mean * mean, 0.0)
    return count, mean, m2


@contextlib.contextmanager
def _without_activation(layer):
    """Runs `layer` without its activation (the pre-activations)."""
    activation = getattr(layer, "activation", None)
    if activation is None:
        yield
        return
    layer.activation = keras.activations.linear
    try:
        yield
    finally:
        layer.activation = activation
