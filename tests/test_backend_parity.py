"""The same model from the same weights and u on TensorFlow, JAX and torch.

JAX and torch each run `parity_worker.py` in their own process; the
TensorFlow reference runs the same worker code once, in this process (a
TensorFlow test run: a third process start would only repeat the ~17 s of
imports). Outputs, u and v, gradients and the weights after 3 epochs of
`fit` must agree within float32 tolerance. Runs once, from the TensorFlow
test run.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from backends import BACKEND

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "parity_worker.py")
ROOT = os.path.dirname(os.path.dirname(WORKER))
OTHER_BACKENDS = ["jax", "torch"]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        BACKEND != "tensorflow",
        reason="compares all backends in subprocesses; runs once, from the "
        "TensorFlow run",
    ),
]


def _run(backend, input_path, output_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    subprocess.run(
        [sys.executable, WORKER, backend, str(input_path), str(output_path)],
        check=True, env=env, timeout=600,
    )
    return np.load(output_path)


# The kernel axis of the output units of each wrapped layer of the model.
_OUTPUT_AXES = {"Conv2D": -1, "Conv2DTranspose": -2, "Dense": -1}


def _initial_state(directory):
    # Weights drawn here, not by any backend's initializers. u and v are the
    # exact top singular pair of each kernel's paper matrix (numpy SVD), a
    # consistent state: every backend divides by the same, well-conditioned
    # sigma and the outputs are of order 1, so float32 tolerances apply.
    import parity_worker

    model = parity_worker.build_model()
    rng = np.random.default_rng(0)
    values = {}
    for w in model.weights:
        values[id(w)] = 0.3 * rng.standard_normal(tuple(w.shape))
    for wrapper in model.layers:
        if not hasattr(wrapper, "vector_u"):
            continue
        axis = _OUTPUT_AXES[type(wrapper.layer).__name__]
        kernel = values[id(wrapper.layer.kernel)]
        matrix = np.moveaxis(kernel, axis, 0).reshape(kernel.shape[axis], -1)
        left, _, right = np.linalg.svd(matrix)
        values[id(wrapper.vector_u)] = left[None, :, 0]
        values[id(wrapper.vector_v)] = right[None, 0, :]
    arrays = {
        f"w{i}": values[id(w)].astype("float32")
        for i, w in enumerate(model.weights)
    }
    arrays["x"] = rng.standard_normal((8, 8, 8, 3)).astype("float32")
    arrays["y"] = rng.standard_normal((8, 3)).astype("float32")
    path = directory / "input.npz"
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def tensorflow_reference(tmp_path_factory):
    """The initial state's path and TensorFlow's results on it."""
    import keras

    import parity_worker

    directory = tmp_path_factory.mktemp("parity")
    input_path = _initial_state(directory)
    keras.backend.clear_session()  # weight paths as in a fresh process
    parity_worker.main("tensorflow", input_path, directory / "tensorflow.npz")
    return input_path, np.load(directory / "tensorflow.npz")


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_backend_matches_tensorflow(backend, tensorflow_reference, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.fail(f"{backend} is not installed; `pip install -e .[test,jax,torch]` "
                    "installs it (the parity test is part of the suite)")
    input_path, reference = tensorflow_reference
    other = _run(backend, input_path, tmp_path / f"{backend}.npz")
    assert list(reference["names"]) == list(other["names"])
    # Outputs of order 1 (each layer has sigma 1): float32 sums of up to 100
    # products differ between backends by about 1e-6.
    assert 0.1 < np.abs(reference["inference"]).max() < 10
    np.testing.assert_allclose(other["inference"], reference["inference"],
                               rtol=1e-5, atol=1e-5)
    grads = sorted(k for k in reference.files if k.startswith("grad"))
    assert len(grads) == 6
    for key in grads:
        np.testing.assert_allclose(other[key], reference[key],
                                   rtol=1e-4, atol=1e-5, err_msg=key)
    for i, name in enumerate(reference["names"]):
        np.testing.assert_allclose(
            other[f"trained{i}"], reference[f"trained{i}"],
            rtol=1e-4, atol=1e-5, err_msg=str(name),
        )
    np.testing.assert_allclose(other["trained_inference"],
                               reference["trained_inference"],
                               rtol=1e-4, atol=1e-5)
