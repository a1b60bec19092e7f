"""Tests of examples/conditional_sngan.py: projection head, conditional BN, CLI.

The projection discriminator and the conditional BatchNorm are checked
against numpy formulas; the smoke test runs the command line on a tiny budget
in a subprocess (export with two inputs, reload, --eval).
"""

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
def conditional():
    sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module("conditional_sngan")


def test_projection_discriminator_wraps_every_conv_dense_and_embedding(conditional):
    model = conditional.build_discriminator(32, 3, 10, width=1.0)
    wrapped = keras_sn.wrapped_layers(model)
    kinds = [type(w.layer).__name__ for w in wrapped]
    assert kinds.count("Conv2D") == 7
    assert kinds.count("Dense") == 1 and kinds.count("Embedding") == 1
    embed = model.get_layer("sn_embed").layer
    assert (embed.input_dim, embed.output_dim) == (10, 4 * 4 * 512)  # phi's width
    assert model.output_shape == (None, 1)


def test_projection_logit_is_psi_of_phi_plus_embed_dot_phi(conditional):
    keras.utils.set_random_seed(0)
    model = conditional.build_discriminator(8, 1, 10, width=0.0625,
                                            spectral_norm=False)
    images = np.random.uniform(-1, 1, (4, 8, 8, 1)).astype("float32")
    labels = np.array([0, 3, 3, 9], "int32")
    for layer in (model.get_layer("embed"), model.get_layer("psi")):
        layer.set_weights([np.random.normal(size=w.shape).astype("float32")
                           for w in layer.get_weights()])
    phi = keras.Model(model.inputs, model.get_layer("flatten").output)(
        [images, labels])
    phi = np.asarray(phi)
    kernel, bias = model.get_layer("psi").get_weights()
    table = model.get_layer("embed").get_weights()[0]
    expected = phi @ kernel + bias + np.sum(table[labels] * phi, axis=1,
                                            keepdims=True)
    np.testing.assert_allclose(model([images, labels]), expected, rtol=1e-4,
                               atol=1e-4)


def test_conditional_batch_norm_applies_the_class_gain_and_bias(conditional):
    layer = conditional.ConditionalBatchNormalization(3, name="cbn")
    x = np.random.normal(size=(4, 2, 2, 5)).astype("float32") * 3 + 1
    labels = np.array([0, 1, 2, 1], "int32")
    layer([x, labels])
    gamma = np.random.normal(size=(3, 5)).astype("float32")
    beta = np.random.normal(size=(3, 5)).astype("float32")
    layer.gamma.set_weights([gamma])
    layer.beta.set_weights([beta])
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    normalized = (x - mean) / np.sqrt(var + 1e-3)  # BatchNorm's epsilon
    expected = (normalized * gamma[labels][:, None, None]
                + beta[labels][:, None, None])
    np.testing.assert_allclose(layer([x, labels], training=True), expected,
                               rtol=1e-4, atol=1e-4)


def test_generator_takes_z_and_labels(conditional):
    model = conditional.build_generator(24, 1, 10, width=0.0625)
    assert [tuple(t.shape) for t in model.inputs] == [(None, 128), (None,)]
    images = model([np.zeros((3, 128), "float32"), np.array([0, 5, 9], "int32")])
    assert images.shape == (3, 24, 24, 1)
    cbns = [layer for layer in model.layers
            if isinstance(layer, conditional.ConditionalBatchNormalization)]
    assert len(cbns) == 4


def test_sample_grid_has_one_row_per_class(conditional):
    _, (z, labels) = conditional.build_gan(
        8, 1, width=0.0625, spectral_norm=True, n_dis=1, seed=0)
    assert z.shape == (100, 128)
    np.testing.assert_array_equal(labels.reshape(10, 10),
                                  np.repeat(np.arange(10), 10).reshape(10, 10))


@pytest.mark.slow
def test_smoke_trains_exports_reloads_and_scores(conditional, digits_cache,
                                                  tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="0",
               PYTHONPATH=os.pathsep.join(
                   [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, str(EXAMPLES / "conditional_sngan.py"), "--epochs",
               "1", "--steps-per-epoch", "2", "--batch-size", "8", "--width",
               "0.0625", "--out", str(out), "--eval", "--cache-dir",
               str(digits_cache)]
    run = subprocess.run(command, env=env, capture_output=True, text=True,
                         timeout=300)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    # Setting C for G; D at 1 x C's learning rate.
    assert "n_dis = (0.0002, 0.5, 0.999, 1)), D's lr x1," in log
    assert not re.search(r"\w+Warning:|WARNING:tensorflow", log), log[-3000:]
    assert not [line for line in log.splitlines()
                if line.startswith("E0000") and "cuInit" not in line]
    grid = keras.utils.load_img(out / "samples" / "epoch_001.png")
    assert grid.size == (10 * 48 + 9 * 2,) * 2  # one row per class
    generator = keras.saving.load_model(out / "generator.keras")
    discriminator = keras.saving.load_model(out / "discriminator.keras")
    assert len(keras_sn.wrapped_layers(discriminator)) == 9
    z = np.random.default_rng(1).standard_normal((4, 128)).astype("float32")
    labels = np.array([1, 2, 3, 4], "int32")
    images = generator.predict([z, labels], verbose=0)
    import tensorflow as tf

    served = tf.saved_model.load(str(out / "generator_savedmodel")).signatures[
        "serving_default"](z=tf.constant(z), labels=tf.constant(labels))
    np.testing.assert_allclose(list(served.values())[0].numpy(), images, atol=1e-5)
    table = log[log.index("this generator"):]
    rows = {line[:50].strip(): [float(v) for v in line[50:].split()]
            for line in table.splitlines()[:2]}
    floor = rows["held-out real digits (floor)"]  # FD, KL, accuracy, class FD
    assert floor[2] > 0.95 and floor[1] < 0.01  # the classifier is good
    assert 0.0 <= rows["this generator"][2] <= 1.0
    assert math.isfinite(rows["this generator"][3])
