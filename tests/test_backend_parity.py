"""The same model from the same weights and u on TensorFlow, JAX and torch.

Each backend runs in its own process (`parity_worker.py`); outputs, u and v,
gradients and the weights after 3 epochs of `fit` must agree within float32
tolerance. Runs once, from the TensorFlow test run.
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


def _initial_state(tmp_path):
    # Weights drawn here, not by any backend's initializers; u and v random
    # unit rows, far from converged, so the power steps matter.
    import parity_worker

    model = parity_worker.build_model()
    rng = np.random.default_rng(0)
    arrays = {}
    for i, w in enumerate(model.weights):
        value = rng.standard_normal(tuple(w.shape)).astype("float32")
        if "vector_" in w.path:
            value /= np.linalg.norm(value, axis=-1, keepdims=True)
        else:
            value *= 0.3
        arrays[f"w{i}"] = value
    arrays["x"] = rng.standard_normal((8, 8, 8, 3)).astype("float32")
    arrays["y"] = rng.standard_normal((8, 3)).astype("float32")
    path = tmp_path / "input.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_backend_matches_tensorflow(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.fail(f"{backend} is not installed; `pip install -e .[test,jax,torch]` "
                    "installs it (the parity test is part of the suite)")
    input_path = _initial_state(tmp_path)
    reference = _run("tensorflow", input_path, tmp_path / "tensorflow.npz")
    other = _run(backend, input_path, tmp_path / f"{backend}.npz")
    assert list(reference["names"]) == list(other["names"])
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
