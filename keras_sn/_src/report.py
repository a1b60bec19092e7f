"""`report(model)`: every wrapped layer's sigma and the network's Lipschitz bound."""

import dataclasses
import math

import keras
from keras import ops

from keras_sn._src import conv_operator
from keras_sn._src import model_tools
from keras_sn._src import spectral_norm as exact_norm
from keras_sn._src.spectral_normalization import SpectralNormalization


@dataclasses.dataclass(frozen=True)
class LayerReport:
    """One wrapped layer of a `Report`.

    Attributes:
        name: The wrapper's name.
        layer_type: The wrapped layer's class name.
        method: The wrapper's method, `"reshape"` or `"operator"`.
        input_shape: The build input shape (what the operator norm is
            computed at).
        sigma_estimate: `wrapper.sigma`, the estimate the weight is divided
            by (for `SeparableConv`, the product of both kernels').
        sigma_exact: The exact value of what `sigma_estimate` estimates
            (`keras_sn.spectral_norm(wrapper)`), or `None` for an operator
            layer whose input size is unknown.
        scale: The factor the weight is multiplied by in inference
            (`target / sigma_estimate`, capped at 1 with `shrink_only`).
        reshape_sigma: The reshaped sigma of the weight inference runs with
            (about `target_norm`): what the layer's "Lipschitz constant" is
            taken to be by the paper's method.
        operator_sigma: The operator norm of the layer inference runs with,
            its true Lipschitz constant (convolutions: of the convolution at
            `input_shape`; Dense, EinsumDense, Embedding: equal to
            `reshape_sigma`, which is exact for them), or `None` where it is
            not computed (SeparableConv, or an unknown spatial size).
        operator_how: How `operator_sigma` was computed: `"svd"` (a matrix
            layer), `"dense"` (exact, from the dense matrix of the
            convolution) or `"lanczos"` (large inputs; see
            `keras_sn.spectral_norm`), or `None`.
    """

    name: str
    layer_type: str
    method: str
    input_shape: tuple
    sigma_estimate: float
    sigma_exact: float
    scale: float
    reshape_sigma: float
    operator_sigma: float
    operator_how: str


@dataclasses.dataclass(frozen=True)
class Report:
    """`report`'s result: rows and the product bounds; `str()` is a table.

    Attributes:
        rows: One `LayerReport` per wrapped layer, in model order.
        lipschitz_bound: The product of the rows' `operator_sigma`: an upper
            bound on the Lipschitz constant (L2) of a network that chains
            these layers with 1-Lipschitz activations and no other layer with
            a Lipschitz constant above 1; `None` if a row has no
            `operator_sigma`.
        reshape_bound: The product of the rows' `reshape_sigma`, what the
            reshape method would claim (it is not a bound for convolutions).
        unwrapped: Names of the other layers with weights, which neither
            bound covers (e.g. an unwrapped Dense or a BatchNormalization).
    """

    rows: tuple
    lipschitz_bound: float
    reshape_bound: float
    unwrapped: tuple

    def __str__(self):
        header = ("layer", "type", "method", "sigma est.", "sigma exact",
                  "scale", "reshape sigma", "operator sigma")
        lines = [header]
        for row in self.rows:
            operator = (
                "n/a" if row.operator_sigma is None
                else f"{row.operator_sigma:.4f} ({row.operator_how})"
            )
            lines.append((
                row.name, row.layer_type, row.method,
                f"{row.sigma_estimate:.4f}",
                "n/a" if row.sigma_exact is None else f"{row.sigma_exact:.4f}",
                f"{row.scale:.4f}", f"{row.reshape_sigma:.4f}", operator,
            ))
        widths = [max(len(line[i]) for line in lines) for i in range(8)]
        text = [
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths))
            for line in lines
        ]
        text.insert(1, "  ".join("-" * width for width in widths))
        bound = (
            "n/a" if self.lipschitz_bound is None
            else f"{self.lipschitz_bound:.4f}"
        )
        text.append(
            f"Lipschitz bound (product of operator sigmas): {bound}; "
            f"product of reshape sigmas: {self.reshape_bound:.4f}"
        )
        if self.unwrapped:
            text.append(
                "Not covered (unwrapped layers with weights): "
                + ", ".join(self.unwrapped)
            )
        return "\n".join(text)


def _scale(wrapper):
    # The factor(s) inference multiplies the weight(s) by.
    return math.prod(
        float(ops.convert_to_numpy(scale))
        for scale in wrapper.scales.values()
    )


def _row(wrapper):
    layer = wrapper.layer
    input_shape = tuple(wrapper.get_build_config()["input_shape"])
    scale = _scale(wrapper)
    reshape_sigma = exact_norm.spectral_norm(
        wrapper, method="reshape", normalized=True
    )
    sigma_exact = None
    if wrapper.method == "reshape":
        sigma_exact = exact_norm.spectral_norm(wrapper, method="reshape")
    operator_sigma, how = None, None
    try:
        conv_operator.check_supported(layer)
        is_conv = True
    except ValueError:
        is_conv = False
    if is_conv:
        if all(s is not None for s in input_shape[1:]):
            result = exact_norm.operator_norm_of(
                layer, layer.kernel, input_shape
            )
            if wrapper.method == "operator":
                sigma_exact = result.value
            # sigma(s W) = s sigma(W): the operator norm inference runs with.
            operator_sigma, how = result.value * scale, result.how
    elif not isinstance(
        layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
    ):
        operator_sigma, how = reshape_sigma, "svd"
    return LayerReport(
        name=wrapper.name,
        layer_type=type(layer).__name__,
        method=wrapper.method,
        input_shape=input_shape,
        sigma_estimate=float(ops.convert_to_numpy(wrapper.sigma)),
        sigma_exact=sigma_exact,
        scale=scale,
        reshape_sigma=reshape_sigma,
        operator_sigma=operator_sigma,
        operator_how=how,
    )


def report(model):
    """A table of every wrapped layer's sigma and the network's bound.

    For each `SpectralNormalization` in `model` (nested models included): its
    sigma estimate, the exact sigma it estimates (`keras_sn.spectral_norm`),
    the scale inference applies, and the exact norms of the layer inference
    runs with: reshaped, and as an operator (for convolutions at the input
    size the layer was built with, from the built model). The product of the
    operator norms bounds the network's Lipschitz constant under 1-Lipschitz
    activations (see `Report`). It runs eagerly and can take seconds for
    large convolutions (see `keras_sn.spectral_norm`).

    Args:
        model: A built `keras.Model` (or a single wrapper).

    Returns:
        A `Report`; `print(report)` shows the table.

    Example:

    >>> import keras, keras_sn
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)),
    ...     keras_sn.SpectralNormalization(
    ...         keras.layers.Conv2D(4, 3, padding="same"), name="conv"),
    ...     keras.layers.ReLU(),
    ...     keras.layers.Flatten(),
    ...     keras_sn.SpectralNormalization(keras.layers.Dense(1), name="out"),
    ... ])
    >>> result = keras_sn.report(model)
    >>> [row.name for row in result.rows]
    ['conv', 'out']
    >>> round(result.reshape_bound, 3)  # what the reshape method claims
    1.0
    >>> result.lipschitz_bound > 1.2  # the true bound of the conv is larger
    True
    """
    if not isinstance(model, keras.layers.Layer) or not model.built:
        raise ValueError(
            "`keras_sn.report` needs a built Keras model (or layer): give it "
            "an input shape or call it on data first. "
            f"Received: {model!r}"
        )
    wrappers = model_tools.wrapped_layers(model)
    rows = tuple(_row(wrapper) for wrapper in wrappers if wrapper.built)
    covered = {id(w) for wrapper in wrappers for w in wrapper.weights}
    unwrapped = tuple(
        layer.name
        for layer in _leaf_layers(model)
        if layer.weights and not any(id(w) in covered for w in layer.weights)
    )
    if rows and all(row.operator_sigma is not None for row in rows):
        bound = math.prod(row.operator_sigma for row in rows)
    else:
        bound = None if rows else 1.0
    return Report(
        rows=rows,
        lipschitz_bound=bound,
        reshape_bound=math.prod(row.reshape_sigma for row in rows),
        unwrapped=unwrapped,
    )


def _leaf_layers(model):
    for layer in getattr(model, "layers", None) or ():
        if getattr(layer, "layers", None) and not isinstance(
            layer, SpectralNormalization
        ):
            yield from _leaf_layers(layer)
        else:
            yield layer
