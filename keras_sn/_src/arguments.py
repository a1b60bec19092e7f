"""Argument checks and dtype helpers shared by the wrapper layers.

`SpectralNormalization` and `WeightNormalization` take the same `layer`,
`epsilon`, `axis` and `weight_name` arguments and keep their state in the same
dtypes; the checks live here once so that both give the same messages.
"""

import contextlib
import numbers

import keras
import numpy as np

# Norms are floored at epsilon in float32 and the layer divides by them:
# 1/epsilon must be finite there (a subnormal epsilon gives 0 * inf = NaN for
# an all-zero weight), and epsilon itself must not round to inf.
EPSILON_MIN = float(np.finfo(np.float32).tiny)
EPSILON_MAX = float(np.finfo(np.float32).max)


def check_layer(layer, wrapper_name, example):
    """Raises unless `layer` is a `keras.layers.Layer` instance."""
    if not isinstance(layer, keras.layers.Layer):
        raise ValueError(
            "`layer` must be a `keras.layers.Layer` instance, e.g. "
            f"`{wrapper_name}({example})`. "
            f"Received: layer={layer!r} (of type {type(layer).__name__})"
        )


def check_epsilon(epsilon, what):
    """Raises unless `epsilon` is a positive, normal float32 number.

    `what` says what it floors, e.g. "the norms and sigma".
    """
    if (
        not isinstance(epsilon, numbers.Real)
        or isinstance(epsilon, bool)
        or not EPSILON_MIN <= epsilon <= EPSILON_MAX  # also NaN
    ):
        raise ValueError(
            f"`epsilon` must be a positive float, the floor of {what} "
            "(default 1e-12), that float32 holds as a normal number "
            f"({EPSILON_MIN:.3g} to {EPSILON_MAX:.3g}): below, 1/epsilon "
            "overflows and an all-zero weight gives NaN. "
            f"Received: epsilon={epsilon!r}"
        )
    return float(epsilon)


def check_axis(axis):
    """`None`, an int or a tuple of ints (lists become tuples), else raises."""
    if axis is None:
        return None
    if isinstance(axis, numbers.Integral) and not isinstance(axis, bool):
        return int(axis)
    if (
        isinstance(axis, (list, tuple))
        and axis
        and all(
            isinstance(a, numbers.Integral) and not isinstance(a, bool)
            for a in axis
        )
    ):
        return tuple(int(a) for a in axis)
    raise ValueError(
        "`axis` must be None, an int or a non-empty tuple of ints naming the "
        "kernel axes that index the layer's output units (e.g. -1 for Dense, "
        f"-2 for Conv2DTranspose). Received: axis={axis!r}"
    )


def check_weight_name(weight_name):
    """`None`, a name or a list of distinct names, else raises."""
    if weight_name is None or (isinstance(weight_name, str) and weight_name):
        return weight_name
    if (
        isinstance(weight_name, (list, tuple))
        and weight_name
        and all(isinstance(n, str) and n for n in weight_name)
        and len(set(weight_name)) == len(weight_name)
    ):
        return list(weight_name)
    raise ValueError(
        "`weight_name` must be None, the attribute name of a weight of the "
        "wrapped layer (e.g. 'kernel') or a list of distinct such names. "
        f"Received: weight_name={weight_name!r}"
    )


def dtype_of(tensor):
    """A tensor's dtype as Keras' string (tf.float32, torch.float32, ...)."""
    return keras.backend.standardize_dtype(tensor.dtype)


def state_dtype(variable_dtype):
    """The dtype of state kept for a weight: never half precision."""
    return "float64" if variable_dtype == "float64" else "float32"


@contextlib.contextmanager
def outside_of_traced_functions():
    """Lifts `build` out of any tf.function being traced (TF backend)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.init_scope():
            yield
    else:
        yield
