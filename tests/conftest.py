"""Shared test set-up: two logical CPU devices, seeds, a clean dtype policy,
and float64 on JAX for the tests marked `float64`."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# torch.compile (`jit_compile=True` on torch) compiles in this process: a
# pool of compile workers costs more than it saves on a 2-core machine.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import importlib.util  # noqa: E402

import keras  # noqa: E402
import pytest  # noqa: E402

# Scripts the tests start in child processes, not test modules.
collect_ignore = [
    "crash_resume_child.py", "multi_worker_child.py", "parity_worker.py",
    "scale_out_jax_child.py", "scale_out_torch_child.py",
]
if importlib.util.find_spec("tensorflow") is None:
    # TensorFlow-only modules (tf.distribute, tf.function graphs), skipped on
    # other backends anyway, cannot even be imported without TensorFlow.
    collect_ignore += [
        "gan_step.py", "test_distribute.py", "test_distributed_gan.py",
        "test_gan_tracking.py", "test_graphs.py", "test_multi_worker.py",
    ]

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


@pytest.fixture(autouse=True)
def _torch_compile_per_test(request, monkeypatch):
    """On torch, `jit_compile=True` (`torch.compile`) starts afresh in every
    test, and uses the `aot_eager` backend unless the test is marked
    `inductor`.

    Without the reset, torch.compile recompiles Keras' step function across
    tests, turns its shapes dynamic and, past its recompile limit, silently
    runs later tests' "compiled" steps eagerly. `aot_eager` captures the
    step with Dynamo and AOT autograd, where the wrapper's code is traced,
    without Inductor's C++ code generation (about 30 s a model on 2 cores);
    tests/test_torch_compile.py runs Inductor itself.
    """
    if keras.backend.backend() != "torch":
        yield
        return
    import functools

    import torch

    torch.compiler.reset()
    if request.node.get_closest_marker("inductor") is None:
        monkeypatch.setattr(
            torch, "compile", functools.partial(torch.compile, backend="aot_eager")
        )
    yield
    torch.compiler.reset()


@pytest.fixture(scope="session")
def digits_cache(tmp_path_factory):
    """One cache for the examples' digits classifier (trained once a session)."""
    return tmp_path_factory.mktemp("digits_classifier")
