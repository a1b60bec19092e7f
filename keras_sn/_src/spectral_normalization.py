"""The `SpectralNormalization` wrapper layer."""

import math
import numbers

import keras
import numpy as np
from keras import ops

from keras_sn import _compat
from keras_sn import weights as weights_lib
from keras_sn._src import arguments
from keras_sn._src import conv_operator
from keras_sn._src import lanczos
from keras_sn._src import power_iteration
from keras_sn._src import spectral_norm as analysis
from keras_sn._src import substitution


@keras.saving.register_keras_serializable(package="keras_sn")
class SpectralNormalization(keras.layers.Wrapper):
    """Divides a layer's weight by its spectral norm, without ever overwriting it.

    Spectral normalization (Miyato et al., 2018) bounds the Lipschitz constant
    of a layer by running it with `W / sigma(W)`, where `sigma(W)` is the
    largest singular value of the weight read as a matrix (output units x
    everything else), estimated by power iteration. It stabilizes GAN
    discriminators and gives Lipschitz-constrained classifiers and critics.

    Unlike `keras.layers.SpectralNormalization`, this wrapper computes
    `W / sigma` as a tensor inside `call()` and runs the wrapped layer with it
    in place of its weight: the wrapped layer's variables are never written,
    the gradient carries the paper's term through `sigma`, inference is always
    normalized, mixed precision keeps the float32 master weights and the power
    iteration in float32, and transposed, grouped and depthwise convolutions
    use their true output axis. Which weight of which layer type is normalized
    is listed in `keras_sn.weights.WEIGHT_TABLE`; other layers opt in with
    `weight_name=` (and `axis=`).

    Args:
        layer: A `keras.layers.Layer` with a matrix weight, e.g. `Dense`,
            `EinsumDense`, `Conv1D/2D/3D` (also grouped),
            `Conv1D/2D/3DTranspose`, `DepthwiseConv1D/2D`,
            `SeparableConv1D/2D` (both kernels) or `Embedding`.
        power_iterations: Positive int, the power-iteration steps run per
            training call. The default `1` is the paper's.
        epsilon: Positive float, the floor of every vector norm and of `sigma`,
            so an all-zero weight gives zeros and never NaN.
        axis: `None`, or the int (or tuple of ints) kernel axis that indexes
            the layer's output units, to override the table (e.g. for a
            custom layer). The weight is then read as one plain matrix.
        weight_name: `None`, or the attribute name (or list of names) of the
            weight(s) of `layer` to normalize, to opt in custom layers.
        warmup_iterations: Int >= 0, the steps of the warm-up run from a
            random vector when the wrapper is built, so that `sigma` is
            accurate from the first call (one power step from a random vector
            gives about 0.75 of the true value). The warm-up uses
            Golub-Kahan-Lanczos steps, which cost what power steps cost but
            converge much faster (the measured accuracy of the default 15
            steps, against 15 power steps, is in the docs' "Lipschitz
            networks" page, from `benchmarks/warmup_accuracy.py`); see
            `reestimate()`.
        target_norm: Positive float, the spectral norm the weight is scaled
            to: the layer runs with `W * target_norm / sigma` (i-ResNet's
            coefficient, TF Model Garden's norm multiplier). Or `"initial"`:
            the sigma estimate of the weight when the wrapper is built (or
            re-estimated) is captured as saved state (`initial_sigma`) and
            used as the target, so a pretrained layer keeps its spectral norm
            (with `shrink_only`, it can never grow past it).
        shrink_only: Bool. If `True`, the weight is scaled by
            `min(1, target_norm / sigma)`: left as it is while its sigma is
            at most the target, scaled down to the target above it.
        method: `"reshape"` (default, the paper's): sigma of the weight read
            as a matrix. `"operator"` (convolutions): sigma of the
            convolution itself, the linear map from input to output feature
            maps at the input's spatial size when the layer is built (with
            its strides, padding and dilation); the reshaped sigma
            underestimates it, typically by 1.2-3x. The power iteration then
            runs through the convolution and its transpose, and `vector_u` /
            `vector_v` are output / input feature maps. See
            `keras_sn.spectral_norm`.
        **kwargs: Base layer keyword arguments, e.g. `name`. The `dtype`
            defaults to the wrapped layer's dtype policy.

    Call arguments:
        inputs: The input of the wrapped layer.
        training: Python bool. `True` runs `power_iterations` steps from the
            stored vectors and stores the new ones, then uses their `sigma`.
            `False` or `None` (inference) changes no state and uses the
            `sigma` of the stored vectors, which equals that of the last
            training call as long as the weights are the same. A wrapper with
            `trainable=False` always runs as in inference, like Keras'
            `BatchNormalization`.

    Input shape:
        That of the wrapped layer.

    Output shape:
        That of the wrapped layer, in the wrapped layer's compute dtype (never
        cast to the input dtype: `Embedding` on integer ids gives floats).

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_sn
    >>> dense = keras.layers.Dense(3, use_bias=False)
    >>> dense.build((None, 3))
    >>> _ = dense.kernel.assign(4.0 * np.eye(3))
    >>> layer = keras_sn.SpectralNormalization(dense)
    >>> layer.build((None, 3))
    >>> round(float(layer.sigma), 4)
    4.0
    >>> y = layer(np.ones((1, 3)), training=True)
    >>> np.round(keras.ops.convert_to_numpy(y), 4)
    array([[1., 1., 1.]], dtype=float32)
    >>> float(dense.get_weights()[0][0, 0])  # the wrapped kernel is untouched
    4.0

    In a discriminator:

    >>> discriminator = keras.Sequential([
    ...     keras.Input((32, 32, 3)),
    ...     keras_sn.SpectralNormalization(
    ...         keras.layers.Conv2D(64, 4, strides=2, padding="same")),
    ...     keras.layers.LeakyReLU(0.1),
    ...     keras.layers.Flatten(),
    ...     keras_sn.SpectralNormalization(keras.layers.Dense(1)),
    ... ])
    >>> tuple(discriminator(np.zeros((2, 32, 32, 3)), training=True).shape)
    (2, 1)

    Reference:
        - [Miyato et al., 2018, Spectral Normalization for Generative
          Adversarial Networks](https://arxiv.org/abs/1802.05957)

    What happens to the weights: the wrapped layer's weights are trainable as
    before and are never assigned by this wrapper; the optimizer updates the
    raw `W`, whose gradient is the paper's eq. 12 through `W / sigma(W)`.
    The wrapper owns non-trainable `vector_u` (shape `(blocks, d_out)`, each
    row of unit norm; `blocks` is 1 except for grouped and depthwise
    convolutions) and `vector_v` (`(blocks, d_in)`), in float32 (float64 for
    float64 layers). They are set by the warm-up when the wrapper is built,
    replaced on every training call, and never touched in inference.
    `SeparableConv` has a second pair, `pointwise_kernel_vector_u` and
    `pointwise_kernel_vector_v`. With `method="operator"` they are feature
    maps: `vector_u` of shape `(1, *output_shape)`, `vector_v` of
    `(1, *input_shape)` (per sample, at the build input size). With
    `target_norm="initial"` a scalar `initial_sigma` per normalized weight
    holds the captured target; it is set by the warm-up and `reestimate()`
    only. All of them are saved with the model.
    """

    def __init__(
        self,
        layer,
        power_iterations=1,
        epsilon=1e-12,
        axis=None,
        weight_name=None,
        warmup_iterations=15,
        target_norm=1.0,
        shrink_only=False,
        method="reshape",
        **kwargs,
    ):
        # Validate everything before the base class records anything.
        arguments.check_layer(
            layer, "SpectralNormalization", "keras.layers.Dense(10)"
        )
        if isinstance(layer, SpectralNormalization):
            raise ValueError(
                "`layer` is already a `SpectralNormalization`; wrapping it "
                "again would divide by sigma twice. Wrap the inner layer once. "
                f"Received: layer={layer.name!r}"
            )
        _check_int("power_iterations", power_iterations, minimum=1)
        _check_int("warmup_iterations", warmup_iterations, minimum=0)
        epsilon = arguments.check_epsilon(epsilon, "the norms and of sigma")
        axis = arguments.check_axis(axis)
        weight_name = arguments.check_weight_name(weight_name)
        target_norm = _check_target_norm(target_norm)
        if not isinstance(shrink_only, bool):
            raise ValueError(
                "`shrink_only` must be a bool: True scales the weight by "
                "min(1, target_norm / sigma), False by target_norm / sigma. "
                f"Received: shrink_only={shrink_only!r}"
            )
        _check_method(method, layer, axis, weight_name)
        if layer.built:
            # Missing weights and bad axes are found now, not at first call.
            weights_lib.resolve_weights(layer, weight_name, axis)

        kwargs.setdefault("dtype", layer.dtype_policy)
        # The wrapper reads the float32 master weights itself; only the
        # wrapped layer autocasts (to its compute dtype) when it runs.
        kwargs["autocast"] = False
        super().__init__(layer, **kwargs)
        # Python scalars, so that `get_config()` is JSON-serializable when
        # numpy integers were passed.
        self.power_iterations = int(power_iterations)
        self.epsilon = float(epsilon)
        self.axis = axis
        self.weight_name = weight_name
        self.warmup_iterations = int(warmup_iterations)
        self.target_norm = target_norm
        self.shrink_only = shrink_only
        self.method = method
        self.initial_sigma = None
        self.supports_masking = layer.supports_masking
        self._normalized = ()
        self._scale_inputs = False

    def build(self, input_shape=None):
        # Everything built here (the wrapped layer's variables too) is created
        # eagerly, even when the first call is traced in a tf.function: the
        # warm-up must read initialized weights, and its assignments must not
        # become part of the traced function.
        with arguments.outside_of_traced_functions():
            self._build_state(input_shape)

    def _build_state(self, input_shape):
        super().build(input_shape)
        _compat.mark_wrapper_unbuilt(self)
        # Resolve (and validate) first: on error no state has been created.
        resolved = weights_lib.resolve_weights(
            self.layer, self.weight_name, self.axis
        )
        operator = None
        if self.method == "operator":
            # The conv's linear map at this input size; the state holds
            # output (u) and input (v) feature maps of batch size 1.
            operator = conv_operator.conv_operator(self.layer, input_shape)
        normalized = []
        for index, weight in enumerate(resolved):
            prefix = "" if index == 0 else f"{weight.name}_"
            dtype = arguments.state_dtype(weight.variable.dtype)
            view = weight.view
            if operator is None:
                u_shape = (view.blocks, view.d_out)
                v_shape = (view.blocks, view.d_in)
            else:
                u_shape = (1,) + operator.output_shape
                v_shape = (1,) + operator.input_shape
            state = _NormalizedState(weight, operator)
            # The warm-up runs as the initializer of u and v: at once when
            # the kernel has a value, or, when `build()` is reached inside a
            # symbolic trace (JAX's `fit` builds a model without an Input in
            # `jax.eval_shape`), when Keras initializes the deferred variables
            # on leaving it, after the kernel (created first).
            warm_start = _WarmStart(self, state, u_shape)
            state.vector_u = self.add_weight(
                name=f"{prefix}vector_u",
                shape=u_shape,
                initializer=warm_start.u,
                dtype=dtype,
                trainable=False,
                autocast=False,
                # All replicas compute the same u from the same synchronized
                # weights; keep the first replica's copy (exact, no reduction).
                aggregation="only_first_replica",
            )
            state.vector_v = self.add_weight(
                name=f"{prefix}vector_v",
                shape=v_shape,
                initializer=warm_start.v,
                dtype=dtype,
                trainable=False,
                autocast=False,
                aggregation="only_first_replica",
            )
            if self.target_norm == "initial":
                state.initial_sigma = self.add_weight(
                    name=f"{prefix}initial_sigma",
                    shape=(),
                    initializer=warm_start.sigma,
                    dtype=dtype,
                    trainable=False,
                    autocast=False,
                    aggregation="only_first_replica",
                )
            normalized.append(state)
        self._normalized = tuple(normalized)
        # Scaling the input instead of the kernel is exact in float32/64; in
        # float16 1/sigma could overflow, so the kernel is scaled in float32.
        self._scale_inputs = weights_lib.is_linear_in_input(
            self.layer, [w.name for w in resolved]
        ) and self.layer.compute_dtype in ("float32", "float64")
        self.vector_u = normalized[0].vector_u
        self.vector_v = normalized[0].vector_v
        # `target_norm="initial"`: the captured target (else None).
        self.initial_sigma = normalized[0].initial_sigma
        self.built = True

    def reestimate(self, iterations=None):
        """Re-estimates the singular vectors from the current weights.

        Call it after replacing the wrapped layer's weights by other means
        than training (e.g. `set_weights` with pretrained values). It restarts
        from random vectors and runs `iterations` steps of Golub-Kahan-Lanczos
        bidiagonalization (each costs the matrix-vector products of one power
        step but converges much faster), then one power step; `build()` calls
        it with `warmup_iterations`. It runs eagerly, in float64.

        With `method="operator"` the steps run through the convolution, at
        most 4 Lanczos
        steps per iteration, stopping early once the estimate has converged
        (its top singular values lie much closer together than a kernel
        matrix's). With `target_norm="initial"`, the new sigma estimate is
        captured as the target (`initial_sigma`).

        Args:
            iterations: Int >= 0, or `None` for `max(warmup_iterations, 15)`.
        """
        if iterations is None:
            iterations = max(self.warmup_iterations, 15)
        _check_int("iterations", iterations, minimum=0)
        self._assert_built("reestimate()")
        for state in self._normalized:
            u, v = self._warm_up(state, iterations)
            state.vector_u.assign(u)
            state.vector_v.assign(v)
            if state.initial_sigma is not None:
                state.initial_sigma.assign(self._sigma_of(state, v))

    def _warm_up(self, state, iterations):
        """Eager float64 estimate of `(u, v)` from a random start, as arrays
        in the state's dtype (see `reestimate`)."""
        dtype = arguments.state_dtype(state.weight.variable.dtype)
        shape = (
            (1,) + state.operator.output_shape
            if state.operator is not None
            else (state.weight.view.blocks, state.weight.view.d_out)
        )
        # numpy's global generator: `keras.utils.set_random_seed` seeds it,
        # and every backend starts from the same vector.
        u0 = np.random.standard_normal(shape)
        kernel = state.weight.variable
        if state.operator is not None:
            u, v = analysis.warm_up(kernel, state.operator, u0, iterations)
        else:
            matrix = ops.convert_to_numpy(
                power_iteration.to_matrix(
                    ops.convert_to_tensor(kernel), state.weight.view
                )
            ).astype("float64")
            u, v = lanczos.matrix_top_singular_pairs(matrix, u0, iterations)
        return u.astype(dtype), v.astype(dtype)

    def _sigma_of(self, state, v):
        """The sigma inference computes from the kernel and `v` (a tensor)."""
        kernel = self._kernel(state)
        if state.operator is not None:
            return conv_operator.sigma_from_vectors(kernel, v, state.operator)
        return power_iteration.sigma_from_vectors(
            power_iteration.to_operand(kernel, state.weight.view), v
        )

    @property
    def sigmas(self):
        """Dict of weight name to its current sigma estimate (no state change).

        Each is `||M v||` from the stored `v` and the current weight, the
        value inference divides by. It equals `u^T M v` whenever u, v and the
        weight agree (after any training call or the warm-up), and is
        never negative and at most the true sigma for any unit `v`. A state
        that disagrees with the weight (e.g. after `set_weights` of a new
        kernel without `reestimate()`) gives a value between 0 and the true
        sigma: about a typical singular value for a random new kernel, and
        tiny only if the new weight maps the stored `v` to almost zero. Call
        `reestimate()` after replacing the weights.
        """
        self._assert_built("sigmas")
        return {
            state.weight.name: ops.stop_gradient(
                self._sigma_of(state, state.read()[1])
            )
            for state in self._normalized
        }

    @property
    def scales(self):
        """Dict of weight name to the factor inference multiplies it by.

        `1 / sigma`, `target_norm / sigma`, or with `shrink_only`
        `min(1, target_norm / sigma)` (sigma floored at `epsilon`), from the
        same estimates as `sigmas`; no state change.
        """
        sigmas = self.sigmas
        return {
            state.weight.name: ops.stop_gradient(
                self._scale(state, sigmas[state.weight.name])
            )
            for state in self._normalized
        }

    @property
    def sigma(self):
        """The current sigma estimate, a scalar tensor; no state changes.

        For `SeparableConv` (two normalized kernels) it is the product of both,
        the bound on the layer's Lipschitz constant; see `sigmas`.
        """
        return _product(self.sigmas.values())

    def effective_weights(self):
        """Dict of weight name to the weight inference runs with.

        That is `W / sigma`, or `W * target / sigma` with `target_norm`, or
        `W * min(1, target / sigma)` with `shrink_only`.

        Computed from the stored vectors and the current weights, without any
        state change, in the wrapped weight's dtype. `keras_sn` uses it to bake
        the normalization into plain layers.
        """
        self._assert_built("effective_weights()")
        return {
            state.weight.name: ops.stop_gradient(value)
            for state, (_, value) in zip(
                self._normalized, self._substitutions(self._sigmas(False))
            )
        }

    def call(self, inputs, training=None):
        update = bool(training) and self.trainable
        sigmas = self._sigmas(update)
        if self._scale_inputs and self._input_is_smaller(inputs):
            # op(x, W / sigma) == op(x / sigma, W) for the table's bilinear
            # layers: scaling the batch of inputs (and its gradient) touches
            # fewer numbers than scaling the kernel when the kernel is larger.
            dtype = self.layer.compute_dtype
            scale = _product(
                self._scale(state, sigma) for state, _, sigma in sigmas
            )
            return self.layer(ops.cast(inputs, dtype) * ops.cast(scale, dtype))
        return substitution.call_with(
            self.layer, self._substitutions(sigmas), inputs
        )

    def _input_is_smaller(self, inputs):
        """Whether the batch of `inputs` has fewer elements than the kernels.

        Decided on static shapes while tracing; an unknown batch size counts
        as 8, so a first layer (small kernel, large image) scales its kernel
        and does not make the input gradient necessary.
        """
        shape = getattr(inputs, "shape", None)
        dtype = getattr(inputs, "dtype", None)
        if shape is None or dtype is None or not keras.backend.is_float_dtype(
            dtype
        ):
            return False
        if any(dim is None for dim in shape[1:]):
            return False
        batch = shape[0] if shape and shape[0] is not None else 8
        size = batch * math.prod(shape[1:])
        return size < sum(
            math.prod(s.weight.view.kernel_shape) for s in self._normalized
        )

    def _sigmas(self, update):
        """`[(state, kernel, sigma)]`; with `update`, power steps first."""
        result = []
        for state in self._normalized:
            kernel = self._kernel(state)
            if state.operator is not None:
                sigma = self._operator_sigma(state, kernel, update)
            else:
                matrix = power_iteration.to_operand(kernel, state.weight.view)
                if update:
                    sigma, u, v = power_iteration.power_iteration_and_sigma(
                        matrix,
                        *state.read(),
                        self.power_iterations,
                        self.epsilon,
                    )
                    state.vector_u.assign(u)
                    state.vector_v.assign(v)
                else:
                    sigma = power_iteration.sigma_from_vectors(
                        matrix, state.read()[1]
                    )
            result.append((state, kernel, sigma))
        return result

    def _substitutions(self, sigmas):
        """`[(variable, W * scale)]` in each variable's dtype (see `_scale`)."""
        substitutions = []
        for state, kernel, sigma in sigmas:
            normalized = kernel * self._scale(state, sigma)
            variable = state.weight.variable
            if arguments.dtype_of(normalized) != variable.dtype:
                normalized = ops.cast(normalized, variable.dtype)
            substitutions.append((variable, normalized))
        return substitutions

    def _operator_sigma(self, state, kernel, update):
        if not update:
            return conv_operator.sigma_from_vectors(
                kernel, state.read()[1], state.operator
            )
        sigma, u, v = conv_operator.power_iteration_and_sigma(
            kernel,
            *state.read(),
            state.operator,
            self.power_iterations,
            self.epsilon,
        )
        state.vector_u.assign(u)
        state.vector_v.assign(v)
        return sigma

    def _scale(self, state, sigma):
        """The factor the weight is multiplied by (a trace-time branch).

        `1 / sigma` (the default adds no op), `target / sigma`, or with
        `shrink_only` `min(1, target / sigma)`; sigma floored at `epsilon`.
        """
        sigma = ops.maximum(sigma, self.epsilon)
        if state.initial_sigma is not None:
            target = ops.convert_to_tensor(state.initial_sigma)
        elif self.target_norm != 1.0:
            target = self.target_norm
        elif not self.shrink_only:
            return ops.reciprocal(sigma)
        else:
            target = 1.0
        # A division (not target * 1/sigma), so that target == sigma gives
        # exactly 1 and a just-captured "initial" layer runs unchanged.
        scale = ops.divide(ops.cast(target, sigma.dtype), sigma)
        if self.shrink_only:
            scale = ops.minimum(scale, ops.cast(1.0, sigma.dtype))
        return scale

    def _kernel(self, state):
        # The master weight in the state dtype (float32, or float64).
        kernel = ops.convert_to_tensor(state.weight.variable)
        if arguments.dtype_of(kernel) != state.vector_u.dtype:
            kernel = ops.cast(kernel, state.vector_u.dtype)
        return kernel

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
            "power_iterations": self.power_iterations,
            "epsilon": self.epsilon,
            "axis": self.axis,
            "weight_name": self.weight_name,
            "warmup_iterations": self.warmup_iterations,
            "target_norm": self.target_norm,
            "shrink_only": self.shrink_only,
            "method": self.method,
        }
        base_config = super().get_config()
        return {**base_config, **config}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # The base class pops "layer" from the dict it is given; work on a
        # copy so the caller's config stays whole.
        return super().from_config(dict(config), custom_objects=custom_objects)


class _NormalizedState:
    """A normalized weight and its singular vector variables.

    A plain class (not a tuple or dict) so that Keras' attribute tracking
    leaves it alone: the variables are already tracked by `add_weight`.
    """

    def __init__(self, weight, operator=None):
        self.weight = weight
        # `method="operator"`: the conv's `conv_operator.ConvOperator`.
        self.operator = operator
        self.vector_u = None
        self.vector_v = None
        # `target_norm="initial"`: the captured sigma (a variable).
        self.initial_sigma = None

    def read(self):
        """The current `(u, v)` as tensors (JAX ops do not take variables)."""
        return (
            ops.convert_to_tensor(self.vector_u),
            ops.convert_to_tensor(self.vector_v),
        )


class _WarmStart:
    """Initializers of one state's `u`, `v` (and `initial_sigma`).

    The first of them to run computes the warm-up from the kernel's value
    (the wrapper's `_warm_up`), once; the others read the same result.
    """

    def __init__(self, wrapper, state, u_shape):
        self.wrapper = wrapper
        self.state = state
        self._result = None

    def _vectors(self):
        if self._result is None:
            self._result = self.wrapper._warm_up(
                self.state, self.wrapper.warmup_iterations
            )
        return self._result

    # Inside a stateless scope (a symbolic build) Keras reads a deferred
    # variable through its initializer, with traced weights: give it a
    # placeholder of the right shape; the warm-up runs at the real
    # initialization, eagerly, once the scope is left.

    def u(self, shape, dtype=None):
        if _compat.in_stateless_scope():
            return ops.zeros(shape, dtype=dtype)
        return self._vectors()[0]

    def v(self, shape, dtype=None):
        if _compat.in_stateless_scope():
            return ops.zeros(shape, dtype=dtype)
        return self._vectors()[1]

    def sigma(self, shape, dtype=None):
        if _compat.in_stateless_scope():
            return ops.ones(shape, dtype=dtype)
        # What inference divides by, so that a just-captured
        # `target_norm="initial"` layer runs with its weight unchanged.
        v = ops.convert_to_tensor(self._vectors()[1])
        return ops.convert_to_numpy(self.wrapper._sigma_of(self.state, v))


def _product(values):
    result = None
    for value in values:
        result = value if result is None else result * value
    return result


def _check_int(name, value, minimum):
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or value < minimum
    ):
        expected = (
            "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        )
        raise ValueError(
            f"`{name}` must be {expected}. Received: {name}={value!r}"
        )


def _check_target_norm(target_norm):
    if isinstance(target_norm, str) and target_norm == "initial":
        return target_norm
    if (
        isinstance(target_norm, numbers.Real)
        and not isinstance(target_norm, bool)
        and target_norm > 0
        and target_norm != float("inf")
    ):
        return float(target_norm)
    raise ValueError(
        "`target_norm` must be a positive, finite float (the spectral norm "
        "the weight is scaled to; default 1.0) or 'initial' (keep the sigma "
        "the weight has when the wrapper is built). "
        f"Received: target_norm={target_norm!r}"
    )


def _check_method(method, layer, axis, weight_name):
    if method not in ("reshape", "operator") or not isinstance(method, str):
        raise ValueError(
            "`method` must be 'reshape' (sigma of the weight read as a "
            "matrix, the paper's) or 'operator' (sigma of the convolution "
            "as a linear map of feature maps, for convolution layers). "
            f"Received: method={method!r}"
        )
    if method == "reshape":
        return
    conv_operator.check_supported(layer)
    if axis is not None or weight_name not in (None, "kernel", ["kernel"]):
        raise ValueError(
            "`method='operator'` normalizes the convolution's `kernel` as an "
            "operator, which has no `axis` or other weight to choose. Remove "
            "`axis=` / `weight_name=`, or use method='reshape'. Received: "
            f"axis={axis!r}, weight_name={weight_name!r}"
        )
