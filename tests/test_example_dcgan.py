"""Tests of examples/dcgan.py: the models, the train step, data, eval, CLI.

The end-to-end smoke test runs the README's command on a tiny configuration
in a subprocess (XLA, export, reload, --eval) and checks every output.
"""

import csv
import importlib.util
import json
import math
import os
import pathlib
import socket
import subprocess
import sys
import urllib.error

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_sn

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "dcgan.py"

# The example uses tf.data, tf.GradientTape and SavedModel export.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        keras.backend.backend() != "tensorflow",
        reason="examples/dcgan.py needs the TensorFlow backend",
    ),
]


@pytest.fixture(scope="module")
def dcgan():
    spec = importlib.util.spec_from_file_location("dcgan_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------
# The paper's settings, models and losses
# --------------------------------------------------------------------------


def test_settings_are_the_papers_table_1(dcgan):
    # Miyato et al. 2018, Table 1: (alpha, beta_1, beta_2, n_dis).
    table = {
        "A": (0.0001, 0.5, 0.9, 5),
        "B": (0.0001, 0.5, 0.999, 1),
        "C": (0.0002, 0.5, 0.999, 1),
        "D": (0.001, 0.5, 0.9, 5),
        "E": (0.001, 0.5, 0.999, 5),
        "F": (0.001, 0.9, 0.999, 5),
    }
    got = {
        name: (s.learning_rate, s.beta_1, s.beta_2, s.n_dis)
        for name, s in dcgan.SETTINGS.items()
    }
    assert got == table
    assert dcgan.PAPER_SETTING == "B"  # the paper's footnote 4
    assert dcgan.DEFAULT_SETTING in dcgan.SETTINGS


@pytest.mark.parametrize("spectral_norm", [True, False], ids=["sn", "no_sn"])
def test_discriminator_is_table_3_standard_cnn(dcgan, spectral_norm):
    model = dcgan.build_discriminator(
        32, 3, width=1.0, spectral_norm=spectral_norm
    )
    wrapped = [
        layer for layer in model.layers
        if isinstance(layer, keras_sn.SpectralNormalization)
    ]
    inner = [
        layer.layer if isinstance(layer, keras_sn.SpectralNormalization)
        else layer
        for layer in model.layers
    ]
    convs = [layer for layer in inner if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.kernel_size[0], c.strides[0], c.filters) for c in convs] == [
        (3, 1, 64), (4, 2, 64), (3, 1, 128), (4, 2, 128),
        (3, 1, 256), (4, 2, 256), (3, 1, 512),
    ]
    dense = [layer for layer in inner if isinstance(layer, keras.layers.Dense)]
    assert len(dense) == 1 and dense[0].units == 1
    slopes = {
        float(layer.negative_slope) for layer in model.layers
        if isinstance(layer, keras.layers.LeakyReLU)
    }
    assert slopes == {0.1}
    # Every conv and the dense layer wrapped, or none.
    assert len(wrapped) == (8 if spectral_norm else 0)
    assert model.output_shape == (None, 1)


@pytest.mark.parametrize("image_size,mg", [(16, 2), (32, 4), (48, 6)])
def test_generator_mg_adapts_to_the_image_size(dcgan, image_size, mg):
    model = dcgan.build_generator(image_size, 3, width=0.125)
    reshape = model.get_layer("reshape")
    assert reshape.output.shape[1:3] == (mg, mg)
    assert model.input_shape == (None, 128)
    assert model.output_shape == (None, image_size, image_size, 3)
    deconvs = [
        layer for layer in model.layers
        if isinstance(layer, keras.layers.Conv2DTranspose)
    ]
    assert [(d.kernel_size[0], d.strides[0], d.filters) for d in deconvs] == [
        (4, 2, 32), (4, 2, 16), (4, 2, 8),
    ]
    images = model(np.random.normal(size=(4, 128)).astype("float32"))
    assert np.all(np.abs(np.asarray(images)) <= 1.0)  # tanh


def test_full_width_generator_is_table_3(dcgan):
    model = dcgan.build_generator(32, 3, width=1.0)
    assert model.get_layer("dense").units == 4 * 4 * 512
    assert [model.get_layer(f"deconv{i}").filters for i in (1, 2, 3)] == [
        256, 128, 64,
    ]
    assert model.get_layer("images").kernel_size == (3, 3)


@pytest.mark.parametrize("image_size", [0, 12, 20, 7])
def test_image_size_must_be_a_multiple_of_8(dcgan, image_size):
    with pytest.raises(ValueError, match="multiple of 8.*Received: image_size"):
        dcgan.build_generator(image_size, 1)


def test_hinge_losses_are_eq_16_and_17(dcgan):
    real = np.array([2.0, 0.5, -1.0], "float32")
    fake = np.array([-2.0, 0.0, 1.5], "float32")
    # E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]
    expected_d = np.mean([0.0, 0.5, 2.0]) + np.mean([0.0, 1.0, 2.5])
    assert float(dcgan.discriminator_hinge_loss(real, fake)) == pytest.approx(
        expected_d
    )
    assert float(dcgan.generator_hinge_loss(fake)) == pytest.approx(
        -np.mean(fake)
    )


@pytest.mark.slow
@pytest.mark.parametrize("spectral_norm", [True, False], ids=["sn", "no_sn"])
def test_one_train_step_is_n_dis_discriminator_updates(dcgan, spectral_norm):
    n_dis, batch = 3, 4
    generator = dcgan.build_generator(16, 1, width=0.0625)
    discriminator = dcgan.build_discriminator(
        16, 1, width=0.0625, spectral_norm=spectral_norm
    )
    gan = dcgan.SNGAN(generator, discriminator, n_dis=n_dis)
    gan.compile(
        d_optimizer=keras.optimizers.Adam(1e-3),
        g_optimizer=keras.optimizers.Adam(1e-3),
        jit_compile=False,
    )
    d_before = [np.array(v) for v in discriminator.trainable_variables]
    g_before = [np.array(v) for v in generator.trainable_variables]
    # The power iteration ran: v moved in every layer (u of the final
    # Dense(1) is the 1-vector [1] forever).
    v_before = [
        np.array(layer.vector_v) for layer in discriminator.layers
        if isinstance(layer, keras_sn.SpectralNormalization)
    ]
    real = np.random.uniform(-1, 1, (n_dis * batch, 16, 16, 1)).astype("float32")
    logs = gan.train_on_batch(real, return_dict=True)
    assert set(logs) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(math.isfinite(v) for v in logs.values())
    assert int(gan.d_optimizer.iterations) == n_dis
    assert int(gan.g_optimizer.iterations) == 1
    # Every kernel moved. (The last bias may not: with both batches inside
    # the hinge margin, its gradient is mean(-1) + mean(+1) = 0.)
    assert all(
        not np.array_equal(a, np.array(b))
        for a, b in zip(d_before, discriminator.trainable_variables)
        if b.path.endswith("kernel")
    )
    assert any(
        not np.array_equal(a, np.array(b))
        for a, b in zip(g_before, generator.trainable_variables)
    )
    v_after = [
        np.array(layer.vector_v) for layer in discriminator.layers
        if isinstance(layer, keras_sn.SpectralNormalization)
    ]
    assert len(v_after) == (8 if spectral_norm else 0)
    assert all(not np.array_equal(a, b) for a, b in zip(v_before, v_after))


def test_kernel_sigmas_are_exact_and_sn_bound_is_about_one(dcgan):
    discriminator = dcgan.build_discriminator(16, 1, width=0.125)
    sigmas = dcgan.kernel_sigmas(discriminator)
    assert list(sigmas) == [f"conv{i}" for i in range(1, 8)] + ["dense"]
    conv = discriminator.get_layer("sn_conv3").layer
    matrix = np.asarray(conv.kernel).reshape(-1, conv.filters)
    exact = np.linalg.svd(matrix, compute_uv=False)[0]
    assert sigmas["conv3"][0] == pytest.approx(exact, rel=1e-5)
    # After the wrapper's warm-up, W / sigma_hat has sigma 1 for every layer.
    for _, effective in sigmas.values():
        assert effective == pytest.approx(1.0, abs=1e-3)


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def test_digits_are_upsampled_to_minus_one_one(dcgan):
    data, channels, count = dcgan.make_dataset(
        dataset="digits", image_size=16, batch_size=32
    )
    batch = next(iter(data))
    assert (count, channels) == (1797, 1)
    assert batch.shape == (32, 16, 16, 1) and batch.dtype == tf.float32
    assert float(tf.reduce_min(batch)) >= -1.0
    assert float(tf.reduce_max(batch)) <= 1.0
    assert float(tf.reduce_max(batch)) > 0.9  # ink reaches the top


@pytest.mark.parametrize(
    "color_mode,channels", [("grayscale", 1), ("rgb", 3)]
)
def test_data_dir_reads_a_folder_of_pngs(dcgan, tmp_path, color_mode, channels):
    rng = np.random.default_rng(0)
    for index in range(5):
        folder = tmp_path / ("a" if index % 2 else "b")  # subfolders too
        folder.mkdir(exist_ok=True)
        keras.utils.save_img(
            str(folder / f"{index}.png"),
            rng.integers(0, 256, (20, 24, 3)).astype("uint8"),
            scale=False,
        )
    data, got_channels, count = dcgan.make_dataset(
        data_dir=str(tmp_path), color_mode=color_mode, image_size=8,
        batch_size=4,
    )
    assert (count, got_channels) == (5, channels)
    batch = next(iter(data))
    assert batch.shape == (4, 8, 8, channels)
    assert -1.0 <= float(tf.reduce_min(batch)) < float(tf.reduce_max(batch)) <= 1.0


def test_data_dir_missing_says_what_to_do(dcgan, tmp_path):
    with pytest.raises(dcgan.DataError, match="does not exist. Pass a folder"):
        dcgan.make_dataset(data_dir=str(tmp_path / "nope"), image_size=8)


def test_data_dir_that_is_a_file_says_what_to_do(dcgan, tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(b"")
    with pytest.raises(dcgan.DataError, match="is a file, not a folder"):
        dcgan.make_dataset(data_dir=str(path), image_size=8)


def test_empty_data_dir_says_what_to_do(dcgan, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(dcgan.DataError, match="No images found.*Put .png"):
        dcgan.make_dataset(data_dir=str(tmp_path), image_size=8)


def test_broken_image_in_data_dir_says_which_and_what_to_do(dcgan, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"this is not a png")
    keras.utils.save_img(
        str(tmp_path / "good.png"), np.zeros((4, 4, 3), "uint8"), scale=False
    )
    with pytest.raises(dcgan.DataError) as info:
        dcgan.make_dataset(data_dir=str(tmp_path), image_size=8)
    message = str(info.value)
    assert "broken.png" in message and "good.png" not in message
    assert "Could not decode" in message and "Remove or fix" in message


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist", "cifar10"])
def test_offline_download_says_what_to_do(dcgan, dataset, tmp_path, monkeypatch):
    # Keras' own download path with no network: an empty cache and a DNS
    # failure in urlretrieve, as on a machine without internet.
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError(
            socket.gaierror(-3, "Temporary failure in name resolution")
        )

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    monkeypatch.setattr(file_utils.config, "keras_home", lambda: str(tmp_path))
    with pytest.raises(dcgan.DataError) as info:
        dcgan.make_dataset(dataset=dataset, image_size=32)
    message = str(info.value)
    assert f"Could not load --dataset {dataset}" in message
    assert "needs a network connection" in message
    assert "URL fetch failure" in message  # Keras' own error is kept
    assert "--dataset digits" in message and "--data-dir" in message


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------


def test_frechet_distance_known_answers(dcgan):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 4))
    cov = np.cov(a, rowvar=False)
    mu = a.mean(axis=0)
    assert dcgan.frechet_distance(mu, cov, mu, cov) == pytest.approx(0, abs=1e-8)
    shift = np.array([1.0, 2.0, 0.0, -2.0])
    assert dcgan.frechet_distance(mu + shift, cov, mu, cov) == pytest.approx(9.0)
    # Diagonal covariances: sum of (sqrt(a) - sqrt(b))^2.
    d1, d2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2)
    assert dcgan.frechet_distance(
        np.zeros(3), np.diag(d1), np.zeros(3), np.diag(d2)
    ) == pytest.approx(expected)


def test_kl_from_uniform(dcgan):
    assert dcgan.kl_from_uniform(np.arange(100) % 10) == pytest.approx(0.0)
    assert dcgan.kl_from_uniform(np.full(100, 3)) == pytest.approx(math.log(10))
    half = np.array([0] * 50 + [1] * 50)
    assert dcgan.kl_from_uniform(half) == pytest.approx(math.log(5))


def test_eval_is_for_the_bundled_digits_only(dcgan):
    with pytest.raises(ValueError, match="digits only.*Received: dataset='mnist'"):
        dcgan.train(dataset="mnist", evaluate=True)


def test_image_grid_tiles_row_major(dcgan):
    images = np.stack([np.full((2, 3, 1), v, "float32") for v in (-1, 0, 1)])
    grid = dcgan.image_grid(images, columns=2)
    assert grid.shape == (4, 6, 1) and grid.dtype == np.uint8
    assert grid[0, 0, 0] == 0 and grid[0, 3, 0] == 128 and grid[2, 0, 0] == 255
    assert grid[2, 3, 0] == 0  # the empty cell is black (-1)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def test_help_explains_every_flag(dcgan, capsys):
    parser = dcgan.make_parser()
    for action in parser._actions:
        assert action.help and len(action.help) > 15, action.dest
    with pytest.raises(SystemExit) as info:
        dcgan.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--dataset", "--data-dir", "--color-mode", "--image-size", "--width",
        "--setting", "--no-sn", "--epochs", "--steps-per-epoch",
        "--batch-size", "--no-jit", "--seed", "--out", "--eval", "--cache-dir",
    ):
        assert flag in text


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--data-dir", "/no/such/folder"], "does not exist"),
        (["--dataset", "mnist", "--data-dir", "x"], "either --dataset or"),
        (["--image-size", "20"], "multiple of 8"),
        (["--width", "0"], "`width` must be positive"),
        (["--dataset", "cifar10", "--eval"], "digits only"),
    ],
    ids=["missing_dir", "both_sources", "image_size", "width", "eval"],
)
def test_cli_errors_exit_2_with_a_message(dcgan, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        dcgan.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


# --------------------------------------------------------------------------
# End to end: the README's command on a tiny configuration
# --------------------------------------------------------------------------


@pytest.mark.slow
def test_smoke_trains_exports_reloads_and_scores(dcgan, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ)
    env.update(
        KERAS_BACKEND="tensorflow",
        TF_CPP_MIN_LOG_LEVEL="0",  # TensorFlow's XLA log line is INFO
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
    )
    command = [
        sys.executable, str(EXAMPLE), "--epochs", "2", "--steps-per-epoch",
        "2", "--batch-size", "8", "--width", "0.0625", "--out", str(out),
        "--eval", "--cache-dir", str(tmp_path / "cache"),
    ]
    run = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=900
    )
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    assert "jit_compile=True (XLA)" in log
    assert "Compiled cluster using XLA" in log  # TF compiled the step with XLA
    assert "reproduces the in-memory generator" in log

    # A sample grid per epoch, a CSV row per epoch, the plot.
    for epoch in (1, 2):
        grid = keras.utils.load_img(out / "samples" / f"epoch_{epoch:03d}.png")
        assert grid.size == (480, 480)  # 10 x 10 cells of 24 px, shown at 48
    with open(out / "log.csv") as file:
        rows = list(csv.DictReader(file))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row in rows:
        for key in ("d_loss", "g_loss", "sn_bound", "sigma_conv1", "sigma_dense"):
            assert math.isfinite(float(row[key]))
        assert float(row["sn_bound"]) == pytest.approx(1.0, abs=0.2)
    assert (out / "training.png").stat().st_size > 10_000

    # The .keras files load with safe_mode and without custom_objects.
    z = np.random.default_rng(1).standard_normal((5, 128)).astype("float32")
    generator = keras.saving.load_model(out / "generator.keras")
    discriminator = keras.saving.load_model(out / "discriminator.keras")
    assert sum(
        isinstance(layer, keras_sn.SpectralNormalization)
        for layer in discriminator.layers
    ) == 8
    images = generator.predict(z, verbose=0)
    assert images.shape == (5, 24, 24, 1)
    assert discriminator.predict(images, verbose=0).shape == (5, 1)

    # The SavedModel's serving signature maps z to the same images.
    reloaded = tf.saved_model.load(str(out / "generator_savedmodel"))
    served = reloaded.signatures["serving_default"](z=tf.constant(z))
    np.testing.assert_allclose(served["output_0"].numpy(), images, atol=1e-5)

    result = json.loads((out / "run.json").read_text())
    assert result["jit_compile"] is True
    assert result["setting"] == dcgan.DEFAULT_SETTING
    assert result["export_max_abs_difference"] <= 1e-4
    scores = result["eval"]
    floor = scores["held-out real digits (floor)"]
    noise = scores["uniform noise"]
    collapsed = scores["collapsed: one real digit repeated"]
    assert floor["fd"] < 0.2 * noise["fd"] and floor["kl"] < 0.05
    assert collapsed["kl"] == pytest.approx(math.log(10), abs=1e-6)
    assert list((tmp_path / "cache").glob("digits_classifier_24px_*.keras"))
