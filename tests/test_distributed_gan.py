"""A custom GAN train step under `strategy.run` on two logical CPU replicas.

The discriminator is called three times per step with `training=True`, so
its `u` vectors are assigned three times per step in replica context. With
`aggregation="only_first_replica"` each assignment is a `merge_call` that
broadcasts the first replica's value to every replica's copy; every replica
computes that same value from the same synchronized kernel, so nothing is
reduced and nothing is lost.
"""

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import gan_step
import keras_sn
from backends import tensorflow_only
from keras_sn._src import power_iteration

# tf.distribute or a long GAN run: once, in the integration tier.
pytestmark = [tensorflow_only, pytest.mark.integration]

GLOBAL_BATCH = 8
# Train steps: eager `strategy.run` runs the replicas in Python threads and
# is slow, so it takes fewer (still 6 assignments of every u).
STEPS = {"tf_function": 4, "eager": 2}
# Replicas each see half of a global batch and the optimizer sums their
# gradients, where the reference averages the whole batch at once: the same
# math in a different floating-point order (as test_distribute.py; seen:
# <= 2e-6). The weights move by 1e-2..1e-1 in these steps.
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def strategy():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest configures two logical CPUs"
    # Gradients are reduced on one device rather than by collective ops: a
    # second MirroredStrategy with collectives in one process reuses their
    # instance keys and fails with "Shape mismatch in the collective
    # instance 100" (tensorflow/tensorflow#62790), and test_distribute.py has
    # made one already. The u vectors never take part in a reduction anyway.
    return tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


def _replica_values(variable):
    return [np.asarray(v.numpy()) for v in variable.value.values]


def _next_vectors_on_each_replica(strategy, models):
    """The next power step's u, v, computed separately on every replica.

    `only_first_replica` keeps the first replica's result; this checks the
    premise that makes that exact: every replica, from its own copies of the
    kernel and the vectors, computes bit-identical u and v.
    """
    wrappers = [layer for model in models for layer in model.layers
                if isinstance(layer, keras_sn.SpectralNormalization)]

    def step():
        vectors = []
        for wrapper in wrappers:
            (weight,) = keras_sn.weights.resolve_weights(wrapper.layer)
            matrix = power_iteration.to_matrix(
                ops.convert_to_tensor(weight.variable), weight.view)
            _, u, v = power_iteration.power_iteration_and_sigma(
                matrix, wrapper.vector_u, wrapper.vector_v,
                wrapper.power_iterations, wrapper.epsilon)
            vectors += [u, v]
        return vectors

    per_replica = strategy.run(tf.function(step))
    return [[np.asarray(t) for t in strategy.experimental_local_results(p)]
            for p in per_replica]


@pytest.mark.slow
@pytest.mark.parametrize("eager", [False, True], ids=["tf_function", "eager"])
def test_gan_step_keeps_u_identical_on_replicas_and_equal_to_one_device(
    strategy, eager
):
    with strategy.scope():
        distributed = gan_step.make_gan()
    initial = gan_step.labelled_weights(*distributed[:2])
    reference = gan_step.make_gan()
    gan_step.set_labelled_weights(initial, *reference[:2])

    real, z = gan_step.gan_data(
        STEPS["eager" if eager else "tf_function"], GLOBAL_BATCH)
    gan_step.train_distributed(
        strategy, distributed, real, z, GLOBAL_BATCH, eager=eager
    )
    gan_step.train_single_device(reference, real, z, GLOBAL_BATCH)

    generator, discriminator = distributed[:2]
    u_variables = [
        v for v in generator.weights + discriminator.weights
        if v.name.endswith(("vector_u", "vector_v"))
    ]
    assert len(u_variables) == 6  # three wrappers, each u and v
    for v in u_variables:
        assert v.value.aggregation == tf.VariableAggregation.ONLY_FIRST_REPLICA

    for replicas in _next_vectors_on_each_replica(strategy, distributed[:2]):
        assert len(replicas) == 2
        np.testing.assert_array_equal(replicas[0], replicas[1])

    expected = gan_step.labelled_weights(*reference[:2])
    for label, v in zip(expected, generator.weights + discriminator.weights):
        replicas = _replica_values(v)
        assert len(replicas) == 2
        np.testing.assert_array_equal(replicas[0], replicas[1], err_msg=label)
        np.testing.assert_allclose(
            replicas[0], expected[label], rtol=RTOL, atol=ATOL, err_msg=label
        )
        if label.endswith(("vector_u", "vector_v")):
            np.testing.assert_allclose(
                np.linalg.norm(replicas[0], axis=-1), 1.0, rtol=1e-5
            )
            if replicas[0].shape[-1] > 1:  # Dense(1)'s u is always [[±1]]
                # Moved by 3 training calls per step (not a trivial pass).
                assert not np.array_equal(replicas[0], initial[label]), label
