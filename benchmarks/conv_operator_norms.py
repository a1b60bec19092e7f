"""Reshape sigma vs operator sigma of the SN-GAN discriminator's convolutions.

Spectral normalization as in the paper divides a convolution kernel by the
largest singular value of the kernel reshaped to a `c_out x (k*k*c_in)` matrix.
The Lipschitz constant of the convolution, its operator norm as a linear map
of feature maps, is larger. This script measures both for the convolutions of
the SN-GAN "standard CNN" discriminator (Miyato et al., 2018, Table 3, at
32x32x3; 'same' padding, LeakyReLU 0.1):

    3x3 s1 64, 4x4 s2 64, 3x3 s1 128, 4x4 s2 128, 3x3 s1 256, 4x4 s2 256,
    3x3 s1 512

once for freshly initialized kernels (Keras' Glorot uniform, several seeds)
and once for kernels trained with spectral normalization (the reshape method,
the paper's) in that discriminator, used as a classifier of scikit-learn's
digits (8x8 images upsampled to 32x32, grey repeated to 3 channels).

Both sigmas are computed by `keras_sn.spectral_norm`: the reshape one by numpy
SVD; the operator one at each layer's input size by Golub-Kahan-Lanczos
through the convolution and its transpose until the relative residual is below
1e-9, as `keras_sn.spectral_norm` does for inputs above 1024 entries
(see `keras_sn.spectral_norm`). The ratio operator / reshape is the operator
norm of the layer after reshape spectral normalization: what a
"1-Lipschitz" layer actually has.

Usage:

    python benchmarks/conv_operator_norms.py            # docs/lipschitz.md's table
    python benchmarks/conv_operator_norms.py --seeds 1 --epochs 1  # quicker
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_sn  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _models import describe  # noqa: E402
from _models import machine  # noqa: E402

# (kernel size, strides, filters), in order.
SHAPES = [
    (3, 1, 64), (4, 2, 64), (3, 1, 128), (4, 2, 128),
    (3, 1, 256), (4, 2, 256), (3, 1, 512),
]
INPUT_SHAPE = (32, 32, 3)


def discriminator(classes=10, seed=0):
    """The SN-GAN standard CNN discriminator, every layer wrapped (reshape)."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input(INPUT_SHAPE)]
    for index, (kernel, strides, filters) in enumerate(SHAPES):
        layers.append(keras_sn.SpectralNormalization(
            keras.layers.Conv2D(filters, kernel, strides=strides,
                                padding="same"),
            name=f"conv{index + 1}",
        ))
        layers.append(keras.layers.LeakyReLU(0.1))
    layers += [
        keras.layers.Flatten(),
        keras_sn.SpectralNormalization(keras.layers.Dense(classes),
                                       name="head"),
    ]
    return keras.Sequential(layers)


def digits_32x32x3():
    """scikit-learn's digits as 32x32x3 images in [-1, 1], and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype("float32")[..., None] / 16.0
    images = keras.ops.convert_to_numpy(
        keras.ops.image.resize(images, (32, 32), interpolation="bilinear")
    )
    images = np.repeat(images, 3, axis=-1) * 2.0 - 1.0
    return images, digits.target.astype("int32")


def train(*, epochs=3, seed=0, batch_size=64, verbose=0):
    """Trains the discriminator as a digits classifier; returns the model."""
    x, y = digits_32x32x3()
    model = discriminator(seed=seed)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs,
                        verbose=verbose, validation_split=0.2)
    return model, history.history


def conv_norms(model):
    """[(name, input shape, reshape sigma, operator sigma)] of the raw kernels."""
    rows = []
    for wrapper in keras_sn.wrapped_layers(model):
        if not isinstance(wrapper.layer, keras.layers.Conv2D):
            continue
        input_shape = tuple(wrapper.get_build_config()["input_shape"])
        reshape = keras_sn.spectral_norm(wrapper.layer)
        operator = keras_sn.spectral_norm(wrapper.layer, method="operator",
                                          input_shape=input_shape)
        rows.append((wrapper.name, input_shape[1:], reshape, operator))
    return rows


def table(random_rows, trained_rows):
    lines = [
        "| layer | input | kernel | reshape σ (Glorot) | operator σ (Glorot) "
        "| ratio (Glorot) | reshape σ (trained) | operator σ (trained) "
        "| ratio (trained) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for index, (kernel, strides, filters) in enumerate(SHAPES):
        name, shape = random_rows[0][index][:2]
        reshape = [rows[index][2] for rows in random_rows]
        operator = [rows[index][3] for rows in random_rows]
        ratios = [o / r for o, r in zip(operator, reshape)]
        _, _, t_reshape, t_operator = trained_rows[index]
        ratio_range = (f"{min(ratios):.2f}–{max(ratios):.2f}"
                       if len(ratios) > 1 else f"{ratios[0]:.2f}")
        lines.append(
            f"| {name} | {'×'.join(map(str, shape))} | {kernel}×{kernel} "
            f"s{strides}, {filters} | {np.mean(reshape):.3f} | "
            f"{np.mean(operator):.3f} | {ratio_range} | {t_reshape:.3f} | "
            f"{t_operator:.3f} | {t_operator / t_reshape:.2f} |"
        )
    products = [
        np.prod([o / r for _, _, r, o in rows]) for rows in random_rows
    ]
    trained_product = np.prod([o / r for _, _, r, o in trained_rows])
    lines.append(
        f"| product of ratios (7 layers) | | | | | {np.mean(products):.1f} "
        f"| | | {trained_product:.1f} |"
    )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seeds", type=int, default=3,
                        help="freshly initialized discriminators to measure "
                             "(default 3); the table shows the mean sigma "
                             "and the range of the ratio")
    parser.add_argument("--epochs", type=int, default=3,
                        help="epochs of training on digits for the trained "
                             "kernels (default 3)")
    parser.add_argument("--output", default=None,
                        help="also write the numbers as JSON to this file")
    args = parser.parse_args()

    print("machine: " + describe(machine()))
    start = time.time()
    random_rows = [conv_norms(discriminator(seed=seed))
                   for seed in range(args.seeds)]
    model, history = train(epochs=args.epochs, seed=0)
    trained_rows = conv_norms(model)
    print(table(random_rows, trained_rows))
    print(
        f"\nTrained: {args.epochs} epochs, Adam(2e-4, beta_1=0.5), batch 64, "
        f"on 80% of digits; validation accuracy "
        f"{history['val_accuracy'][-1]:.3f}. Keras {keras.__version__}, "
        f"backend {keras.backend.backend()}; {time.time() - start:.0f} s."
    )
    if args.output:
        with open(args.output, "w") as file:
            json.dump({
                "random": random_rows, "trained": trained_rows,
                "history": {k: [float(x) for x in v]
                            for k, v in history.items()},
            }, file, indent=1, default=list)


if __name__ == "__main__":
    main()
