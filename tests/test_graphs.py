"""tf.function, XLA and Keras' fit: it compiles, trains and never retraces."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_sn
from backends import tensorflow_only

pytestmark = tensorflow_only


def _discriminator():
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras_sn.SpectralNormalization(keras.layers.Conv2D(4, 3, strides=2)),
        keras.layers.LeakyReLU(0.1),
        keras.layers.Flatten(),
        keras_sn.SpectralNormalization(keras.layers.Dense(1)),
    ])


def _generator():
    return keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(64, activation="tanh"),
        keras.layers.Reshape((8, 8, 1)),
    ])


class _CountCalls:
    """Counts Python executions of the wrapper's call (i.e. traces)."""

    def __init__(self, monkeypatch):
        self.count = 0
        original = keras_sn.SpectralNormalization.call

        def counting_call(layer, *args, **kwargs):
            self.count += 1
            return original(layer, *args, **kwargs)

        monkeypatch.setattr(keras_sn.SpectralNormalization, "call", counting_call)


@pytest.mark.parametrize("jit_compile", [True, False], ids=["xla", "graph"])
def test_fit_trains_without_retracing(jit_compile, monkeypatch):
    model = _discriminator()
    model.compile(optimizer="adam", loss="mse", jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 8, 8, 1)), rng.standard_normal((32, 1))
    u0 = model.layers[0].vector_u.numpy().copy()
    calls = _CountCalls(monkeypatch)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    traced = calls.count
    model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    assert calls.count == traced  # 12 more steps, no new trace
    assert not np.allclose(model.layers[0].vector_u.numpy(), u0)
    assert np.linalg.norm(model.layers[0].vector_u.numpy()) == pytest.approx(1)


def _power_step(k, u):
    v = u @ k.T
    v /= np.linalg.norm(v)
    u = v @ k
    return u / np.linalg.norm(u)


def test_xla_gan_step_calls_discriminator_twice_under_one_tape(monkeypatch):
    discriminator, generator = _discriminator(), _generator()
    d_optimizer = keras.optimizers.Adam(2e-4, beta_1=0.0, beta_2=0.9)
    d_optimizer.build(discriminator.trainable_variables)

    @tf.function(jit_compile=True)
    def d_step(real, z):
        with tf.GradientTape() as tape:
            fake = generator(z, training=True)
            real_logits = discriminator(real, training=True)
            fake_logits = discriminator(fake, training=True)
            loss = tf.reduce_mean(tf.nn.relu(1.0 - real_logits)) + tf.reduce_mean(
                tf.nn.relu(1.0 + fake_logits)
            )
        grads = tape.gradient(loss, discriminator.trainable_variables)
        d_optimizer.apply_gradients(zip(grads, discriminator.trainable_variables))
        return loss

    dense = discriminator.layers[-1]
    rng = np.random.default_rng(1)
    for step in range(5):
        kernel = dense.layer.kernel.numpy().astype(np.float64)
        u = dense.vector_u.numpy().astype(np.float64)
        real = rng.standard_normal((4, 8, 8, 1)).astype("float32")
        z = rng.standard_normal((4, 3)).astype("float32")
        loss = d_step(real, z)
        assert np.isfinite(float(loss))
        # Two discriminator calls: two power steps on the pre-update kernel.
        expected = _power_step(kernel, _power_step(kernel, u))
        np.testing.assert_allclose(dense.vector_u.numpy(), expected, atol=1e-5)
    assert d_step.experimental_get_tracing_count() == 1


def test_build_inside_a_traced_function_warms_up_once():
    layer = keras_sn.SpectralNormalization(
        keras.layers.Dense(3), warmup_iterations=30
    )

    @tf.function
    def infer(x):
        return layer(x)

    x = tf.ones((2, 4))
    infer(x)
    u = layer.vector_u.numpy().copy()
    infer(x)  # an inference call: no warm-up or any other state change
    np.testing.assert_array_equal(layer.vector_u.numpy(), u)
