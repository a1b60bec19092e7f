"""The model and data of the scale-out tests (`test_scale_out.py`), shared by
their child processes, which run under the JAX or the PyTorch backend."""

import keras
import numpy as np

import keras_sn

GLOBAL_BATCH = 8
SAMPLES = 32  # 4 global batches per epoch
EPOCHS = 2
LEARNING_RATE = 1e-2


def build(seed=0):
    """A small SN model with every kind of operand: a Conv2D and a Dense
    kernel (`(1, d_in, d_out)`) and a Conv2DTranspose kernel (output axis in
    the middle)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        keras_sn.SpectralNormalization(
            keras.layers.Conv2D(4, 3, padding="same")),
        keras.layers.ReLU(),
        keras_sn.SpectralNormalization(
            keras.layers.Conv2DTranspose(3, 3, strides=2, padding="same")),
        keras.layers.ReLU(),
        keras.layers.Flatten(),
        keras_sn.SpectralNormalization(keras.layers.Dense(2)),
    ])


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((SAMPLES, 8, 8, 3)).astype("float32")
    y = rng.standard_normal((SAMPLES, 2)).astype("float32")
    return x, y


def global_batches():
    """The (x, y) global batches of one epoch, in order."""
    x, y = data()
    return [(x[i:i + GLOBAL_BATCH], y[i:i + GLOBAL_BATCH])
            for i in range(0, SAMPLES, GLOBAL_BATCH)]


def snapshot(model):
    """Every variable of `model` (weights, u, v) as numpy, keyed
    `<layer index>_<wrapped layer class>/<variable name>` (the same in every
    build, unlike Keras' auto-numbered paths)."""
    arrays = {}
    for index, layer in enumerate(model.layers):
        inner = getattr(layer, "layer", layer)
        for variable in layer.variables:
            key = f"{index}_{type(inner).__name__}/{variable.name}"
            assert key not in arrays, key
            arrays[key] = np.array(keras.ops.convert_to_numpy(variable.value))
    return arrays


def run_recipe(recipe, output):
    """Runs the documentation's scale-out recipe (the code in file `recipe`)
    as a script in this process, its printed output to file `output`.

    Keras' session is cleared first, so that layer names, and with them the
    order of a torch module's parameters, which DDP requires to be the same
    on every rank, are those of a fresh process: rank 0 built two more
    models than rank 1 before this."""
    import contextlib

    keras.backend.clear_session()

    with open(recipe) as file:
        code = compile(file.read(), recipe, "exec")
    with open(output, "w") as out, contextlib.redirect_stdout(out):
        exec(code, {"__name__": "__main__"})
