"""During GAN training, the one-step-per-call estimate tracks the true sigma."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_sn
from backends import tensorflow_only
from references import output_axis_matrix
from references import reference_sigma

# tf.distribute or a long GAN run: once, in the integration tier.
pytestmark = [tensorflow_only, pytest.mark.integration]


def _discriminator():
    sn = keras_sn.SpectralNormalization
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        sn(keras.layers.Conv2D(16, 3, padding="same")),
        keras.layers.LeakyReLU(0.1),
        sn(keras.layers.Conv2D(32, 4, strides=2, padding="same")),
        keras.layers.LeakyReLU(0.1),
        keras.layers.Flatten(),
        sn(keras.layers.Dense(1)),
    ])


def _generator():
    return keras.Sequential([
        keras.Input((16,)),
        keras.layers.Dense(4 * 4 * 16, activation="relu"),
        keras.layers.Reshape((4, 4, 16)),
        keras_sn.SpectralNormalization(  # SAGAN also normalizes G
            keras.layers.Conv2DTranspose(1, 4, strides=2, padding="same")
        ),
        keras.layers.Activation("tanh"),
    ])


def _relative_errors(model):
    errors = []
    for layer in model.layers:
        if isinstance(layer, keras_sn.SpectralNormalization):
            axis = -2 if isinstance(layer.layer, keras.layers.Conv2DTranspose) else -1
            true = reference_sigma(output_axis_matrix(layer.layer.kernel.numpy(), axis))
            errors.append(abs(float(layer.sigma) - true) / true)
    return errors


@pytest.mark.slow
def test_sigma_estimate_stays_within_ten_percent_over_200_gan_steps():
    discriminator, generator = _discriminator(), _generator()
    d_opt, g_opt = keras.optimizers.Adam(2e-4), keras.optimizers.Adam(2e-4)
    rng = np.random.default_rng(0)
    # "Real" data: smooth random blobs in [-1, 1].
    base = rng.standard_normal((256, 8, 8, 1)).astype("float32")
    real_data = np.tanh(base + np.roll(base, 1, 1) + np.roll(base, 1, 2))

    @tf.function(jit_compile=True)
    def train_step(real, z):
        with tf.GradientTape() as tape:
            fake = generator(z, training=True)
            d_loss = tf.reduce_mean(tf.nn.relu(1 - discriminator(real, training=True)))
            d_loss += tf.reduce_mean(tf.nn.relu(1 + discriminator(fake, training=True)))
        grads = tape.gradient(d_loss, discriminator.trainable_variables)
        d_opt.apply_gradients(zip(grads, discriminator.trainable_variables))
        with tf.GradientTape() as tape:
            g_loss = -tf.reduce_mean(
                discriminator(generator(z, training=True), training=True)
            )
        grads = tape.gradient(g_loss, generator.trainable_variables)
        g_opt.apply_gradients(zip(grads, generator.trainable_variables))
        return d_loss, g_loss

    worst, history = 0.0, []
    for step in range(200):
        batch = real_data[rng.integers(0, len(real_data), 32)]
        z = rng.standard_normal((32, 16)).astype("float32")
        d_loss, g_loss = train_step(batch, z)
        assert np.isfinite(float(d_loss)) and np.isfinite(float(g_loss))
        errors = _relative_errors(discriminator) + _relative_errors(generator)
        worst = max(worst, max(errors))
        history.extend(errors)
        assert max(errors) < 0.10, (step, errors)
    print(
        f"\nrelative sigma error over 200 GAN steps, 4 layers: worst "
        f"{worst:.2e}, median {np.median(history):.2e}"
    )
