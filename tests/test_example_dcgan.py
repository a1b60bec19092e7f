"""Tests of examples/dcgan.py and examples/digits_metrics.py.

Fast tests check the Table 3 models, the hinge losses, the train step, the
grid and the scores against hand-computed references; the smoke test runs the
command line on a tiny budget in a subprocess (export, reload, --eval) and
checks that its log has no Python warning and no TensorFlow error line.
"""

import csv
import importlib
import math
import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from backends import tensorflow_only

import keras_sn

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# tf.data, tf.GradientTape, SavedModel; run once, in the integration tier.
pytestmark = [tensorflow_only, pytest.mark.integration]


@pytest.fixture(scope="module")
def dcgan():
    sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module("dcgan")


@pytest.fixture(scope="module")
def metrics():
    sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module("digits_metrics")


def test_settings_are_the_papers_table_1(dcgan):
    assert dcgan.SETTINGS == {  # Miyato et al. (2018), Table 1
        "A": (1e-4, 0.5, 0.9, 5), "B": (1e-4, 0.5, 0.999, 1),
        "C": (2e-4, 0.5, 0.999, 1), "D": (1e-3, 0.5, 0.9, 5),
        "E": (1e-3, 0.5, 0.999, 5), "F": (1e-3, 0.9, 0.999, 5)}


def test_discriminator_learns_at_d_lr_factor_times_the_setting(dcgan):
    # The default: setting C's Adam for both, D at half C's learning rate.
    args = dcgan.make_parser().parse_args([])
    assert (args.setting, args.d_lr_factor) == ("C", 0.5)
    d, g = dcgan.adam("C", args.d_lr_factor), dcgan.adam("C")
    assert float(d.learning_rate) == pytest.approx(1e-4, rel=1e-6)
    assert float(g.learning_rate) == pytest.approx(2e-4, rel=1e-6)
    assert (d.beta_1, d.beta_2) == (g.beta_1, g.beta_2) == (0.5, 0.999)
    args = dcgan.make_parser().parse_args(["--setting", "D", "--d-lr-factor", "1"])
    assert float(dcgan.adam(args.setting, args.d_lr_factor).learning_rate) == (
        pytest.approx(1e-3, rel=1e-6))


def unwrap(layer):
    return layer.layer if isinstance(layer, keras_sn.SpectralNormalization) else layer


@pytest.mark.parametrize("spectral_norm", [True, False], ids=["sn", "no_sn"])
def test_discriminator_is_table_3_standard_cnn(dcgan, spectral_norm):
    model = dcgan.build_discriminator(32, 3, width=1.0, spectral_norm=spectral_norm)
    inner = [unwrap(layer) for layer in model.layers]
    convs = [layer for layer in inner if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.kernel_size, c.strides, c.filters, c.padding) for c in convs] == [
        ((3, 3), (1, 1), 64, "same"), ((4, 4), (2, 2), 64, "same"),
        ((3, 3), (1, 1), 128, "same"), ((4, 4), (2, 2), 128, "same"),
        ((3, 3), (1, 1), 256, "same"), ((4, 4), (2, 2), 256, "same"),
        ((3, 3), (1, 1), 512, "same")]
    dense = [layer for layer in inner if isinstance(layer, keras.layers.Dense)]
    assert len(dense) == 1 and dense[0].units == 1
    assert dense[0].kernel.shape == (4 * 4 * 512, 1)  # M/8 x M/8 x 512
    wrapped = keras_sn.wrapped_layers(model)
    assert len(wrapped) == (8 if spectral_norm else 0)  # 7 convs + dense
    # Each conv is followed by LeakyReLU(0.1).
    activations = [layer for layer in model.layers
                   if isinstance(layer, keras.layers.Activation)]
    assert len(activations) == 7
    x = np.array([-3.0, -0.5, 0.0, 2.0], "float32")
    np.testing.assert_allclose(activations[0](x), [-0.3, -0.05, 0.0, 2.0],
                               rtol=1e-6)


@pytest.mark.parametrize("image_size,mg", [(16, 2), (24, 3), (32, 4)])
def test_generator_is_table_3(dcgan, image_size, mg):
    model = dcgan.build_generator(image_size, 3, width=0.125)
    assert model.input_shape == (None, 128)
    assert model.get_layer("dense").units == mg * mg * 64  # 512 x 0.125
    deconvs = [model.get_layer(f"deconv{i}") for i in (1, 2, 3)]
    assert [(d.kernel_size, d.strides, d.filters) for d in deconvs] == [
        ((4, 4), (2, 2), 32), ((4, 4), (2, 2), 16), ((4, 4), (2, 2), 8)]
    assert model.get_layer("to_images").kernel_size == (3, 3)
    norms = [layer for layer in model.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 4
    images = model(np.random.normal(size=(2, 128)).astype("float32"))
    assert images.shape == (2, image_size, image_size, 3)
    assert np.all(np.abs(np.asarray(images)) <= 1.0)  # tanh


def test_hinge_losses_are_eq_16_and_17(dcgan):
    real = np.array([[2.0], [0.5], [-1.0]], "float32")
    fake = np.array([[-2.0], [0.0], [1.0]], "float32")
    # relu(1 - real) = 0, 0.5, 2 -> 2.5/3; relu(1 + fake) = 0, 1, 2 -> 1.
    assert float(dcgan.discriminator_hinge_loss(real, fake)) == pytest.approx(
        2.5 / 3 + 1.0)
    assert float(dcgan.generator_hinge_loss(fake)) == pytest.approx(1.0 / 3)


@pytest.mark.parametrize("n_dis", [1, 2])
def test_one_train_step_is_n_dis_discriminator_updates(dcgan, n_dis):
    keras.utils.set_random_seed(0)
    generator = dcgan.build_generator(8, 1, width=0.0625)
    discriminator = dcgan.build_discriminator(8, 1, width=0.0625)
    gan = dcgan.SNGAN(generator, discriminator, n_dis=n_dis)
    gan.compile(d_optimizer=keras.optimizers.Adam(1e-3),
                g_optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    before = [np.array(v) for v in discriminator.trainable_variables]
    u_before = [np.array(w.vector_u)
                for w in keras_sn.wrapped_layers(discriminator)]
    images = np.random.uniform(-1, 1, (4 * n_dis, 8, 8, 1)).astype("float32")
    gan.fit(images, batch_size=4 * n_dis, epochs=1, verbose=0, shuffle=False)
    assert int(gan.d_optimizer.iterations) == n_dis
    assert int(gan.g_optimizer.iterations) == 1
    after = [np.array(v) for v in discriminator.trainable_variables]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    # The power iteration ran in the discriminator updates (u of the
    # one-output dense layer is +-1 and stays).
    for wrapper, u in zip(keras_sn.wrapped_layers(discriminator), u_before):
        assert np.array_equal(np.array(wrapper.vector_u), u) == (u.size == 1)


def test_image_grid_leaves_a_white_gap_between_cells(dcgan):
    images = np.stack([np.full((2, 2, 1), v, "float32") for v in (-1, 0, 1)])
    grid = dcgan.image_grid(images, columns=2, gap=1, scale=1)
    expected = np.array([[0, 0, 255, 128, 128],
                         [0, 0, 255, 128, 128],
                         [255, 255, 255, 255, 255],
                         [255, 255, 255, 255, 255],
                         [255, 255, 255, 255, 255]], "uint8")[..., None]
    np.testing.assert_array_equal(grid, expected)  # the empty cell is white


def test_jit_auto_is_graph_mode_on_a_cpu(dcgan):
    assert dcgan.choose_jit("on")[0] is True
    assert dcgan.choose_jit("off")[0] is False
    import tensorflow as tf

    expected = bool(tf.config.list_physical_devices("GPU"))
    jit, why = dcgan.choose_jit("auto")
    assert jit is expected and "--jit auto" in why


def test_data_sources(dcgan, tmp_path):
    from sklearn.datasets import load_digits

    images, labels, channels, count = dcgan.load_images("digits", None, 8)
    x = np.stack(list(images.as_numpy_iterator()))
    assert (count, channels, x.shape) == (1797, 1, (1797, 8, 8, 1))
    digits = load_digits()
    np.testing.assert_allclose(x[..., 0], digits.images / 8.0 - 1.0, atol=1e-6)
    assert list(labels.take(5).as_numpy_iterator()) == list(digits.target[:5])
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        keras.utils.save_img(tmp_path / label / "x.png", np.full(
            (8, 8, 3), 255 if label == "b" else 0, "uint8"), scale=False)
    images, labels, channels, count = dcgan.load_images(data_dir=str(tmp_path),
                                                        image_size=8)
    x = np.stack(list(images.as_numpy_iterator()))
    assert (count, channels) == (2, 3)
    np.testing.assert_allclose(x[:, 0, 0, 0], [-1.0, 1.0])
    assert list(labels.as_numpy_iterator()) == [0, 1]
    with pytest.raises(ValueError, match="not a folder"):
        dcgan.load_images(data_dir=str(tmp_path / "missing"))


def test_help_explains_every_flag(dcgan):
    parser = dcgan.make_parser()
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and len(action.help) > 15, action.option_strings


def test_frechet_distance_known_answers(metrics):
    mu, cov = np.zeros(3), np.eye(3)
    assert metrics.frechet_distance(mu, cov, mu, cov) == pytest.approx(0, abs=1e-8)
    assert metrics.frechet_distance(mu + [3, 0, 0], cov, mu, cov) == pytest.approx(9)
    # Scaled identity: tr(a I + b I - 2 sqrt(ab) I) = 3 (sqrt(a) - sqrt(b))^2.
    assert metrics.frechet_distance(mu, 4 * cov, mu, cov) == pytest.approx(3.0)


def test_kl_from_uniform(metrics):
    assert metrics.kl_from_uniform(np.arange(100) % 10) == pytest.approx(0.0)
    assert metrics.kl_from_uniform(np.full(100, 3)) == pytest.approx(math.log(10))
    assert metrics.kl_from_uniform(np.arange(100) % 5) == pytest.approx(math.log(2))


@pytest.mark.slow
def test_smoke_trains_exports_reloads_and_scores(dcgan, digits_cache, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="0",
               PYTHONPATH=os.pathsep.join(
                   [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, str(EXAMPLES / "dcgan.py"), "--epochs", "2",
               "--steps-per-epoch", "2", "--batch-size", "8", "--width", "0.0625",
               "--out", str(out), "--eval", "--cache-dir", str(digits_cache)]
    run = subprocess.run(command, env=env, capture_output=True, text=True,
                         timeout=300)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    # Setting C for G; D at 0.5 x C's learning rate.
    assert "n_dis = (0.0002, 0.5, 0.999, 1)), D's lr x0.5," in log
    assert "jit_compile=False (TensorFlow graph mode): --jit auto on a CPU" in log
    assert not re.search(r"\w+Warning:|WARNING:tensorflow", log), log[-3000:]
    errors = [line for line in log.splitlines()
              if line.startswith("E0000") and "cuInit" not in line]
    assert not errors  # e.g. the grappler remapper's LeakyReluGrad error
    assert "reloaded: max |difference|" in log
    for epoch in (1, 2):
        grid = keras.utils.load_img(out / "samples" / f"epoch_{epoch:03d}.png")
        assert grid.size == (10 * 48 + 9 * 2,) * 2  # 10 x 10 cells, 2 px gaps
    with open(out / "log.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2
    for key in ("d_loss", "g_loss", "sigma/sn_conv1", "sigma/sn_dense"):
        assert all(math.isfinite(float(row[key])) for row in rows)
    # The .keras files reload (the example registers its activation).
    generator = keras.saving.load_model(out / "generator.keras")
    discriminator = keras.saving.load_model(out / "discriminator.keras")
    assert len(keras_sn.wrapped_layers(discriminator)) == 8
    z = np.random.default_rng(1).standard_normal((5, 128)).astype("float32")
    images = generator.predict(z, verbose=0)
    assert images.shape == (5, 24, 24, 1)
    import tensorflow as tf

    served = tf.saved_model.load(str(out / "generator_savedmodel")).signatures[
        "serving_default"](z=tf.constant(z))
    np.testing.assert_allclose(list(served.values())[0].numpy(), images, atol=1e-5)
    # The score table: a near-zero floor, a collapsed row at log(10).
    table = log[log.index("this generator"):]
    rows = {line[:50].strip(): [float(v) for v in line[50:].split()]
            for line in table.splitlines()[:5]}
    floor = rows["held-out real digits (floor)"]
    assert floor[0] < 0.05 * rows["uniform noise"][0] and floor[1] < 0.05
    assert rows["collapsed: one real digit repeated"][1] == pytest.approx(
        math.log(10), abs=1e-3)


@pytest.mark.parametrize("factor", [0.0, -0.5, float("nan")])
def test_a_d_lr_factor_that_would_not_train_is_a_value_error(dcgan, factor):
    with pytest.raises(ValueError, match="--d-lr-factor must be above 0"):
        dcgan.adam("C", factor)
