"""Scale-out outside TensorFlow: JAX's `keras.distribution.DataParallel` and
PyTorch's `DistributedDataParallel`, each in child processes (the test runs
under any backend; the children pick theirs).

Both train `scale_out_model.build()` (Conv2D, Conv2DTranspose and Dense, all
wrapped) for 8 steps of a global batch of 8 split over two replicas, and
check that u, v and the weights are identical on the replicas and equal to
one process training on the same global batches.

Tolerance against the one-process run: each replica computes the gradient
of its half of the batch and the two are averaged, where the reference
averages the whole batch at once: the same sums in another float32 order.
Seen on a 2-core CPU: at most 1.8e-7 (JAX) and 6e-8 (torch) on any weight,
u or v, i.e. a few float32 ulps of values of order 1 (eps = 1.2e-7).
RTOL, ATOL = 1e-5, 1e-6 leaves ~5x room for other thread counts or BLAS
builds, while the kernels move by ~0.1 over the 8 Adam steps (lr 1e-2;
checked below to move by more than 100 * ATOL): a lost u update, a replica's
power step on other data, or a skipped batch would show far above it.
Between replicas the values must be bit-identical.

The same processes then run docs/distributed.md's two recipes as written
(tests/snippets.py finds them by their markers), after their own check: the
JAX one must print True (u is replicated), the torch one the same u on both
ranks. Running them here, not in fresh processes of their own in
tests/test_docs_snippets.py, saves ~70 s of imports in CI.
"""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import snippets
from backends import child_process_env

pytestmark = [pytest.mark.slow, pytest.mark.integration]

TESTS = pathlib.Path(__file__).resolve().parent
ROOT = TESTS.parent
DEADLINE_S = 180  # each child set, start to finish (~20-40 s on 2 cores)
RTOL, ATOL = 1e-5, 1e-6


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path, lines=40):
    text = pathlib.Path(path).read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def _kill_group(process):
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=30)


def _run(commands, env, directory):
    """Runs `commands` concurrently, each in its own process group, within
    `DEADLINE_S`; fails with their logs unless all exit 0; always kills
    what is left."""
    processes, logs = [], []
    try:
        for index, command in enumerate(commands):
            log = directory / f"child{index}.log"
            logs.append(log)
            with open(log, "wb") as out:
                processes.append(subprocess.Popen(
                    command, env=env, cwd=str(ROOT), stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + DEADLINE_S
        while any(p.poll() is None for p in processes):
            failed = [p for p in processes if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break  # a lone survivor would wait for its peer: stop now
            time.sleep(0.2)
        codes = [p.poll() for p in processes]
        if codes != [0] * len(processes):
            details = "\n".join(
                f"--- child {i} (exit code {code}) ---\n{_tail(log)}"
                for i, (code, log) in enumerate(zip(codes, logs)))
            pytest.fail(f"children did not all finish within {DEADLINE_S} s "
                        f"(None = still running, killed):\n{details}")
    finally:
        for process in processes:
            _kill_group(process)


def _env(backend, **extra):
    env = child_process_env(KERAS_BACKEND=backend, **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env["PYTHONPATH"]])
    env.pop("XLA_FLAGS", None)
    env.update(extra)
    return env


def _check_vectors_present(paths):
    assert sum(p.endswith("/vector_u") for p in paths) == 3, paths
    assert sum(p.endswith("/vector_v") for p in paths) == 3, paths
    assert any("Conv2DTranspose" in p for p in paths), paths


def _recipe(marker, directory):
    """docs/distributed.md's recipe marked `marker`, written to a file."""
    [(name, line, code)] = snippets.marked(marker)
    path = directory / f"{marker}.py"
    path.write_text(code)
    return path


def _recipe_output(path):
    text = path.read_text()
    assert "Traceback" not in text and "False" not in text, text
    return text


def test_jax_data_parallel_keeps_u_v_and_weights_replicated(tmp_path):
    out = tmp_path / "jax.npz"
    recipe = _recipe("jax-2-devices", tmp_path)
    _run([[sys.executable, str(TESTS / "scale_out_jax_child.py"), str(out),
           str(recipe), str(tmp_path / "recipe.txt")]],
         _env("jax", XLA_FLAGS="--xla_force_host_platform_device_count=2",
              JAX_PLATFORMS="cpu"),
         tmp_path)
    arrays = dict(np.load(out))
    paths = sorted(k.split("/", 1)[1] for k in arrays
                   if k.startswith("parallel/"))
    _check_vectors_present(paths)
    for path in paths:
        # Replicated: JAX's sharding says so, and both devices hold the
        # same bits.
        assert int(arrays[f"replicated/{path}"]) == 1, path
        np.testing.assert_array_equal(arrays[f"shard0/{path}"],
                                      arrays[f"shard1/{path}"], err_msg=path)
        np.testing.assert_array_equal(arrays[f"shard0/{path}"],
                                      arrays[f"parallel/{path}"],
                                      err_msg=path)
        np.testing.assert_allclose(arrays[f"parallel/{path}"],
                                   arrays[f"single/{path}"], rtol=RTOL,
                                   atol=ATOL, err_msg=path)
    _assert_trained({p: arrays[f"single/{p}"] for p in paths},
                    {p: arrays[f"initial/{p}"] for p in paths})
    # The documented recipe: u is fully replicated.
    assert _recipe_output(tmp_path / "recipe.txt").split() == ["True"]


def _assert_trained(trained, initial):
    """The runs compared did train: every kernel moved well above the
    tolerance, and u, v are unit vectors."""
    for path, value in trained.items():
        if path.endswith("kernel"):
            assert np.abs(value - initial[path]).max() > 100 * ATOL, path
        if path.endswith("vector_u") or path.endswith("vector_v"):
            norms = np.linalg.norm(value, axis=-1)
            np.testing.assert_allclose(norms, 1.0, rtol=1e-5, err_msg=path)


def test_torch_ddp_keeps_u_v_and_weights_replicated(tmp_path):
    port, recipe_port = _free_port(), _free_port()
    world = 2
    child = str(TESTS / "scale_out_torch_child.py")
    recipe = _recipe("torchrun-2", tmp_path)
    _run([[sys.executable, child, str(rank), str(world), str(port),
           str(tmp_path), str(recipe), str(recipe_port)]
          for rank in range(world)],
         _env("torch", OMP_NUM_THREADS="1"), tmp_path)
    single = dict(np.load(tmp_path / "single.npz"))
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(world)]
    paths = sorted(single)
    _check_vectors_present(paths)
    for path in paths:
        np.testing.assert_array_equal(ranks[0][path], ranks[1][path],
                                      err_msg=path)
        np.testing.assert_allclose(ranks[0][path], single[path], rtol=RTOL,
                                   atol=ATOL, err_msg=path)
    initial = dict(np.load(tmp_path / "initial.npz"))
    _assert_trained(single, initial)
    # The documented recipe: each rank prints its rank and its u, the same.
    printed = [_recipe_output(tmp_path / f"recipe{r}.txt").split(maxsplit=1)
               for r in range(world)]
    assert [p[0] for p in printed] == ["0", "1"], printed
    assert printed[0][1] == printed[1][1] and "tensor" in printed[0][1], printed
