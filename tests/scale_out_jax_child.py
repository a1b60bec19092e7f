"""Child of `test_scale_out.py`: `keras.distribution.DataParallel` on JAX.

Run with KERAS_BACKEND=jax and XLA_FLAGS=--xla_force_host_platform_device_count=2
(two virtual CPU devices). Trains `scale_out_model.build()` with `fit` on the
same global batches twice, on one device and data-parallel over both, and
writes to `argv[1]` (npz): `initial/<key>`, `single/<key>`, `parallel/<key>` and each
device's shard `shard<i>/<key>` of every variable, and `replicated/<key>`
(1 when JAX reports the variable's sharding fully replicated).

With `RECIPE OUTPUT` after it (`python scale_out_jax_child.py OUT [RECIPE
OUTPUT]`), it then runs docs/distributed.md's DataParallel recipe (file
RECIPE) in the same process, as a script, its printed output to OUTPUT.
"""

import sys

import jax
import keras
import numpy as np

import scale_out_model as m


def train(model):
    model.compile(optimizer=keras.optimizers.Adam(m.LEARNING_RATE),
                  loss="mse")
    x, y = m.data()
    model.fit(x, y, batch_size=m.GLOBAL_BATCH, epochs=m.EPOCHS,
              shuffle=False, verbose=0)
    return model


def main(out):
    assert keras.backend.backend() == "jax", keras.backend.backend()
    devices = jax.devices("cpu")
    assert len(devices) == 2, devices
    arrays = {f"initial/{k}": v for k, v in m.snapshot(m.build()).items()}
    single = train(m.build())
    arrays.update({f"single/{k}": v for k, v in m.snapshot(single).items()})

    keras.distribution.set_distribution(keras.distribution.DataParallel(
        devices=keras.distribution.list_devices("cpu")))
    parallel = train(m.build())
    arrays.update({f"parallel/{k}": v
                   for k, v in m.snapshot(parallel).items()})
    for index, layer in enumerate(parallel.layers):
        inner = getattr(layer, "layer", layer)
        for variable in layer.variables:
            key = f"{index}_{type(inner).__name__}/{variable.name}"
            value = variable.value  # a jax.Array placed by the distribution
            arrays[f"replicated/{key}"] = np.array(
                int(value.sharding.is_fully_replicated))
            shards = sorted(value.addressable_shards,
                            key=lambda s: s.device.id)
            assert len(shards) == 2, (key, shards)
            for number, shard in enumerate(shards):
                arrays[f"shard{number}/{key}"] = np.asarray(shard.data)
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(sys.argv[1])
    if len(sys.argv) > 2:
        m.run_recipe(*sys.argv[2:4])
