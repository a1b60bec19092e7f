"""Kill a training process with SIGKILL mid-epoch, restart it, lose nothing.

Every run is a process of `crash_resume_child.py` (CPU, seeded, op
determinism on); the comparisons are exact (bit-identical float32). The runs
are started in two waves:

1. two training runs with `keras.callbacks.BackupAndRestore` that the test
   SIGKILLs when they report that they are in the middle of epoch 2: one
   that backs up each epoch, one every 4 batches (in parallel);
2. one new process that runs, in turn, the uninterrupted reference (and the
   other references), the restarts of both killed runs, a restart from a
   copy of the epoch backup whose latest file was torn (as by a kill during
   the write), and a load of a `.keras` file saved after 2 of the 4 epochs
   that trains the other 2. One process, not one per run: each start costs
   about 17 s of CPU in imports, and none of these runs shares state with
   another (each builds its model from the seed; the killed runs' state
   exists only on disk).
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from backends import child_process_env
from backends import tensorflow_only

# The children run TensorFlow with op determinism, whatever the backend.
pytestmark = [tensorflow_only, pytest.mark.integration]

TESTS = pathlib.Path(__file__).resolve().parent
ROOT = TESTS.parent
STEPS_PER_EPOCH = 6
CONFIG = {
    "seed": 7,
    "batch_size": 8,
    "steps_per_epoch": STEPS_PER_EPOCH,
    "epochs": 4,
    "save_freq": {"epoch_backup": "epoch", "torn_backup": "epoch",
                  "step_backup": 4},
    # The step backup is written after 4, 8, 12 and 16 batches: the last one
    # before the kill (after 17) is epoch 2, batch 3.
    "replay_from": [2, 3],
    "keras_split_epochs": 2,
}
KILL_AT = (2, 4)  # (epoch, batch), 0-based: batch 16 of 24 has just ended
WAVE_TIMEOUT_S = 300


class _Child:
    """A `crash_resume_child.py` process in its own process group."""

    def __init__(self, name, mode, directory, *args):
        self.name, self.directory = name, directory
        self.log = directory / f"{name}.log"
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(TESTS / "crash_resume_child.py"),
                 mode, str(directory), *map(str, args)],
                env=child_process_env(), cwd=str(ROOT), stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )

    def tail(self, lines=30):
        text = self.log.read_text(errors="replace").splitlines()
        return f"--- {self.name} ---\n" + "\n".join(text[-lines:])

    def kill(self):
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.process.wait(timeout=30)


def _wait(children, deadline):
    while any(c.process.poll() is None for c in children):
        if time.monotonic() > deadline:
            pytest.fail(
                "children still running after the deadline:\n"
                + "\n".join(c.tail() for c in children)
            )
        time.sleep(0.2)
    failed = [c for c in children if c.process.returncode != 0]
    if failed:
        pytest.fail("children failed:\n" + "\n".join(c.tail() for c in failed))


def _kill_when_paused(child, deadline):
    marker = child.directory / "paused"
    while not marker.exists():
        if child.process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{child.name} never reached the kill point:\n"
                        f"{child.tail()}")
        time.sleep(0.1)
    marker.unlink()
    code = child.kill()
    assert code == -signal.SIGKILL, child.tail()


def _load(path):
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files)]  # keys start with the index


def _assert_identical(actual, expected, what):
    assert len(actual) == len(expected), what
    for index, (a, e) in enumerate(zip(actual, expected)):
        np.testing.assert_array_equal(
            a, e, err_msg=f"{what}: variable {index}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs both waves once; the tests below read their results."""
    base = tmp_path_factory.mktemp("crash_resume")
    (base / "config.json").write_text(json.dumps(CONFIG))
    # One directory per killed run: each has its own `paused` marker.
    for name in ("epoch", "step"):
        (base / name).mkdir()
        (base / name / "config.json").write_text(json.dumps(CONFIG))
    children = []  # every process started, to be killed if still running

    def start(*args):
        children.append(_Child(*args))
        return children[-1]

    try:
        deadline = time.monotonic() + WAVE_TIMEOUT_S
        epoch_run = start("epoch_killed", "train", base / "epoch",
                          base / "epoch" / "epoch_backup", *KILL_AT)
        step_run = start("step_killed", "train", base / "step",
                         base / "step" / "step_backup", *KILL_AT)
        _kill_when_paused(epoch_run, deadline)
        _kill_when_paused(step_run, deadline)

        # A kill during the write leaves a torn file; keep the previous one.
        shutil.copytree(base / "epoch" / "epoch_backup",
                        base / "epoch" / "torn_backup")
        latest = base / "epoch" / "torn_backup" / "latest.weights.h5"
        latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 3])
        backups = {
            name: json.loads((base / "epoch" / name /
                              "training_metadata.json").read_text())
            for name in ("epoch_backup", "torn_backup")
        }
        backups["step_backup"] = json.loads(
            (base / "step" / "step_backup" / "training_metadata.json")
            .read_text()
        )

        runs = [
            ["reference", base],
            ["train", base / "epoch", base / "epoch" / "epoch_backup"],
            ["train", base / "epoch", base / "epoch" / "torn_backup"],
            ["train", base / "step", base / "step" / "step_backup"],
            ["continue", base],  # after "reference", which saves the file
        ]
        deadline = time.monotonic() + WAVE_TIMEOUT_S
        _wait([start("after_the_kills", "sequence", base,
                     json.dumps([[str(a) for a in r] for r in runs]))],
              deadline)
    finally:
        for child in children:
            child.kill()
    return base, backups


def _trained(directory, name):
    return json.loads((directory / f"{name}.json").read_text())["trained"]


def _all_batches(from_epoch):
    return [[e, b] for e in range(from_epoch, CONFIG["epochs"])
            for b in range(STEPS_PER_EPOCH)]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_restart_equals_uninterrupted_run(runs):
    base, backups = runs
    # Killed in epoch 2: the last backup is the end of epoch 1.
    assert backups["epoch_backup"]["epoch"] == 2
    # The restart trained epochs 2 and 3 only: it did resume from the backup.
    assert _trained(base / "epoch", "epoch_backup") == _all_batches(2)
    _assert_identical(
        _load(base / "epoch" / "epoch_backup.npz"),
        _load(base / "reference.npz"),
        "resumed run vs uninterrupted run",
    )


@pytest.mark.slow
def test_torn_latest_backup_falls_back_to_previous_and_still_matches(runs):
    base, _ = runs
    # BackupAndRestore(double_checkpoint=True) could not read the torn
    # latest file and restored the previous one (end of epoch 0).
    assert _trained(base / "epoch", "torn_backup") == _all_batches(1)
    _assert_identical(
        _load(base / "epoch" / "torn_backup.npz"),
        _load(base / "reference.npz"),
        "run resumed from the previous backup vs uninterrupted run",
    )


@pytest.mark.slow
def test_step_backup_restores_mid_epoch_state_exactly_but_keras_reruns_epoch(
    runs,
):
    """Keras 3.15's `BackupAndRestore` resumes at an epoch boundary only.

    A backup taken after batch 3 of epoch 2 records `{"epoch": 2, "batch": 3}`
    but the restart ignores the batch: it restores those weights (u and v
    included, exactly) and then trains epoch 2 again from its first batch, so
    batches 0-3 of epoch 2 are applied twice and the result differs from the
    uninterrupted run. The "replay" reference trains exactly that schedule.
    If this test fails because the resumed run equals the uninterrupted one,
    Keras has learned to resume mid-epoch: make this test assert that.
    """
    base, backups = runs
    assert backups["step_backup"] == {"epoch": 2, "batch": 3}
    assert _trained(base / "step", "step_backup") == _all_batches(2)
    resumed = _load(base / "step" / "step_backup.npz")
    _assert_identical(resumed, _load(base / "replay.npz"),
                      "resumed run vs the replay schedule")
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(resumed, _load(base / "reference.npz"))
    ), "Keras now resumes mid-epoch exactly; update this test and docs/distributed.md"


@pytest.mark.slow
def test_keras_file_saved_between_epochs_continues_identically_in_new_process(
    runs,
):
    base, _ = runs
    _assert_identical(
        _load(base / "continued.npz"), _load(base / "reference.npz"),
        ".keras saved after 12 steps, loaded in a new process, 12 more steps "
        "vs 24 straight steps",
    )
