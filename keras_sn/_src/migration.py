"""Bring models trained with `keras.layers.SpectralNormalization` over.

Keras' built-in wrapper writes `W / sigma` into the wrapped layer's kernel on
every training call and runs inference on the stored kernel as it is. The
converted model therefore wraps a copy of each inner layer, holding that
stored kernel, in `keras_sn.SpectralNormalization(target_norm="initial")`:
the sigma of the stored kernel is captured as the target, so the layer runs
with `W * sigma_initial / sigma = W` and gives the same outputs, and further
training keeps each layer's spectral norm at that value (about 1 after
training with the built-in) without writing the kernel again.
"""

import keras

from keras_sn._src import model_tools
from keras_sn._src.spectral_normalization import SpectralNormalization


def from_builtin(model, **options):
    """A copy of `model` with Keras' built-in spectral normalization replaced.

    Every `keras.layers.SpectralNormalization` of `model` (nested models
    included) becomes a `keras_sn.SpectralNormalization` of the same name
    around a copy of its inner layer, with the trained weights; every other
    layer is copied with its weights. The built-in wrapper runs inference on
    its stored kernel as it is, so by default each new wrapper uses
    `target_norm="initial"`: the sigma of the stored kernel is captured as
    the target when the copy is made, the layer runs with
    `W * sigma_initial / sigma`, which is `W` itself, and the copy's
    inference outputs equal the original's (to float32 rounding). Training
    then goes on with the kernel never overwritten: the optimizer updates the
    raw `W`, whose gradient carries the paper's sigma term, and each layer's
    spectral norm is held at its captured value (close to 1 after training
    with the built-in). The built-in's `power_iterations` are kept; its
    `vector_u` is not carried over (each wrapper re-runs its warm-up on the
    trained kernel, which is more accurate). The copy is not compiled.

    Differences that remain, all on the built-in's side: it casts outputs to
    the input dtype (an `Embedding` on integer ids returned integers; the
    copy returns floats), and it read every kernel's last axis as the output
    axis (the copy uses the table's axis, e.g. -2 for `Conv*Transpose`; the
    captured target keeps the outputs the same).

    Args:
        model: A built `Sequential` or functional `keras.Model`.
        **options: Other arguments of `SpectralNormalization` for the new
            wrappers, e.g. `target_norm=1.0` to normalize to exactly 1 from
            now on (the outputs then change by each layer's
            `1 / sigma_stored`) or `power_iterations=`.

    Returns:
        A new `keras.Model` of the same kind, not compiled.

    Example:

    >>> import numpy as np, keras, keras_sn
    >>> old = keras.Sequential([
    ...     keras.Input((3,)),
    ...     keras.layers.SpectralNormalization(keras.layers.Dense(2))])
    >>> new = keras_sn.from_builtin(old)
    >>> type(new.layers[0]).__module__.split(".")[0]
    'keras_sn'
    >>> x = np.ones((1, 3))
    >>> difference = keras.ops.convert_to_numpy(new(x) - old(x))
    >>> bool(np.abs(difference).max() < 1e-5)
    True
    """
    model_tools._check_model(model, "from_builtin")
    if "name" in options or "layer" in options:
        raise ValueError(
            "`keras_sn.from_builtin` names each wrapper after the one it "
            "replaces; `options` are the other arguments of "
            f"SpectralNormalization. Received: options={sorted(options)}"
        )
    options = {"target_norm": "initial", **options}
    # Fail on bad options now, with the wrapper's own messages.
    SpectralNormalization(keras.layers.Dense(1), **options)
    pairs = []

    def clone_function(layer):
        if isinstance(layer, keras.layers.SpectralNormalization):
            new = SpectralNormalization(
                model_tools._plain_clone(layer.layer),
                name=layer.name,
                **{"power_iterations": layer.power_iterations, **options},
            )
        elif isinstance(layer, SpectralNormalization):
            new = SpectralNormalization.from_config(layer.get_config())
        else:
            new = model_tools._plain_clone(layer)
        pairs.append((layer, new))
        return new

    new_model = model_tools._clone(model, clone_function, "from_builtin")
    for old, new in pairs:
        if isinstance(old, keras.layers.SpectralNormalization):
            new.layer.set_weights(old.layer.get_weights())
            new.reestimate(new.warmup_iterations)
        else:
            new.set_weights(old.get_weights())
    return new_model
