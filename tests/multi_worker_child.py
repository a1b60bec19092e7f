"""One worker of the MultiWorkerMirroredStrategy test (run as a script).

`tests/test_multi_worker.py` starts two of these, with a `TF_CONFIG` that
names two local ports and this worker's index. Each worker, inside one
`MultiWorkerMirroredStrategy` (collectives over gRPC, RING):

1. builds `fit_model()`, loads the shared initial weights and trains it with
   `fit` on the shared global batches;
2. builds the GAN of `gan_step.py`, loads its shared initial weights and trains
   it with the custom `strategy.run` step;

then writes every weight of both (kernels, biases, u and v), as this worker
sees them, to `worker<index>.npz`.

Usage: python multi_worker_child.py DIRECTORY
  DIRECTORY holds `config.json`, `fit_initial.npz`, `fit_x.npy`, `fit_y.npy`,
  `gan_initial.npz`, `gan_real.npy` and `gan_z.npy`.
"""

import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

import keras_sn

import gan_step  # a sibling module (a script's directory is on sys.path)


def fit_model():
    """The model that both the workers and the reference train with `fit`."""
    sn = keras_sn.SpectralNormalization
    return keras.Sequential([
        keras.Input((6, 6, 2)),
        sn(keras.layers.Conv2D(4, 3), power_iterations=2),
        keras.layers.LeakyReLU(0.1),
        sn(keras.layers.Conv2DTranspose(3, 2)),
        keras.layers.Flatten(),
        sn(keras.layers.Dense(3)),
    ], name="fit_model")


def compile_fit_model(model, config):
    model.compile(
        optimizer=keras.optimizers.Adam(config["learning_rate"]),
        loss="mse",
        # XLA cannot compile collectives on CPU ("Collectives are not yet
        # implemented for CPU devices when compiling with XLA").
        jit_compile=False,
    )


def fit(model, x, y, config):
    model.fit(
        x, y, batch_size=config["global_batch"], epochs=config["epochs"],
        shuffle=False, verbose=0,
    )


def patch_reduce_for_keras_fit(strategy):
    """Works around Keras 3's `fit` under MultiWorkerMirroredStrategy.

    Keras 3.15.1 (and Keras master when this was written) calls
    `strategy.reduce` in two ways that only single-worker strategies accept
    (keras-team/keras#20585):
    `reduce("MEAN", (x, y), axis=None)` on a whole nested data batch, before
    the first step, and `reduce("MEAN", loss, axis=0)` on scalar per-replica
    logs after each step. Under more than one worker the first fails with
    "Attempt to convert a value (PerReplica...)" and the second with "Invalid
    reduction dimension 0 for input with 0 dimensions". This reduces each
    leaf separately and scalars without an axis; the model's training math is
    untouched (gradients are all-reduced by the optimizer, not here). The
    README shows the same code.
    """
    reduce = strategy.reduce

    def reduce_each(reduce_op, value, axis=None):
        def reduce_leaf(leaf):
            local = strategy.experimental_local_results(leaf)[0]
            return reduce(reduce_op, leaf,
                          axis=None if local.shape.rank == 0 else axis)
        return tf.nest.map_structure(reduce_leaf, value)

    strategy.reduce = reduce_each


def _load(directory, name):
    return np.load(os.path.join(directory, name))


def main(directory):
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=(
                tf.distribute.experimental.CommunicationImplementation.RING
            ),
            # A dead peer fails the collective instead of hanging forever.
            timeout_seconds=config["collective_timeout_s"],
        )
    )
    patch_reduce_for_keras_fit(strategy)

    with strategy.scope():
        model = fit_model()
        gan_step.set_labelled_weights(
            _load(directory, "fit_initial.npz"), model
        )
        compile_fit_model(model, config)
    fit(model, _load(directory, "fit_x.npy"), _load(directory, "fit_y.npy"),
        config)

    with strategy.scope():
        gan = gan_step.make_gan()
        gan_step.set_labelled_weights(
            _load(directory, "gan_initial.npz"), *gan[:2]
        )
    gan_step.train_distributed(
        strategy, gan, _load(directory, "gan_real.npy"),
        _load(directory, "gan_z.npy"), config["global_batch"],
    )

    models = (model,) + tuple(gan[:2])
    results = gan_step.labelled_weights(*models)
    state = [
        v for m in models for v in m.weights
        if v.name.endswith(("vector_u", "vector_v"))
    ]
    results["__replicas_in_sync"] = np.asarray(strategy.num_replicas_in_sync)
    results["__state_aggregation"] = np.asarray(
        sorted({v.value.aggregation.name for v in state})
    )
    results["__state_variable_type"] = np.asarray(
        sorted({type(v.value).__name__ for v in state})
    )
    np.savez(os.path.join(directory, f"worker{task['index']}.npz"), **results)


if __name__ == "__main__":
    main(sys.argv[1])
