"""What differs between the Keras backends, for the tests."""

import importlib.util
import os
import pathlib

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()

tensorflow_only = pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="TensorFlow-only feature (tf.function, tf.distribute or SavedModel)",
)


# TensorFlow is an extra: the wheel tier runs the unit tests on JAX without it.
HAS_TENSORFLOW = importlib.util.find_spec("tensorflow") is not None

requires_tensorflow = pytest.mark.skipif(
    not HAS_TENSORFLOW,
    reason="writes or reads TensorFlow event files: needs the tensorflow "
    "extra (run on every backend in the tiers that have it)",
)


def to_numpy(x):
    """A numpy copy of a tensor or variable of any backend."""
    if isinstance(x, keras.Variable):
        x = x.value
    return np.array(keras.ops.convert_to_numpy(x))


def gradients(loss_fn, variables):
    """Gradients of `loss_fn()` w.r.t. Keras `variables`, on any backend."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn()
        return [to_numpy(g) for g in tape.gradient(loss, variables)]
    if BACKEND == "jax":
        import jax

        def loss_of(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return loss_fn()

        grads = jax.grad(loss_of)([v.value for v in variables])
        return [to_numpy(g) for g in grads]
    if BACKEND == "torch":
        for variable in variables:
            variable.value.grad = None
        loss_fn().backward()
        return [to_numpy(v.value.grad) for v in variables]
    raise NotImplementedError(BACKEND)


# Keras' torch backend promotes float64 operands to float32 in its ops
# (`keras.backend.result_type` maps 64-bit dtypes to 32-bit outside
# TensorFlow; JAX keeps them once `jax_enable_x64` is on, see conftest).
FLOAT64_IS_EXACT = BACKEND != "torch"

float64_only = pytest.mark.skipif(
    not FLOAT64_IS_EXACT,
    reason="needs float64 arithmetic; Keras' torch backend computes float64 "
    "ops in float32 (keras.backend.result_type), so float64 finite "
    "differences are meaningless there; the backend parity test covers it",
)


def float64_rtol(exact):
    """`exact` where float64 is computed in float64, else a float32 tolerance."""
    return exact if FLOAT64_IS_EXACT else max(exact, 2e-5)


def child_process_env(**overrides):
    """The environment for a TensorFlow child process of a test.

    CPU only, quiet, the TensorFlow backend, and this repository first on
    `PYTHONPATH`; `overrides` (e.g. `TF_CONFIG`) are added last.
    """
    env = dict(os.environ)
    root = str(pathlib.Path(__file__).resolve().parents[1])
    env.update(
        CUDA_VISIBLE_DEVICES="",
        TF_CPP_MIN_LOG_LEVEL="2",
        KERAS_BACKEND="tensorflow",
        PYTHONPATH=os.pathsep.join(
            [root] + [p for p in [env.get("PYTHONPATH")] if p]
        ),
    )
    env.update(overrides)
    return env
