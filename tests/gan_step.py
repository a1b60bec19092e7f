"""A small SN-GAN with a custom train step, shared by the distributed tests.

Used in-process by `test_distributed_gan.py` (MirroredStrategy over two
logical CPUs) and by the worker processes of `test_multi_worker.py`
(MultiWorkerMirroredStrategy). One train step calls the discriminator three
times with `training=True` (on real data and on fakes for its own update, and
on fakes for the generator's update), so each of its `u` vectors takes three
power steps per train step, as in a typical SN-GAN loop.
"""

import keras
import numpy as np
import tensorflow as tf

import keras_sn

LATENT = 4
IMAGE_SHAPE = (6, 6, 2)


def make_gan():
    """Generator, discriminator and their optimizers (make them in a scope)."""
    sn = keras_sn.SpectralNormalization
    generator = keras.Sequential([
        keras.Input((LATENT,)),
        keras.layers.Dense(3 * 3 * 4, activation="relu"),
        keras.layers.Reshape((3, 3, 4)),
        sn(keras.layers.Conv2DTranspose(2, 4, strides=2, padding="same")),
        keras.layers.Activation("tanh"),
    ], name="generator")
    discriminator = keras.Sequential([
        keras.Input(IMAGE_SHAPE),
        sn(keras.layers.Conv2D(4, 3), power_iterations=2),
        keras.layers.LeakyReLU(0.1),
        keras.layers.Flatten(),
        sn(keras.layers.Dense(1)),
    ], name="discriminator")
    g_opt = keras.optimizers.Adam(1e-2, beta_1=0.5)
    d_opt = keras.optimizers.Adam(1e-2, beta_1=0.5)
    # Optimizer variables must exist before the step runs in replica context.
    g_opt.build(generator.trainable_variables)
    d_opt.build(discriminator.trainable_variables)
    return generator, discriminator, g_opt, d_opt


def gan_data(steps, global_batch, seed=0):
    rng = np.random.default_rng(seed)
    n = steps * global_batch
    real = np.tanh(rng.standard_normal((n, *IMAGE_SHAPE))).astype("float32")
    z = rng.standard_normal((n, LATENT)).astype("float32")
    return real, z


def make_replica_step(gan, global_batch):
    """The per-replica hinge-loss GAN step, averaged over the global batch.

    Keras optimizers called in replica context sum the gradients of all
    replicas, so each replica's loss is its per-example loss summed and divided
    by the global batch size (`tf.nn.compute_average_loss`).
    """
    generator, discriminator, g_opt, d_opt = gan

    def average(per_example):
        return tf.nn.compute_average_loss(
            tf.reshape(per_example, [-1]), global_batch_size=global_batch
        )

    def step(real, z):
        with tf.GradientTape() as tape:
            fake = generator(z, training=True)
            d_real = discriminator(real, training=True)  # 1st D call
            d_fake = discriminator(fake, training=True)  # 2nd D call
            d_loss = average(tf.nn.relu(1.0 - d_real)) + average(
                tf.nn.relu(1.0 + d_fake)
            )
        variables = discriminator.trainable_variables
        d_opt.apply_gradients(zip(tape.gradient(d_loss, variables), variables))
        with tf.GradientTape() as tape:
            g_loss = average(  # 3rd D call
                -discriminator(generator(z, training=True), training=True)
            )
        variables = generator.trainable_variables
        g_opt.apply_gradients(zip(tape.gradient(g_loss, variables), variables))
        return d_loss, g_loss

    return step


def _labelled_variables(models):
    # `model:index:name`, e.g. `discriminator:3:vector_u`: stable across
    # processes, unlike paths, which carry uniquified layer names.
    return {
        f"{model.name}:{index}:{v.name}": v
        for model in models
        for index, v in enumerate(model.weights)
    }


def labelled_weights(*models):
    """Every weight (kernels, biases, u, v) of `models` as `{label: array}`."""
    return {
        label: np.asarray(v.numpy())
        for label, v in _labelled_variables(models).items()
    }


def set_labelled_weights(weights, *models):
    """Assigns `labelled_weights` output (or an `.npz` of it) to `models`."""
    variables = _labelled_variables(models)
    assert sorted(variables) == sorted(weights.keys())
    for label, variable in variables.items():
        variable.assign(weights[label])


def train_single_device(gan, real, z, global_batch):
    """The reference: the same step on whole global batches, one device."""
    step = tf.function(make_replica_step(gan, global_batch))
    for start in range(0, len(real), global_batch):
        batch = slice(start, start + global_batch)
        step(real[batch], z[batch])


def train_distributed(strategy, gan, real, z, global_batch, eager=False):
    """`strategy.run` of the step on each global batch, split over replicas."""
    step = make_replica_step(gan, global_batch)
    dataset = tf.data.Dataset.from_tensor_slices((real, z)).batch(global_batch)
    distributed = strategy.experimental_distribute_dataset(dataset)

    def train_step(real_batch, z_batch):
        return strategy.run(step, args=(real_batch, z_batch))

    if not eager:
        train_step = tf.function(train_step)
    for real_batch, z_batch in distributed:
        train_step(real_batch, z_batch)
