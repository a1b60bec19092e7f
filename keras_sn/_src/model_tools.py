"""Whole-model tools: wrap every matching layer (`apply`), bake it out (`strip`).

Both clone the model's architecture with `keras.models.clone_model` (which
handles `Sequential` and functional models, nested ones included) and copy the
weights, so the original model is left untouched.
"""

import keras

from keras_sn import weights as weights_lib
from keras_sn._src import conv_operator
from keras_sn._src.spectral_normalization import SpectralNormalization
from keras_sn._src.weight_normalization import WeightNormalization

# The wrappers `apply` can add and `strip` bakes out.
_WRAPPERS = (SpectralNormalization, WeightNormalization)


def wrapped_layers(model):
    """The `SpectralNormalization` layers of `model`, nested models included.

    In the order of `model.layers` (depth first), each once. `model` may also
    be a single wrapper (a list of itself).

    Example:

    >>> import keras, keras_sn
    >>> model = keras.Sequential([
    ...     keras.Input((3,)),
    ...     keras_sn.SpectralNormalization(keras.layers.Dense(4), name="a"),
    ...     keras.layers.Dense(1, name="b")])
    >>> [layer.name for layer in keras_sn.wrapped_layers(model)]
    ['a']
    """
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(
            "`keras_sn.wrapped_layers` takes a Keras model or layer. "
            f"Received: model={model!r:.80} (of type {type(model).__name__})"
        )
    found, seen = [], set()

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, SpectralNormalization):
            found.append(layer)
            return
        for sublayer in getattr(layer, "layers", None) or ():
            visit(sublayer)

    visit(model)
    return found


def default_predicate(layer):
    """Whether `apply` wraps `layer` by default: a type of `WEIGHT_TABLE`.

    Dense, EinsumDense, the convolution family and Embedding.
    """
    return weights_lib.is_supported_by_default(layer)


def _check_model(model, what):
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`keras_sn.{what}` takes a Keras `Sequential` or functional "
            f"model. Received: model={model!r} (of type "
            f"{type(model).__name__})"
        )
    if not model.built:
        raise ValueError(
            f"`keras_sn.{what}` needs a built model (its weights are copied): "
            "give it an input, e.g. `keras.Sequential([keras.Input((28, 28, "
            "1)), ...])`, or call it on data first. "
            f"Received: model={model.name!r}, built={model.built}"
        )


def _clone(model, clone_function, what):
    try:
        return keras.models.clone_model(
            model, clone_function=clone_function, recursive=True
        )
    except ValueError as error:
        if "only supported for Sequential" in str(error):
            raise ValueError(
                f"`keras_sn.{what}` rebuilds the model's graph, which a "
                f"subclassed model ({type(model).__name__}) does not expose. "
                "Wrap its layers with `keras_sn.SpectralNormalization` where "
                "you build them, or make it a functional model."
            ) from error
        raise


def _plain_clone(layer):
    return layer.__class__.from_config(layer.get_config())


def apply(model, predicate=None, wrapper=SpectralNormalization, **options):
    """A copy of `model` with its matching layers spectrally normalized.

    Every layer for which `predicate(layer)` is true (by default those of the
    types in `keras_sn.weights.WEIGHT_TABLE`: Dense, EinsumDense, the
    convolution family and Embedding) is replaced by
    `wrapper(copy_of_layer, **options)`, named as the layer (so
    `get_layer(name)` finds the wrapper). Layers already wrapped (by either
    wrapper) are copied as they are. All weights are copied from `model`, and
    each new wrapper restarts its state from the copied weights: a
    `SpectralNormalization` re-runs its warm-up, so its sigma (and, with
    `target_norm="initial"`, the captured target) is that of the pretrained
    weights; a `WeightNormalization` sets `g = ||V||` (`reset()`), so the
    copy computes what `model` computes (until a `data_init` training call).
    The copy is not compiled.

    With `method="operator"`, convolution layers get the operator method and
    the other matching layers the reshape one (for Dense and Embedding the
    reshaped sigma is the operator norm).

    Args:
        model: A built `Sequential` or functional `keras.Model`.
        predicate: `None`, or a callable `layer -> bool` choosing the layers
            to wrap (it is called on the layers of nested models too, and
            never on layers already wrapped).
        wrapper: `keras_sn.SpectralNormalization` (default) or
            `keras_sn.WeightNormalization`, the class the layers are
            wrapped in.
        **options: Arguments of `wrapper` (e.g. `power_iterations`,
            `target_norm`, `shrink_only`, `method` for
            `SpectralNormalization`; `data_init` for `WeightNormalization`).

    Returns:
        A new `keras.Model` of the same kind.

    Example:

    >>> import keras, keras_sn
    >>> model = keras.Sequential([
    ...     keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
    ...     keras.layers.Dense(1)])
    >>> wrapped = keras_sn.apply(model, target_norm=2.0)
    >>> [type(layer).__name__ for layer in wrapped.layers]
    ['SpectralNormalization', 'SpectralNormalization']
    >>> wn = keras_sn.apply(model, wrapper=keras_sn.WeightNormalization)
    >>> [type(layer).__name__ for layer in wn.layers]
    ['WeightNormalization', 'WeightNormalization']
    """
    _check_model(model, "apply")
    if not (isinstance(wrapper, type) and issubclass(wrapper, _WRAPPERS)):
        raise ValueError(
            "`wrapper` must be `keras_sn.SpectralNormalization` or "
            "`keras_sn.WeightNormalization` (the class, not an instance). "
            f"Received: wrapper={wrapper!r}"
        )
    if predicate is None:
        predicate = default_predicate
    elif not callable(predicate):
        raise ValueError(
            "`predicate` must be None or a callable `layer -> bool`, e.g. "
            "`lambda layer: isinstance(layer, keras.layers.Conv2D)`. "
            f"Received: predicate={predicate!r}"
        )
    if "name" in options or "layer" in options:
        raise ValueError(
            "`keras_sn.apply` names each wrapper after the layer it wraps; "
            f"`options` are the other arguments of {wrapper.__name__}. "
            f"Received: options={sorted(options)}"
        )
    # Fail on bad options now, with the wrapper's own messages.
    wrapper(keras.layers.Dense(1), **_options_for(wrapper, None, options))
    pairs = []

    def clone_function(layer):
        if isinstance(layer, _WRAPPERS):
            new = type(layer).from_config(layer.get_config())
        elif predicate(layer):
            new = wrapper(
                _plain_clone(layer),
                name=layer.name,
                **_options_for(wrapper, layer, options),
            )
        else:
            new = _plain_clone(layer)
        pairs.append((layer, new))
        return new

    new_model = _clone(model, clone_function, "apply")
    for old, new in pairs:
        if isinstance(new, _WRAPPERS) and not isinstance(old, _WRAPPERS):
            new.layer.set_weights(old.get_weights())
            if isinstance(new, SpectralNormalization):
                new.reestimate(new.warmup_iterations)
            else:
                new.reset()
        else:
            new.set_weights(old.get_weights())
    return new_model


def _options_for(wrapper, layer, options):
    if wrapper is not SpectralNormalization or options.get("method") != (
        "operator"
    ):
        return dict(options)
    try:
        if layer is None:
            raise ValueError
        conv_operator.check_supported(layer)
    except ValueError:
        return {**options, "method": "reshape"}
    return dict(options)


def strip(model):
    """A copy of `model` of plain layers, with the normalization baked in.

    Each `SpectralNormalization` and `WeightNormalization` is replaced by a
    copy of its wrapped layer whose normalized weights hold
    `wrapper.effective_weights()` (`W / sigma`, scaled by `target_norm` /
    `shrink_only`; or `g * V / ||V||` and the data-initialized bias), the
    weights the wrapper runs with in inference; all other weights are copied.
    The result runs without `keras_sn`, its inference outputs equal the
    wrapped model's (up to float rounding), and it exports as a SavedModel,
    converts to TFLite, and can be fine-tuned without normalization.
    PyTorch's `remove_spectral_norm` / `remove_weight_norm`, for whole
    models.

    Args:
        model: A built `Sequential` or functional `keras.Model`.

    Returns:
        A new `keras.Model` of the same kind, not compiled.

    Example:

    >>> import numpy as np, keras, keras_sn
    >>> model = keras.Sequential([
    ...     keras.Input((3,)),
    ...     keras_sn.SpectralNormalization(keras.layers.Dense(2))])
    >>> plain = keras_sn.strip(model)
    >>> type(plain.layers[0]).__name__
    'Dense'
    >>> x = np.ones((1, 3))
    >>> difference = keras.ops.convert_to_numpy(plain(x) - model(x))
    >>> bool(np.abs(difference).max() < 1e-6)
    True
    """
    _check_model(model, "strip")
    pairs = []

    def clone_function(layer):
        if isinstance(layer, _WRAPPERS):
            new = _plain_clone(layer.layer)
        else:
            new = _plain_clone(layer)
        pairs.append((layer, new))
        return new

    new_model = _clone(model, clone_function, "strip")
    for old, new in pairs:
        if isinstance(old, _WRAPPERS):
            # Keys are attribute names of the wrapped layer's variables.
            normalized = {
                id(getattr(old.layer, name)): value
                for name, value in old.effective_weights().items()
            }
            new.set_weights([
                keras.ops.convert_to_numpy(
                    normalized.get(id(variable), variable.value)
                )
                for variable in old.layer.weights
            ])
        else:
            new.set_weights(old.get_weights())
    return new_model
