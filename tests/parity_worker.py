"""Runs one small SN model on the backend named in argv and saves the results.

Used by `test_backend_parity.py`: every backend starts from the same initial
weights (including u and v) and data, and writes its inference outputs,
gradients and the weights after a few `fit` steps to an .npz file.

Usage: python parity_worker.py BACKEND INPUT.npz OUTPUT.npz
"""

import os
import sys

if __name__ == "__main__":  # imported by the test only for `build_model`
    os.environ["KERAS_BACKEND"] = sys.argv[1]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras_sn  # noqa: E402
from backends import gradients  # noqa: E402
from backends import to_numpy  # noqa: E402


def build_model():
    sn = keras_sn.SpectralNormalization
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        sn(keras.layers.Conv2D(4, 3, padding="same")),
        keras.layers.LeakyReLU(0.1),
        sn(keras.layers.Conv2DTranspose(2, 3, strides=2)),
        keras.layers.Flatten(),
        sn(keras.layers.Dense(3)),
    ])


def main(backend, input_path, output_path):
    data = np.load(input_path)
    model = build_model()
    names = [w.path for w in model.weights]
    weights = [data[f"w{i}"] for i in range(len(model.weights))]
    model.set_weights(weights)
    x = keras.ops.convert_to_tensor(data["x"])
    y = keras.ops.convert_to_tensor(data["y"])
    results = {"inference": to_numpy(model(x, training=False))}

    def loss():
        prediction = model(x, training=True)
        return keras.ops.mean(keras.ops.square(prediction - y))

    grads = gradients(loss, model.trainable_weights)
    for i, g in enumerate(grads):
        results[f"grad{i}"] = g
    model.set_weights(weights)  # undo the u update of the gradient call
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    model.fit(data["x"], data["y"], batch_size=4, epochs=3, shuffle=False, verbose=0)
    for i, w in enumerate(model.weights):
        results[f"trained{i}"] = to_numpy(w)
    results["trained_inference"] = to_numpy(model(x, training=False))
    np.savez(output_path, names=np.array(names), **results)


if __name__ == "__main__":
    main(*sys.argv[1:4])
