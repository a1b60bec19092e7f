"""tf.distribute.MirroredStrategy over two logical CPU devices."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_sn
from backends import tensorflow_only

# tf.distribute or a long GAN run: once, in the integration tier.
pytestmark = [tensorflow_only, pytest.mark.integration]


def _model():
    return keras.Sequential([
        keras.Input((6, 6, 2)),
        keras_sn.SpectralNormalization(keras.layers.Conv2D(4, 3)),
        keras.layers.Flatten(),
        keras_sn.SpectralNormalization(keras.layers.Dense(3)),
    ])


def _replica_values(variable):
    return [v.numpy() for v in variable.value.values]


@pytest.mark.slow
def test_mirrored_fit_keeps_u_identical_on_replicas_and_equal_to_one_device():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest configures two logical CPUs"
    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        mirrored = _model()
        mirrored.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    single = _model()
    single.set_weights(mirrored.get_weights())  # same kernels, u and v
    single.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")

    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 6, 6, 2)).astype("float32")
    y = rng.standard_normal((32, 3)).astype("float32")
    u_before = mirrored.layers[0].vector_u.numpy().copy()
    for model in (mirrored, single):
        model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)

    assert not np.allclose(mirrored.layers[0].vector_u.numpy(), u_before)
    for dist_layer, single_layer in zip(mirrored.layers, single.layers):
        if not isinstance(dist_layer, keras_sn.SpectralNormalization):
            continue
        for dist_var, single_var in zip(dist_layer.weights, single_layer.weights):
            replicas = _replica_values(dist_var)
            assert len(replicas) == 2
            np.testing.assert_array_equal(replicas[0], replicas[1])
            np.testing.assert_allclose(
                replicas[0], single_var.numpy(), rtol=1e-4, atol=1e-5
            )
