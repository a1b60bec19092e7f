"""
Title: SN-GAN "standard CNN" with `keras_sn`: trained in `fit()` with XLA, exported as a SavedModel
Author: keras_sn contributors
Description: The spectrally normalized GAN of Miyato et al. (2018), Table 3, with
    the hinge loss, n_dis discriminator steps per generator step and the paper's
    Adam settings A-F, trained on scikit-learn's bundled digits in a few minutes
    on a CPU.
Accelerator: GPU when there is one (TensorFlow picks it); XLA on CPU and GPU.

## Introduction

A GAN discriminator whose layers are all wrapped in
`keras_sn.SpectralNormalization` has every weight divided by its largest
singular value, so each layer is 1-Lipschitz (in the paper's matrix sense) and
the discriminator cannot sharpen without bound. That is what keeps GAN training
stable across optimizer settings (Miyato et al., 2018, Figures 1 and 2).

This example:

- builds the paper's "standard CNN" generator and discriminator (Table 3), with
  a width multiplier so it runs on a CPU;
- trains them with the hinge loss (the paper's eq. 16 and 17), `n_dis`
  discriminator steps per generator step and Adam, in a `keras.Model` subclass
  whose `train_step` runs inside `fit()` (progress bar, callbacks) compiled
  with XLA (`jit_compile=True`);
- writes a sample grid per epoch, a CSV log of the losses and of every
  discriminator layer's spectral norm, and its plot;
- saves both models as `.keras` files and exports the generator as a
  SavedModel whose serving signature maps `z` to images, then reloads it and
  checks that it reproduces the in-memory generator;
- with `--eval`, scores the generator on the bundled digits: the Frechet
  distance between real and generated samples in the feature space of a small
  digits classifier, and the KL divergence of the predicted labels from uniform
  (mode coverage), next to the held-out real data's own score (the floor), a
  Gaussian-mixture baseline, a collapsed generator and noise.

Run `python examples/dcgan.py --help` for every flag; `examples/README.md`
lists the commands and the measured scores.

Reference:
    Takeru Miyato, Toshiki Kataoka, Masanori Koyama, Yuichi Yoshida.
    Spectral Normalization for Generative Adversarial Networks. ICLR 2018.
    https://arxiv.org/abs/1802.05957
"""

"""
## Setup
"""

import argparse
import csv
import dataclasses
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402
from keras import ops  # noqa: E402

import keras_sn  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise SystemExit(
        "examples/dcgan.py uses tf.data, tf.GradientTape and SavedModel export, "
        "so it needs the TensorFlow backend. Received: KERAS_BACKEND="
        f"{keras.backend.backend()!r}. Run it with KERAS_BACKEND=tensorflow."
    )

LATENT_DIM = 128  # z in R^128 ~ N(0, I) (Table 3)
DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")

"""
## The paper's optimizer settings

Table 1 of Miyato et al. (2018): Adam's learning rate alpha, its beta_1 and
beta_2, and n_dis, the discriminator updates per generator update. A, B and C
are the settings of earlier works (A: WGAN-GP, Gulrajani et al. 2017;
B: Warde-Farley & Bengio 2017; C: DCGAN, Radford et al. 2016); D, E and F are
aggressive learning rates and momenta, where WGAN-GP failed and SN-GANs did
not. The paper's best setting for SN-GANs with the standard CNN is B (its
footnote 4: "the optimal setting of SN-GANs (setting B, n_dis = 1)"), after
100K generator updates. (Its ResNet experiments used alpha = 0.0002,
beta_1 = 0, beta_2 = 0.9, n_dis = 5, from Gulrajani et al.; Appendix B.2.)

Our default is C: with a budget of minutes (1,000 generator updates) it gave
the best scores on the digits (examples/README.md has the A-F table); B learns
too slowly for that budget. `--setting B` trains with the paper's choice.
"""


@dataclasses.dataclass(frozen=True)
class Setting:
    """Adam hyper-parameters and discriminator steps per generator step."""

    learning_rate: float
    beta_1: float
    beta_2: float
    n_dis: int


SETTINGS = {
    "A": Setting(learning_rate=1e-4, beta_1=0.5, beta_2=0.9, n_dis=5),
    "B": Setting(learning_rate=1e-4, beta_1=0.5, beta_2=0.999, n_dis=1),
    "C": Setting(learning_rate=2e-4, beta_1=0.5, beta_2=0.999, n_dis=1),
    "D": Setting(learning_rate=1e-3, beta_1=0.5, beta_2=0.9, n_dis=5),
    "E": Setting(learning_rate=1e-3, beta_1=0.5, beta_2=0.999, n_dis=5),
    "F": Setting(learning_rate=1e-3, beta_1=0.9, beta_2=0.999, n_dis=5),
}
PAPER_SETTING = "B"  # the paper's best for SN-GANs, standard CNN (footnote 4)
DEFAULT_SETTING = "C"  # the best on the digits with a budget of minutes

"""
## Data

Every source yields float32 images in [-1, 1] (the generator's tanh range),
shape `(image_size, image_size, channels)`:

- `digits`: scikit-learn's bundled `load_digits` (1,797 grayscale 8x8 digits,
  no download), upsampled bilinearly to `image_size` (24 by default: at
  16x16, Mg = 2, every run we tried collapsed to a single image, with or
  without SN; 24 and 32 train).
- `mnist`, `fashion_mnist`, `cifar10`: `keras.datasets` (downloaded once to
  `~/.keras/datasets/`, so the first run needs a network connection), resized
  to `image_size` (32 by default).
- `--data-dir`: a folder of images, read with
  `keras.utils.image_dataset_from_directory` (subfolders included).
"""


class DataError(ValueError):
    """The requested data cannot be loaded; the message says what to do."""


def default_image_size(dataset):
    return 24 if dataset == "digits" else 32


def load_digits_8x8():
    """The bundled digits: `(images, labels)`, images (1797, 8, 8) in [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise DataError(
            "--dataset digits needs scikit-learn, which bundles the digits "
            f"data ({error}). Install it with `pip install scikit-learn` or "
            "`pip install -e \".[examples]\"`."
        ) from error
    digits = load_digits()
    return digits.images.astype("float32") / 16.0, digits.target.astype("int64")


def digits_to_images(images_8x8, image_size):
    """(N, 8, 8) digits in [0, 1] -> (N, image_size, image_size, 1) in [-1, 1]."""
    images = tf.image.resize(
        images_8x8[..., None], (image_size, image_size), method="bilinear"
    )
    return np.clip(images.numpy() * 2.0 - 1.0, -1.0, 1.0).astype("float32")


def _load_keras_dataset(name):
    loader = getattr(keras.datasets, name)
    try:
        (x_train, _), _ = loader.load_data()
    except Exception as error:  # keras raises a bare Exception when offline
        raise DataError(
            f"Could not load --dataset {name}: keras.datasets.{name}.load_data() "
            "downloads it on first use (it needs a network connection) and "
            f"caches it in ~/.keras/datasets/. The error was: {error}. "
            "Run once with a network connection (or copy the file into "
            "~/.keras/datasets/), or train offline on the bundled data "
            "(--dataset digits) or on a folder of your own images "
            "(--data-dir PATH)."
        ) from error
    if x_train.ndim == 3:
        x_train = x_train[..., None]
    return x_train  # uint8, (N, H, W, C)


def _check_data_dir(data_dir):
    path = pathlib.Path(data_dir).expanduser()
    if not path.exists():
        raise DataError(
            f"--data-dir {str(data_dir)!r} does not exist. Pass a folder that "
            "contains images (.png, .jpg, .jpeg, .bmp or .gif), directly or in "
            "subfolders."
        )
    if not path.is_dir():
        raise DataError(
            f"--data-dir {str(data_dir)!r} is a file, not a folder. Pass the "
            "folder that contains the images (.png, .jpg, .jpeg, .bmp or .gif)."
        )
    return path


def _undecodable(file_paths):
    """The files among `file_paths` that TensorFlow cannot decode."""
    broken = []
    for path in file_paths:
        try:
            tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
        except tf.errors.InvalidArgumentError:
            broken.append(path)
    return broken


def _scale_uint8(images):
    return tf.cast(images, "float32") / 127.5 - 1.0


def make_dataset(
    *,
    dataset="digits",
    data_dir=None,
    image_size=24,
    color_mode="rgb",
    batch_size=64,
    seed=0,
):
    """Returns `(tf.data.Dataset of image batches, channels, number of images)`.

    The dataset repeats forever, is shuffled, and yields batches of
    `batch_size` images in [-1, 1].
    """
    if data_dir is not None:
        path = _check_data_dir(data_dir)
        try:
            images = keras.utils.image_dataset_from_directory(
                str(path),
                labels=None,
                color_mode=color_mode,
                image_size=(image_size, image_size),
                batch_size=None,
                shuffle=False,
                verbose=False,
            )
        except ValueError as error:
            raise DataError(
                f"No images found in --data-dir {str(data_dir)!r} ({error}). "
                "Put .png, .jpg, .jpeg, .bmp or .gif files in it (directly or in "
                "subfolders)."
            ) from error
        count = int(images.cardinality())
        if count <= 0:
            raise DataError(
                f"No images found in --data-dir {str(data_dir)!r}. Put .png, "
                ".jpg, .jpeg, .bmp or .gif files in it (directly or in "
                "subfolders)."
            )
        channels = {"grayscale": 1, "rgb": 3, "rgba": 4}[color_mode]
        file_paths = images.file_paths
        images = images.map(lambda x: x / 127.5 - 1.0).cache()
        try:  # decode every file once now, so a broken file fails here
            for _ in images:
                pass
        except tf.errors.InvalidArgumentError as error:
            broken = _undecodable(file_paths)
            raise DataError(
                f"Could not decode {', '.join(broken) or 'an image'} in "
                f"--data-dir {str(data_dir)!r} (TensorFlow reads JPEG, PNG, "
                "GIF and BMP). Remove or fix that file."
            ) from error
    elif dataset == "digits":
        x8, _ = load_digits_8x8()
        x = digits_to_images(x8, image_size)
        count, channels = len(x), 1
        images = tf.data.Dataset.from_tensor_slices(x)
    elif dataset in DATASETS:
        x = _load_keras_dataset(dataset)
        count, channels = len(x), x.shape[-1]
        images = tf.data.Dataset.from_tensor_slices(x)
        if x.shape[1:3] != (image_size, image_size):
            images = images.map(
                lambda im: tf.image.resize(im, (image_size, image_size)),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        images = images.map(_scale_uint8, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        raise DataError(
            f"Unknown --dataset {dataset!r}. Expected one of {DATASETS}, or "
            "--data-dir PATH for a folder of images."
        )
    images = (
        images.shuffle(min(count, 20_000), seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )
    return images, channels, count


"""
## The models: the paper's "standard CNN" (Table 3)

Discriminator, for an `M x M` image: 3x3 s1 conv 64, 4x4 s2 conv 64, 3x3 s1
conv 128, 4x4 s2 conv 128, 3x3 s1 conv 256, 4x4 s2 conv 256, 3x3 s1 conv 512,
each followed by LeakyReLU(0.1), then dense -> 1. Every conv and the dense
layer are wrapped in `keras_sn.SpectralNormalization` (unless
`spectral_norm=False`, the unnormalized baseline).

Generator: z in R^128 ~ N(0, I), dense -> Mg x Mg x 512, three 4x4 s2
transposed convs with BatchNorm and ReLU (256, 128, 64), a 3x3 conv to the
image channels and tanh. Mg = M / 8 (4 for 32x32, 3 for 24x24, 6 for 48x48).
As in the authors' Chainer code (chainer-gan-lib, `DCGANGenerator`), the dense
layer is also followed by BatchNorm and ReLU; BatchNorm keeps moving averages
with momentum 0.9 (Chainer's and PyTorch's default) so that inference follows
a generator that changes quickly.

`width` multiplies every width (0.25: 16 ... 128 filters in the
discriminator) so the models train on a CPU in minutes; `width=1` is the paper.
"""

DISCRIMINATOR_CONVS = (  # (kernel, stride, filters)
    (3, 1, 64),
    (4, 2, 64),
    (3, 1, 128),
    (4, 2, 128),
    (3, 1, 256),
    (4, 2, 256),
    (3, 1, 512),
)
GENERATOR_DECONVS = (256, 128, 64)


def _scaled(filters, width):
    return max(1, int(round(filters * width)))


def check_image_size(image_size):
    if (
        not isinstance(image_size, int)
        or isinstance(image_size, bool)
        or image_size < 8
        or image_size % 8
    ):
        raise ValueError(
            "`image_size` must be a multiple of 8 (the generator upsamples "
            "Mg x Mg by 8 with three stride-2 transposed convs), e.g. 16 or 32. "
            f"Received: image_size={image_size!r}"
        )


def build_discriminator(image_size, channels, *, width=1.0, spectral_norm=True):
    """The standard-CNN discriminator; every conv/dense wrapped in SN."""
    check_image_size(image_size)

    def wrap(layer):
        if not spectral_norm:
            return layer
        return keras_sn.SpectralNormalization(layer, name=f"sn_{layer.name}")

    x = inputs = keras.Input((image_size, image_size, channels), name="images")
    for index, (kernel, stride, filters) in enumerate(DISCRIMINATOR_CONVS):
        conv = layers.Conv2D(
            _scaled(filters, width),
            kernel,
            strides=stride,
            padding="same",
            name=f"conv{index + 1}",
        )
        x = wrap(conv)(x)
        x = layers.LeakyReLU(negative_slope=0.1, name=f"lrelu{index + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = wrap(layers.Dense(1, name="dense"))(x)
    name = "discriminator" if spectral_norm else "discriminator_no_sn"
    return keras.Model(inputs, outputs, name=name)


def build_generator(image_size, channels, *, width=1.0, latent_dim=LATENT_DIM):
    """The standard-CNN generator: z -> images in [-1, 1]."""
    check_image_size(image_size)
    mg = image_size // 8
    bottom = _scaled(512, width)
    z = keras.Input((latent_dim,), name="z")
    x = layers.Dense(mg * mg * bottom, name="dense")(z)
    x = layers.BatchNormalization(momentum=0.9, name="dense_bn")(x)
    x = layers.ReLU(name="dense_relu")(x)
    x = layers.Reshape((mg, mg, bottom), name="reshape")(x)
    for index, filters in enumerate(GENERATOR_DECONVS):
        x = layers.Conv2DTranspose(
            _scaled(filters, width),
            4,
            strides=2,
            padding="same",
            name=f"deconv{index + 1}",
        )(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{index + 1}")(x)
        x = layers.ReLU(name=f"relu{index + 1}")(x)
    images = layers.Conv2D(
        channels, 3, padding="same", activation="tanh", name="images"
    )(x)
    return keras.Model(z, images, name="generator")


"""
## The GAN: a `keras.Model` whose `train_step` runs in `fit()`

Hinge loss (the paper's eq. 16 and 17, written as losses to minimize):

    L_D = E_x[relu(1 - D(x))] + E_z[relu(1 + D(G(z)))]
    L_G = -E_z[D(G(z))]

One `train_step` is one generator update: it receives `n_dis` batches of real
images stacked together, runs `n_dis` discriminator updates, then one
generator update. Real and generated images go through the discriminator
in one call, so each discriminator update runs exactly one power iteration
per normalized layer (the paper's Algorithm 1). The generator update calls the
discriminator with `training=False`: it uses the stored singular vectors (the
same `W / sigma` as the last discriminator update) and changes no state.
"""


def discriminator_hinge_loss(real_logits, fake_logits):
    return ops.mean(ops.relu(1.0 - real_logits)) + ops.mean(
        ops.relu(1.0 + fake_logits)
    )


def generator_hinge_loss(fake_logits):
    return -ops.mean(fake_logits)


class SNGAN(keras.Model):
    """Trains `generator` against `discriminator` with the hinge loss.

    Args:
        generator: Model mapping `(batch, latent_dim)` z to images.
        discriminator: Model mapping images to `(batch, 1)` logits.
        n_dis: Discriminator updates per generator update.
        latent_dim: Dimension of z ~ N(0, I).
        seed: Seed of the z sampler.

    Train it on a dataset of image batches of `n_dis * batch_size` images
    (`n_dis` real batches per step); `fit()` returns per-epoch means of
    `d_loss`, `g_loss`, `d_real` and `d_fake` (mean logits on real and on
    generated images in the discriminator updates).
    """

    def __init__(
        self, generator, discriminator, *, n_dis=1, latent_dim=LATENT_DIM,
        seed=0, **kwargs
    ):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.n_dis = int(n_dis)
        self.latent_dim = int(latent_dim)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.d_real_tracker = keras.metrics.Mean(name="d_real")
        self.d_fake_tracker = keras.metrics.Mean(name="d_fake")

    @property
    def metrics(self):
        return [
            self.d_loss_tracker,
            self.g_loss_tracker,
            self.d_real_tracker,
            self.d_fake_tracker,
        ]

    def compile(self, *, d_optimizer, g_optimizer, jit_compile=True, **kwargs):
        super().compile(jit_compile=jit_compile, **kwargs)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        # Create the optimizer slots now, outside of the compiled step.
        d_optimizer.build(self.discriminator.trainable_variables)
        g_optimizer.build(self.generator.trainable_variables)

    def _sample_z(self, batch_size):
        return keras.random.normal(
            (batch_size, self.latent_dim), seed=self.seed_generator
        )

    def _discriminator_step(self, real):
        batch_size = ops.shape(real)[0]
        # The generator runs outside the tape: no gradient flows to it here.
        fake = self.generator(self._sample_z(batch_size), training=True)
        with tf.GradientTape() as tape:
            logits = self.discriminator(
                ops.concatenate([real, fake], axis=0), training=True
            )
            real_logits, fake_logits = logits[:batch_size], logits[batch_size:]
            d_loss = discriminator_hinge_loss(real_logits, fake_logits)
        variables = self.discriminator.trainable_variables
        gradients = tape.gradient(d_loss, variables)
        self.d_optimizer.apply(gradients, variables)
        return d_loss, ops.mean(real_logits), ops.mean(fake_logits)

    def train_step(self, data):
        real_images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        shape = ops.shape(real_images)
        batch_size = shape[0] // self.n_dis
        real = ops.reshape(
            real_images, (self.n_dis, batch_size, *real_images.shape[1:])
        )

        # A Python loop, unrolled when traced: XLA:CPU ran this step about 8x
        # slower with the updates in a `keras.ops.fori_loop` (a while loop).
        totals = [0.0, 0.0, 0.0]
        for step in range(self.n_dis):
            values = self._discriminator_step(real[step])
            totals = [t + v for t, v in zip(totals, values)]
        d_loss, d_real, d_fake = (t / self.n_dis for t in totals)

        z = self._sample_z(batch_size)
        with tf.GradientTape() as tape:
            fake = self.generator(z, training=True)
            g_loss = generator_hinge_loss(
                self.discriminator(fake, training=False)
            )
        variables = self.generator.trainable_variables
        gradients = tape.gradient(g_loss, variables)
        self.g_optimizer.apply(gradients, variables)

        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        self.d_real_tracker.update_state(d_real)
        self.d_fake_tracker.update_state(d_fake)
        return {m.name: m.result() for m in self.metrics}


"""
## Callbacks: sample grids, and the loss / sigma log

`SampleGrid` draws the same fixed z every epoch. `TrainingLog` adds, for every
kernel of the discriminator, sigma(W): the exact largest singular value
(numpy SVD) of the raw kernel read as a matrix (output units x the rest, as in
the paper). The effective weight is W / sigma_hat for a normalized layer
(sigma_hat is the wrapper's power-iteration estimate) and W itself without SN;
`sn_bound` is the product over layers of the effective weights' sigma, the
layer-wise bound on the discriminator's Lipschitz constant that SN holds at
about 1. It writes one CSV row per epoch (our own writer: `keras.callbacks.
CSVLogger` would pad a `val_` column for every key) and puts the same values in
the epoch logs, so `fit()`'s History has them too.
"""


def image_grid(images, columns=10, scale=1):
    """(N, H, W, C) in [-1, 1] -> one (rows*H*scale, columns*W*scale, C) uint8."""
    images = np.asarray(images)
    count, height, width, channels = images.shape
    rows = -(-count // columns)
    padded = np.full((rows * columns, height, width, channels), -1.0, "float32")
    padded[:count] = images
    grid = padded.reshape(rows, columns, height, width, channels)
    grid = grid.transpose(0, 2, 1, 3, 4).reshape(
        rows * height, columns * width, channels
    )
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return np.round((grid + 1.0) * 127.5).clip(0, 255).astype("uint8")


def save_grid(images, path, columns=10):
    height = np.asarray(images).shape[1]
    scale = max(1, 64 // height)  # enlarge small images to be seen
    keras.utils.save_img(str(path), image_grid(images, columns, scale), scale=False)


class SampleGrid(keras.callbacks.Callback):
    """Saves `generator(z_fixed)` as `samples/epoch_NNN.png` after every epoch."""

    def __init__(self, generator, z_fixed, directory):
        super().__init__()
        self.generator = generator
        self.z_fixed = z_fixed
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def on_epoch_end(self, epoch, logs=None):
        images = self.generator.predict(self.z_fixed, verbose=0)
        save_grid(images, self.directory / f"epoch_{epoch + 1:03d}.png")


def kernel_sigmas(discriminator):
    """`{layer name: (exact sigma of the raw kernel, effective sigma)}`."""
    sigmas = {}
    for layer in discriminator.layers:
        normalized = isinstance(layer, keras_sn.SpectralNormalization)
        inner = layer.layer if normalized else layer
        kernel = getattr(inner, "kernel", None)
        if kernel is None:
            continue
        matrix = np.asarray(kernel).reshape(-1, kernel.shape[-1]).T
        sigma = float(np.linalg.norm(matrix.astype("float64"), 2))
        effective = sigma / float(layer.sigma) if normalized else sigma
        sigmas[inner.name] = (sigma, effective)
    return sigmas


class TrainingLog(keras.callbacks.Callback):
    """Writes the epoch's losses, spectral norms and wall time to a CSV file."""

    def __init__(self, discriminator, path):
        super().__init__()
        self.discriminator = discriminator
        self.path = pathlib.Path(path)
        self.rows = []

    def on_train_begin(self, logs=None):
        self.rows = []
        self.start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        row = {"epoch": epoch + 1, "step": (epoch + 1) * self.params["steps"]}
        row.update({key: float(value) for key, value in logs.items()})
        bound = 1.0
        for name, (sigma, effective) in kernel_sigmas(self.discriminator).items():
            row[f"sigma_{name}"] = sigma
            bound *= effective
        row["sn_bound"] = bound
        row["epoch_time_s"] = time.perf_counter() - self.epoch_start
        logs.update({k: v for k, v in row.items() if k not in ("epoch", "step")})
        self.rows.append(row)
        with open(self.path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(row))
            writer.writeheader()
            writer.writerows(self.rows)


def plot_log(rows, path, title):
    """Losses (top) and the discriminator's sigma(W) per layer (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in rows]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    for key in ("d_loss", "g_loss"):
        top.plot(steps, [row[key] for row in rows], marker="o", label=key)
    top.set_ylabel("hinge loss (epoch mean)")
    top.legend()
    top.set_title(title)
    for key in [k for k in rows[0] if k.startswith("sigma_")]:
        bottom.plot(steps, [row[key] for row in rows], label=key[len("sigma_"):])
    bottom.plot(
        steps, [row["sn_bound"] for row in rows], "k--", linewidth=2,
        label="sn_bound (product of effective sigmas)",
    )
    bottom.set_yscale("log")
    bottom.set_xlabel("generator updates")
    bottom.set_ylabel("sigma(W) of the raw kernels")
    bottom.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


"""
## Evaluation on the bundled digits (`--eval`)

A score a reader can trust needs a reference it cannot game:

- The digits are split once, stratified 50/50 (`random_state=0`), into a
  reference half and a held-out half. A small CNN classifier is trained on
  the reference half only (about 99 % accuracy on the held-out half) and
  cached under `~/.keras/keras_sn/` (or `--cache-dir`), keyed by the image size,
  the split and the classifier's version.
- Frechet distance (FD): the squared 2-Wasserstein distance between Gaussians
  fitted to the classifier's 64 penultimate features of the reference half
  and of the samples (the FID formula of Heusel et al. 2017, eq. 24 of the
  paper, with a digits classifier in place of Inception).
- KL(labels || uniform): the predicted labels' histogram against uniform; 0
  when all ten digits are produced equally often, log(10) = 2.30 for a
  generator that draws a single class.
- Every row uses as many samples as the held-out half (899), so the
  estimators' bias is the same in each row. The held-out half's own score is
  the floor: what a perfect generator (fresh real digits) gets. The GAN trains
  on all 1,797 digits; the classifier never sees the held-out half.
- Baselines in the same table: a Gaussian mixture (20 components, full
  covariance) fitted to all the digits in a 20-dimensional PCA space (the
  classic strong generator on this data), a collapsed generator (one real
  digit, repeated) and uniform noise.
"""

CLASSIFIER_VERSION = 1
SPLIT_SEED = 0


def digits_split():
    """`(reference images, reference labels, held-out images, labels)`, 8x8."""
    from sklearn.model_selection import train_test_split

    x8, y = load_digits_8x8()
    x_ref, x_held, y_ref, y_held = train_test_split(
        x8, y, test_size=0.5, stratify=y, random_state=SPLIT_SEED
    )
    return x_ref, y_ref, x_held, y_held


def default_cache_dir():
    home = os.environ.get("KERAS_HOME", os.path.join("~", ".keras"))
    return pathlib.Path(home).expanduser() / "keras_sn"


def build_classifier(image_size):
    inputs = keras.Input((image_size, image_size, 1))
    x = layers.RandomTranslation(0.1, 0.1, fill_mode="constant", fill_value=-1.0)(
        inputs
    )
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.3)(x)
    features = layers.Dense(64, activation="relu", name="features")(x)
    outputs = layers.Dense(10, activation="softmax", name="labels")(features)
    return keras.Model(inputs, outputs, name="digits_classifier")


def digits_classifier(image_size, cache_dir=None, verbose=True):
    """The cached digits classifier for `image_size`; trained if not cached."""
    cache_dir = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache_dir / (
        f"digits_classifier_{image_size}px_split{SPLIT_SEED}"
        f"_v{CLASSIFIER_VERSION}.keras"
    )
    if path.exists():
        if verbose:
            print(f"Digits classifier: loaded from the cache, {path}")
        return keras.saving.load_model(path)
    x_ref, y_ref, x_held, y_held = digits_split()
    keras.utils.set_random_seed(SPLIT_SEED)
    classifier = build_classifier(image_size)
    classifier.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    classifier.fit(
        digits_to_images(x_ref, image_size), y_ref,
        batch_size=64, epochs=40, verbose=0,
    )
    _, accuracy = classifier.evaluate(
        digits_to_images(x_held, image_size), y_held, verbose=0
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    classifier.save(path)
    if verbose:
        print(
            f"Digits classifier: trained on {len(x_ref)} digits, held-out "
            f"accuracy {accuracy:.3f}; cached in {path}"
        )
    return classifier


def frechet_distance(mu1, cov1, mu2, cov2):
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)) for Gaussians."""
    mu1, mu2 = np.asarray(mu1, "float64"), np.asarray(mu2, "float64")
    cov1, cov2 = np.asarray(cov1, "float64"), np.asarray(cov2, "float64")
    # tr((C1 C2)^(1/2)) = sum of sqrt(eig(C1^(1/2) C2 C1^(1/2))), all real >= 0.
    values, vectors = np.linalg.eigh(cov1)
    root1 = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = np.linalg.eigvalsh(root1 @ cov2 @ root1)
    trace_root = np.sqrt(np.clip(middle, 0, None)).sum()
    return float(
        np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * trace_root
    )


def kl_from_uniform(labels, classes=10):
    """KL(histogram of `labels` || uniform over `classes`), in nats."""
    p = np.bincount(np.asarray(labels), minlength=classes) / len(labels)
    p = p[p > 0]
    return float(np.sum(p * np.log(p * classes)))


class DigitsScorer:
    """Frechet distance and label KL against the reference half of digits."""

    def __init__(self, image_size, cache_dir=None, verbose=True):
        self.image_size = image_size
        classifier = digits_classifier(image_size, cache_dir, verbose)
        self.features = keras.Model(
            classifier.inputs,
            [classifier.get_layer("features").output, classifier.outputs[0]],
        )
        x_ref, _, x_held, _ = digits_split()
        self.reference = digits_to_images(x_ref, image_size)
        self.held_out = digits_to_images(x_held, image_size)
        features, _ = self.features.predict(self.reference, verbose=0)
        self.mu, self.cov = _gaussian(features)
        self.samples = len(self.held_out)

    def score(self, images):
        """`{"fd": ..., "kl": ...}` for (N, s, s, 1) images in [-1, 1]."""
        features, probabilities = self.features.predict(
            np.asarray(images, "float32"), batch_size=256, verbose=0
        )
        mu, cov = _gaussian(features)
        return {
            "fd": frechet_distance(mu, cov, self.mu, self.cov),
            "kl": kl_from_uniform(np.argmax(probabilities, axis=-1)),
        }

    def baselines(self, seed=0):
        """Scores of the floor and of reference generators, same sample size."""
        from sklearn.decomposition import PCA
        from sklearn.mixture import GaussianMixture

        rng = np.random.default_rng(seed)
        n, s = self.samples, self.image_size
        x8, _ = load_digits_8x8()
        flat = x8.reshape(len(x8), -1)
        pca = PCA(n_components=20, random_state=seed).fit(flat)
        mixture = GaussianMixture(
            n_components=20, covariance_type="full", random_state=seed
        ).fit(pca.transform(flat))
        drawn, _ = mixture.sample(n)
        gmm = np.clip(pca.inverse_transform(drawn), 0, 1).reshape(n, 8, 8)
        one_digit = self.reference[rng.integers(len(self.reference))]
        return {
            "held-out real digits (floor)": self.score(self.held_out),
            "Gaussian mixture, 20 comp. on PCA-20 (baseline)": self.score(
                digits_to_images(gmm.astype("float32"), s)
            ),
            "collapsed: one real digit repeated": self.score(
                np.repeat(one_digit[None], n, axis=0)
            ),
            "uniform noise": self.score(
                rng.uniform(-1, 1, (n, s, s, 1)).astype("float32")
            ),
        }


def _gaussian(features):
    features = np.asarray(features, "float64")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def evaluate_generator(generator, image_size, *, cache_dir=None, seed=0,
                       verbose=True):
    """Scores `generator` and the reference rows; returns a dict of rows."""
    scorer = DigitsScorer(image_size, cache_dir, verbose)
    z = np.random.default_rng(seed + 1).standard_normal(
        (scorer.samples, generator.input_shape[-1])
    ).astype("float32")
    rows = {"this generator": scorer.score(generator.predict(z, verbose=0))}
    rows.update(scorer.baselines(seed))
    return rows


def format_scores(rows):
    lines = [f"{'':50s} {'FD':>9s} {'KL':>7s}"]
    for name, score in rows.items():
        lines.append(f"{name:50s} {score['fd']:9.2f} {score['kl']:7.3f}")
    return "\n".join(lines)


"""
## Export: the generator as a SavedModel, checked after reloading

`Model.export` writes a SavedModel with a `serve` endpoint and the
`serving_default` signature `{"z": (None, 128) float32} -> {"output_0":
images in [-1, 1]}` (BatchNorm in inference mode). We reload it with plain
TensorFlow (no Keras, no `keras_sn`) and compare its output for the fixed z
with the in-memory generator's.
"""


def export_and_check(generator, export_dir, z, atol=1e-4):
    """Exports, reloads and compares; returns the max abs difference."""
    generator.export(str(export_dir), format="tf_saved_model", verbose=False)
    reloaded = tf.saved_model.load(str(export_dir))
    serve = reloaded.signatures["serving_default"]
    (input_name,) = serve.structured_input_signature[1].keys()
    outputs = serve(**{input_name: tf.constant(z)})
    (served,) = outputs.values()
    expected = generator.predict(z, verbose=0)
    difference = float(np.max(np.abs(served.numpy() - expected)))
    if not difference <= atol:
        raise RuntimeError(
            f"The SavedModel in {export_dir} does not reproduce the in-memory "
            f"generator: max |difference| = {difference:.3g} > {atol:g}."
        )
    return difference


"""
## Training
"""


def describe_device():
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU ({details.get('device_name', gpus[0].name)})"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return f"CPU ({usable} of {os.cpu_count()} logical cores usable)"


def check_options(
    *, setting, width, epochs, steps_per_epoch, batch_size, image_size,
    evaluate, source
):
    """Raises a `ValueError` that says how to fix a bad option."""
    if setting not in SETTINGS:
        raise ValueError(
            f"`setting` must be one of {sorted(SETTINGS)} (the paper's Table 1). "
            f"Received: setting={setting!r}"
        )
    if not width > 0:
        raise ValueError(f"`width` must be positive. Received: width={width!r}")
    for name, value in (
        ("epochs", epochs), ("steps_per_epoch", steps_per_epoch),
        ("batch_size", batch_size),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(
                f"`{name}` must be a positive integer. Received: {name}={value!r}"
            )
    if evaluate and source != "digits":
        raise ValueError(
            "`--eval` scores the bundled digits only (its classifier is trained "
            f"on them). Received: dataset={source!r}. Drop --eval or train on "
            "--dataset digits."
        )
    if image_size is not None:
        check_image_size(image_size)


def train(
    *,
    dataset="digits",
    data_dir=None,
    color_mode="rgb",
    image_size=None,
    width=0.25,
    setting=DEFAULT_SETTING,
    spectral_norm=True,
    epochs=10,
    steps_per_epoch=100,
    batch_size=64,
    jit_compile=True,
    seed=0,
    out="runs/dcgan",
    evaluate=False,
    cache_dir=None,
    export=True,
    verbose="auto",
):
    """Trains the SN-GAN and writes every output to `out`.

    Args:
        dataset: "digits" (bundled), "mnist", "fashion_mnist" or "cifar10"
            (downloaded by `keras.datasets`). Ignored with `data_dir`.
        data_dir: Folder of images to train on instead of `dataset`.
        color_mode: "rgb", "grayscale" or "rgba", for `data_dir`.
        image_size: Side of the square images, a multiple of 8; `None` for 24
            on digits, 32 otherwise.
        width: Multiplier of every layer's width (1.0 = the paper).
        setting: "A" to "F", the paper's Table 1 Adam / n_dis setting.
        spectral_norm: `False` trains the same discriminator unwrapped.
        epochs: Epochs; one sample grid and log row per epoch.
        steps_per_epoch: Generator updates per epoch.
        batch_size: Images per batch (each of the `n_dis` real batches).
        jit_compile: Compile the train step with XLA.
        seed: Seed of the weights, data order and z.
        out: Output folder.
        evaluate: Score the generator on the bundled digits (digits only).
        cache_dir: Where the digits classifier is cached.
        export: Save the `.keras` files and the checked SavedModel (the
            benchmarks turn it off to save time).
        verbose: `fit()` verbosity.

    Returns:
        A dict with the run's configuration, timings, final metrics, the
        export check's difference, the output paths and, with `evaluate`,
        the scores.
    """
    start = time.perf_counter()
    check_options(
        setting=setting, width=width, epochs=epochs,
        steps_per_epoch=steps_per_epoch, batch_size=batch_size,
        image_size=image_size, evaluate=evaluate,
        source="folder" if data_dir is not None else dataset,
    )
    source = "folder" if data_dir is not None else dataset
    if image_size is None:
        image_size = default_image_size(source)
    check_image_size(image_size)
    hyper = SETTINGS[setting]
    out = pathlib.Path(out)

    keras.utils.set_random_seed(seed)
    data, channels, count = make_dataset(
        dataset=dataset, data_dir=data_dir, image_size=image_size,
        color_mode=color_mode, batch_size=batch_size * hyper.n_dis, seed=seed,
    )
    out.mkdir(parents=True, exist_ok=True)

    generator = build_generator(image_size, channels, width=width)
    discriminator = build_discriminator(
        image_size, channels, width=width, spectral_norm=spectral_norm
    )
    gan = SNGAN(generator, discriminator, n_dis=hyper.n_dis, seed=seed)

    def adam():
        return keras.optimizers.Adam(
            hyper.learning_rate, beta_1=hyper.beta_1, beta_2=hyper.beta_2
        )

    gan.compile(d_optimizer=adam(), g_optimizer=adam(), jit_compile=jit_compile)

    print(
        f"Data: {source} ({count} images, {image_size}x{image_size}x{channels}); "
        f"device: {describe_device()}"
    )
    print(
        f"Setting {setting}: Adam(lr={hyper.learning_rate:g}, "
        f"beta_1={hyper.beta_1:g}, beta_2={hyper.beta_2:g}), "
        f"n_dis={hyper.n_dis}; batch {batch_size}; width x{width:g}; "
        f"spectral normalization: {'on' if spectral_norm else 'OFF'}; "
        f"{epochs} epochs x {steps_per_epoch} generator updates"
    )
    print(
        f"Train step: jit_compile={gan.jit_compile} "
        f"({'XLA' if gan.jit_compile else 'no XLA'}); TensorFlow logs "
        "'Compiled cluster using XLA!' when it compiles the step with XLA."
    )

    z_fixed = np.random.default_rng(seed).standard_normal(
        (100, LATENT_DIM)
    ).astype("float32")
    log = TrainingLog(discriminator, out / "log.csv")
    callbacks = [
        log,
        SampleGrid(generator, z_fixed, out / "samples"),
    ]
    train_start = time.perf_counter()
    history = gan.fit(
        data, epochs=epochs, steps_per_epoch=steps_per_epoch,
        callbacks=callbacks, verbose=verbose,
    )
    train_time = time.perf_counter() - train_start
    plot_log(
        log.rows, out / "training.png",
        f"setting {setting}, SN {'on' if spectral_norm else 'off'}, "
        f"width x{width:g}, {source}",
    )

    difference = None
    if export:
        generator.save(out / "generator.keras")
        discriminator.save(out / "discriminator.keras")
        difference = export_and_check(
            generator, out / "generator_savedmodel", z_fixed
        )
        print(
            f"SavedModel: {out / 'generator_savedmodel'} reloaded; it "
            "reproduces the in-memory generator (max |difference| "
            f"{difference:.2g})."
        )

    epoch_times = [row["epoch_time_s"] for row in log.rows]
    later = epoch_times[1:] or epoch_times
    result = {
        "dataset": source,
        "image_size": image_size,
        "channels": channels,
        "width": width,
        "setting": setting,
        "spectral_norm": spectral_norm,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": batch_size,
        "jit_compile": bool(gan.jit_compile),
        "seed": seed,
        "device": describe_device(),
        "train_time_s": train_time,
        "first_epoch_s": epoch_times[0],
        "steps_per_s": steps_per_epoch * len(later) / sum(later),
        "final": {k: float(v[-1]) for k, v in history.history.items()},
        "export_max_abs_difference": difference,
        "outputs": {
            "samples": str(out / "samples"),
            "log": str(out / "log.csv"),
            "plot": str(out / "training.png"),
        },
    }
    if export:
        result["outputs"].update(
            generator=str(out / "generator.keras"),
            discriminator=str(out / "discriminator.keras"),
            savedmodel=str(out / "generator_savedmodel"),
        )
    if evaluate:
        scores = evaluate_generator(
            generator, image_size, cache_dir=cache_dir, seed=seed
        )
        print(format_scores(scores))
        result["eval"] = scores
    result["wall_time_s"] = time.perf_counter() - start
    with open(out / "run.json", "w") as file:
        json.dump(result, file, indent=2)
    print(
        f"Done in {result['wall_time_s']:.0f} s (training {train_time:.0f} s, "
        f"{result['steps_per_s']:.2f} generator updates/s after the first "
        f"epoch). Outputs in {out}/"
    )
    return result


"""
## Command line
"""


def make_parser():
    parser = argparse.ArgumentParser(
        prog="dcgan.py",
        description=(
            "Train the SN-GAN 'standard CNN' (Miyato et al. 2018, Table 3) with "
            "keras_sn.SpectralNormalization on every discriminator layer, the "
            "hinge loss and XLA, then export the generator as a SavedModel. "
            "With no flags: the bundled digits, setting C, 10 x 100 generator "
            "updates, a few minutes on a CPU."
        ),
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset", choices=DATASETS, default=None,
        help="digits: scikit-learn's bundled 8x8 digits, upsampled (no "
        "download; the default). mnist, fashion_mnist, cifar10: "
        "keras.datasets, downloaded on first use (needs a network).",
    )
    data.add_argument(
        "--data-dir", default=None, metavar="PATH",
        help="train on a folder of images (.png/.jpg/.jpeg/.bmp/.gif, "
        "subfolders included) instead of --dataset",
    )
    data.add_argument(
        "--color-mode", choices=("rgb", "grayscale", "rgba"), default="rgb",
        help="channels of the --data-dir images (default: rgb)",
    )
    data.add_argument(
        "--image-size", type=int, default=None,
        help="side of the square images, a multiple of 8 (Mg = size/8); "
        "default 24 for digits, 32 otherwise",
    )
    model = parser.add_argument_group("model and training")
    model.add_argument(
        "--width", type=float, default=0.25,
        help="multiplier of every layer's width; 1.0 is the paper's "
        "(64..512 filters); the default 0.25 trains on a CPU in minutes",
    )
    model.add_argument(
        "--setting", choices=sorted(SETTINGS), default=DEFAULT_SETTING,
        help="the paper's Table 1 Adam setting (lr, beta_1, beta_2, n_dis): "
        + "; ".join(
            f"{k}: {s.learning_rate:g}, {s.beta_1:g}, {s.beta_2:g}, {s.n_dis}"
            for k, s in SETTINGS.items()
        )
        + ". B is the paper's best for SN-GANs with this CNN after 100K "
        "updates (its footnote 4); C, the default, is the best on the digits "
        "in a few minutes (default: C)",
    )
    model.add_argument(
        "--no-sn", dest="spectral_norm", action="store_false",
        help="train the same discriminator without spectral normalization "
        "(the baseline SN is compared with)",
    )
    model.add_argument(
        "--epochs", type=int, default=10,
        help="epochs; a sample grid and a log row after each (default: 10)",
    )
    model.add_argument(
        "--steps-per-epoch", type=int, default=100,
        help="generator updates per epoch, each after n_dis discriminator "
        "updates (default: 100)",
    )
    model.add_argument(
        "--batch-size", type=int, default=64,
        help="images per batch: each discriminator update sees one real and "
        "one generated batch (default: 64)",
    )
    model.add_argument(
        "--no-jit", dest="jit_compile", action="store_false",
        help="run the train step as a plain tf.function, without XLA "
        "(default: jit_compile=True, XLA on CPU and GPU)",
    )
    model.add_argument(
        "--seed", type=int, default=0,
        help="seed of the weights, the data order and z (default: 0)",
    )
    output = parser.add_argument_group("outputs and evaluation")
    output.add_argument(
        "--out", default="runs/dcgan", metavar="DIR",
        help="output folder: samples/epoch_NNN.png, log.csv, training.png, "
        "generator.keras, discriminator.keras, generator_savedmodel/, run.json "
        "(default: runs/dcgan)",
    )
    output.add_argument(
        "--eval", dest="evaluate", action="store_true",
        help="score the generator on the bundled digits: Frechet distance in "
        "a digits classifier's feature space and KL(labels || uniform), next "
        "to the held-out real digits (floor) and reference generators",
    )
    output.add_argument(
        "--cache-dir", default=None, metavar="DIR",
        help="where --eval caches its digits classifier (default: "
        "$KERAS_HOME/keras_sn or ~/.keras/keras_sn)",
    )
    return parser


def main(argv=None):
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.dataset is not None and args.data_dir is not None:
        parser.error("pass either --dataset or --data-dir, not both")
    options = vars(args)
    options["dataset"] = options["dataset"] or "digits"
    try:
        check_options(
            setting=args.setting, width=args.width, epochs=args.epochs,
            steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
            image_size=args.image_size, evaluate=args.evaluate,
            source="folder" if args.data_dir is not None else options["dataset"],
        )
    except ValueError as error:
        parser.error(str(error))
    try:
        return train(**options)
    except DataError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
