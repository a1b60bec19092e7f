"""Shared test set-up: two logical CPU devices, seeds, a clean dtype policy,
and float64 on JAX for the tests marked `float64`."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import pytest  # noqa: E402

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    # MirroredStrategy tests need two devices; logical devices must be
    # configured before TensorFlow initializes its runtime.
    _cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            _cpus[0],
            [tf.config.LogicalDeviceConfiguration()] * 2,
        )
    except RuntimeError:  # already initialized by an earlier import
        pass

# JAX runs with its default, x64 off, as users run it. Tests marked
# `float64` (float64 layers, finite differences) turn it on for themselves.


@pytest.fixture(autouse=True)
def _seed_and_policy(request):
    from keras_sn import _compat

    keras.utils.set_random_seed(1234)
    keras.config.set_dtype_policy("float32")
    if request.node.get_closest_marker("float64") is not None:
        with _compat.float64_scope():
            yield
    else:
        yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="session")
def digits_cache(tmp_path_factory):
    """One cache for the examples' digits classifier (trained once a session)."""
    return tmp_path_factory.mktemp("digits_classifier")
