"""Everything that depends on a Keras or TensorFlow version, in one place.

No other module of keras_sn imports `keras.src`, `tensorflow.python` or
`tensorflow.core`. Each shim has a fallback, so a Keras release that moves a
private name degrades one feature (and says so) instead of breaking
`import keras_sn`.
"""

import contextlib
import importlib
import re

import keras

# The oldest releases the test suite runs on (CI's floor job); see setup.cfg.
# Keras 3.3-3.7 run the layer (with the shims below) but keep per-replica
# copies of u and v apart under tf.distribute.MirroredStrategy; 3.8 does not.
KERAS_MIN = (3, 8, 0)
KERAS_MAX_MAJOR = 3
SUPPORTED = "keras>=3.8,<4 (with tensorflow>=2.16, jax>=0.4.30 or torch>=2.1)"


def _version_tuple(version):
    numbers = re.findall(r"\d+", version)[:3]
    return tuple(int(n) for n in numbers + ["0"] * (3 - len(numbers)))


def check_keras_version(version=None):
    """Raises an `ImportError` naming the supported range for another Keras."""
    version = keras.__version__ if version is None else version
    found = _version_tuple(version)
    if found < KERAS_MIN or found[0] > KERAS_MAX_MAJOR:
        raise ImportError(
            f"keras_sn supports {SUPPORTED}. Found keras=={version}. "
            "Install a supported release, e.g. `pip install -U 'keras>=3.8,<4'`."
        )


def _import_optional(path, name):
    try:
        return getattr(importlib.import_module(path), name)
    except (ImportError, AttributeError):
        return None


_get_stateless_scope = (
    _import_optional("keras.src.backend.common.stateless_scope",
                     "get_stateless_scope")
    or _import_optional("keras.src.backend", "get_stateless_scope")
)


def get_stateless_scope():
    """The `keras.StatelessScope` in effect, or `None`.

    Keras exports the scope but not the getter; the wrapper needs it so that
    its own substitution scope carries the outer scope's values (the JAX
    trainer and `Layer.stateless_call` run models inside their own). Without
    the getter (a Keras that moved it) this returns `None`: eager and
    TensorFlow/torch training are unaffected, JAX's stateless calls would see
    the wrapped layer's stored values instead of the traced ones.
    """
    if _get_stateless_scope is None:
        return None
    return _get_stateless_scope()


def in_stateless_scope():
    return get_stateless_scope() is not None


_control_flow_util = None


def tf_graph_in_xla_context():
    """Whether TensorFlow is tracing a graph for `jit_compile=True`.

    Reads TensorFlow's private marker; `False` where it is missing (the
    caller's generic forms are never wrong, only slower).
    """
    global _control_flow_util
    try:
        import tensorflow as tf

        if _control_flow_util is None:
            _control_flow_util = importlib.import_module(
                "tensorflow.python.ops.control_flow_util"
            )
        graph = tf.compat.v1.get_default_graph()
        return bool(_control_flow_util.GraphOrParentsInXlaContext(graph))
    except (ImportError, AttributeError):
        return False


def require_tensorflow(feature):
    """`import tensorflow`, or an `ImportError` that names the extra."""
    try:
        import tensorflow
    except ImportError as error:
        raise ImportError(
            f"{feature} needs TensorFlow, which is not installed. Install it "
            "with `pip install 'keras-sn[tensorflow]'` (or `pip install "
            "tensorflow`)."
        ) from error
    return tensorflow


# Keras < 3.7: `keras.Variable` is a subclass (keras/src/backend/exports.py)
# that layers never instantiate; their variables derive from `KerasVariable`
# (renamed `Variable` in 3.7, when it became `keras.Variable`). On newer Keras
# the import fails and the check is `keras.Variable` alone.
_VARIABLE_TYPES = tuple(
    {
        keras.Variable,
        _import_optional("keras.src.backend.common.variables", "KerasVariable")
        or keras.Variable,
    }
)


def is_variable(value):
    """Whether `value` is a Keras variable (any backend, any Keras 3)."""
    return isinstance(value, _VARIABLE_TYPES)


def mark_wrapper_unbuilt(wrapper):
    """Undoes the `built = True` that `Wrapper.build` sets on Keras < 3.10.

    The wrapper sets `built` itself once all of its state exists, so a build
    that fails half-way leaves it unbuilt; a no-op on newer Keras.
    """
    wrapper.built = False


def float64_scope():
    """A context in which float64 tensors are float64 (JAX: x64 enabled).

    JAX computes float64 requests in float32 unless `jax_enable_x64` is on;
    the eager analysis (`keras_sn.spectral_norm`, the warm-up of the
    operator method) runs in this scope so that it is float64 everywhere.
    """
    if keras.backend.backend() != "jax":
        return contextlib.nullcontext()
    import jax

    enable_x64 = getattr(jax, "enable_x64", None)
    if enable_x64 is None:  # jax < 0.6
        from jax.experimental import enable_x64
        return enable_x64()
    return enable_x64(True)
