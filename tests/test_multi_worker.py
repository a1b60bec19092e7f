"""MultiWorkerMirroredStrategy for real: two worker processes on 127.0.0.1.

Each worker (`multi_worker_child.py`) trains a `fit` model and the GAN of
`gan_step.py` (custom `strategy.run` step) on its half of every global batch;
gradients are all-reduced between the processes over gRPC. The test checks
that both workers end with identical weights, u and v, equal to one process
training the same models on the same global batches.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import gan_step
import multi_worker_child
from backends import child_process_env
from backends import tensorflow_only

pytestmark = [tensorflow_only, pytest.mark.integration]

TESTS = pathlib.Path(__file__).resolve().parent
ROOT = TESTS.parent
WORKERS = 2
DEADLINE_S = 420  # both workers, start to finish; they take ~30 s on 2 cores
CONFIG = {
    "global_batch": 8,
    "epochs": 2,
    "learning_rate": 0.01,
    "collective_timeout_s": 120,
}
FIT_SAMPLES = 32  # 4 global batches per epoch
GAN_STEPS = 3
# Each worker computes its half of a global batch and the gradients are
# summed, where the reference averages the whole batch at once: the same math
# in a different floating-point order (seen: up to 2e-6 on a generator v,
# whose top singular values are close; typically 1e-7). The weights move by
# 1e-2..1e-1, so a lost u update or a skipped batch would show. Between the
# workers: bit-identical.
RTOL, ATOL = 1e-4, 1e-5


def _free_ports(count):
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _worker_env(cluster, index):
    return child_process_env(TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}}
    ))


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


def _run_workers(directory):
    ports = _free_ports(WORKERS)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes, logs = [], []
    try:
        for index in range(WORKERS):
            log = directory / f"worker{index}.log"
            logs.append(log)
            with open(log, "wb") as out:
                processes.append(subprocess.Popen(
                    [sys.executable, str(TESTS / "multi_worker_child.py"),
                     str(directory)],
                    env=_worker_env(cluster, index), cwd=str(ROOT),
                    stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group
                ))
        deadline = time.monotonic() + DEADLINE_S
        while any(p.poll() is None for p in processes):
            failed = [p for p in processes if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break  # a lone survivor would wait for its peer: stop now
            time.sleep(0.2)
        codes = [p.poll() for p in processes]
        if codes != [0] * WORKERS:
            details = "\n".join(
                f"--- worker {i} (exit code {code}) ---\n{_tail(log)}"
                for i, (code, log) in enumerate(zip(codes, logs))
            )
            pytest.fail(
                f"workers did not all finish within {DEADLINE_S} s "
                f"(None = still running, killed):\n{details}"
            )
    finally:
        for process in processes:
            _kill_group(process)
    return [dict(np.load(directory / f"worker{i}.npz"))
            for i in range(WORKERS)]


def _reference(directory):
    """One process, no strategy, same initial weights and global batches."""
    model = multi_worker_child.fit_model()
    gan_step.set_labelled_weights(
        np.load(directory / "fit_initial.npz"), model
    )
    multi_worker_child.compile_fit_model(model, CONFIG)
    multi_worker_child.fit(
        model, np.load(directory / "fit_x.npy"),
        np.load(directory / "fit_y.npy"), CONFIG,
    )
    gan = gan_step.make_gan()
    gan_step.set_labelled_weights(
        np.load(directory / "gan_initial.npz"), *gan[:2]
    )
    gan_step.train_single_device(
        gan, np.load(directory / "gan_real.npy"),
        np.load(directory / "gan_z.npy"), CONFIG["global_batch"],
    )
    return gan_step.labelled_weights(model, *gan[:2])


def _write_inputs(directory):
    model = multi_worker_child.fit_model()
    np.savez(directory / "fit_initial.npz", **gan_step.labelled_weights(model))
    rng = np.random.default_rng(0)
    np.save(directory / "fit_x.npy",
            rng.standard_normal((FIT_SAMPLES, 6, 6, 2)).astype("float32"))
    np.save(directory / "fit_y.npy",
            rng.standard_normal((FIT_SAMPLES, 3)).astype("float32"))
    gan = gan_step.make_gan()
    np.savez(directory / "gan_initial.npz",
             **gan_step.labelled_weights(*gan[:2]))
    real, z = gan_step.gan_data(GAN_STEPS, CONFIG["global_batch"])
    np.save(directory / "gan_real.npy", real)
    np.save(directory / "gan_z.npy", z)
    (directory / "config.json").write_text(json.dumps(CONFIG))


@pytest.mark.slow
def test_two_workers_end_with_identical_weights_and_u_equal_to_one_process(
    tmp_path,
):
    _write_inputs(tmp_path)
    workers = _run_workers(tmp_path)
    expected = _reference(tmp_path)
    initial = {
        **np.load(tmp_path / "fit_initial.npz"),
        **np.load(tmp_path / "gan_initial.npz"),
    }

    for worker in workers:
        # One CPU replica per worker; u and v are mirrored variables that
        # keep the first replica's value.
        assert int(worker.pop("__replicas_in_sync")) == WORKERS
        assert list(worker.pop("__state_aggregation")) == [
            "ONLY_FIRST_REPLICA"]
        assert list(worker.pop("__state_variable_type")) == [
            "MirroredVariable"]
        assert sorted(worker) == sorted(expected)

    state = [label for label in expected
             if label.endswith((":vector_u", ":vector_v"))]
    assert len(state) == 12  # 3 wrappers in the fit model, 3 in the GAN
    for label, value in expected.items():
        np.testing.assert_array_equal(
            workers[0][label], workers[1][label], err_msg=label
        )
        np.testing.assert_allclose(
            workers[0][label], value, rtol=RTOL, atol=ATOL, err_msg=label
        )
        if label in state and value.shape[-1] > 1:  # Dense(1)'s u is [[±1]]
            assert not np.allclose(value, initial[label]), f"{label} unchanged"
