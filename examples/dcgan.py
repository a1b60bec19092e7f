"""
Title: SN-GAN "standard CNN" with `keras_sn`, trained in `fit()`
Author: keras_sn contributors
Description: The SN-GAN of Miyato et al. (2018, Table 3) on scikit-learn's
    bundled digits, in under ten minutes on a CPU; exported as a SavedModel.
Accelerator: GPU when there is one (then with XLA); CPU otherwise.

## Introduction

Every discriminator layer is wrapped in `keras_sn.SpectralNormalization`,
which divides its weight by its largest singular value. Top to bottom: data;
the paper's "standard CNN"; a `train_step` with the hinge loss and `n_dis`;
`fit()` with a sample grid, `keras_sn.callbacks.SigmaLogger` and
`keras.callbacks.CSVLogger`; `.keras` files and a SavedModel export, reloaded
and checked. `--eval`: scores (examples/digits_metrics.py); `--help`: flags.
Reference: T. Miyato et al. Spectral Normalization for Generative Adversarial
Networks. ICLR 2018. https://arxiv.org/abs/1802.05957
"""

"""
## Setup
"""

import argparse
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

import digits_metrics  # noqa: E402  (examples/digits_metrics.py: --eval)
import keras_sn  # noqa: E402

LATENT_DIM = 128  # z ~ N(0, I) in R^128 (Table 3)
# The paper's Table 1: Adam (learning rate, beta_1, beta_2), n_dis (D updates
# per G update). B: the paper's best after 100K updates; C learns faster.
SETTINGS = {"A": (1e-4, 0.5, 0.9, 5), "B": (1e-4, 0.5, 0.999, 1),
            "C": (2e-4, 0.5, 0.999, 1), "D": (1e-3, 0.5, 0.9, 5),
            "E": (1e-3, 0.5, 0.999, 5), "F": (1e-3, 0.9, 0.999, 5)}

"""
## Data

Images in [-1, 1] (tanh's range) and int labels, as two `tf.data.Dataset`s.
The 8x8 digits are upsampled to 24x24 (at 16x16 our runs collapsed).
"""


def load_images(dataset="digits", data_dir=None, image_size=24):
    """`(images, labels, channels, count)`; a `ValueError` if none."""
    if data_dir is not None:
        if not pathlib.Path(data_dir).is_dir():
            raise ValueError(f"--data-dir {data_dir!r} is not a folder of images")
        pairs = keras.utils.image_dataset_from_directory(
            data_dir, image_size=(image_size,) * 2, batch_size=None,
            shuffle=False, verbose=False)  # RGB; a ValueError if empty
        return (pairs.map(lambda x, y: x / 127.5 - 1.0).cache(),
                pairs.map(lambda x, y: tf.cast(y, "int32")), 3,
                int(pairs.cardinality()))
    if dataset == "digits":
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        x = tf.image.resize(x.reshape(-1, 8, 8, 1) / 8.0 - 1.0, (image_size,) * 2)
    else:  # keras.datasets: downloaded once to ~/.keras/datasets
        (x, y), _ = getattr(keras.datasets, dataset).load_data()
        x = tf.image.resize(x.reshape(*x.shape[:3], -1), (image_size,) * 2)
        x = x / 127.5 - 1.0
    x = np.clip(np.asarray(x, "float32"), -1, 1)
    return (tf.data.Dataset.from_tensor_slices(x),
            tf.data.Dataset.from_tensor_slices(y.reshape(-1).astype("int32")),
            x.shape[-1], len(x))


"""
## The models: the paper's "standard CNN" (Table 3)

Discriminator: seven convs (kernel, stride, filters below) with LeakyReLU(0.1)
and dense -> 1, each wrapped in `keras_sn.SpectralNormalization` (unless
`spectral_norm=False`: the baseline). LeakyReLU is written `max(x, 0.1 x)`:
with the `LeakyRelu` op TensorFlow's graph optimizer logs `remapper failed:
INVALID_ARGUMENT ... LeakyReluGrad` (a TensorFlow bug, plain Keras too).
Generator: z -> dense Mg x Mg x 512 (Mg = M / 8), three 4x4 s2 transposed
convs, all with BatchNorm and ReLU, a 3x3 conv and tanh. `width` multiplies
every width (1.0 is the paper's).
"""

DISCRIMINATOR_CONVS = ((3, 1, 64), (4, 2, 64), (3, 1, 128), (4, 2, 128),
                       (3, 1, 256), (4, 2, 256), (3, 1, 512))
GENERATOR_DECONVS = (256, 128, 64)


@keras.saving.register_keras_serializable(package="keras_sn_examples")
def leaky_relu(x):
    return ops.maximum(x, 0.1 * x)  # LeakyReLU(negative_slope=0.1)


def sn(layer, spectral_norm=True):  # wrapped in SpectralNormalization, or not
    if not spectral_norm:
        return layer
    return keras_sn.SpectralNormalization(layer, name=f"sn_{layer.name}")


def discriminator_features(images, *, width, spectral_norm):
    """The seven convs and LeakyReLUs, flattened (phi in the conditional one)."""
    x = images
    for index, (kernel, stride, filters) in enumerate(DISCRIMINATOR_CONVS):
        conv = layers.Conv2D(max(1, round(filters * width)), kernel,
                             strides=stride, padding="same", name=f"conv{index + 1}")
        x = sn(conv, spectral_norm)(x)
        x = layers.Activation(leaky_relu, name=f"lrelu{index + 1}")(x)
    return layers.Flatten(name="flatten")(x)


def build_discriminator(image_size, channels, *, width=1.0, spectral_norm=True):
    images = keras.Input((image_size, image_size, channels), name="images")
    x = discriminator_features(images, width=width, spectral_norm=spectral_norm)
    logits = sn(layers.Dense(1, name="dense"), spectral_norm)(x)
    return keras.Model(images, logits, name="discriminator")


def build_generator(image_size, channels, *, width=1.0):
    def norm(x, name):  # momentum 0.9 as in Chainer: inference follows training
        return layers.BatchNormalization(momentum=0.9, name=name)(x)

    z = keras.Input((LATENT_DIM,), name="z")
    mg, bottom = image_size // 8, max(1, round(512 * width))
    x = layers.Dense(mg * mg * bottom, name="dense")(z)
    x = layers.ReLU()(norm(layers.Reshape((mg, mg, bottom))(x), "bn0"))
    for index, filters in enumerate(GENERATOR_DECONVS):
        x = layers.Conv2DTranspose(max(1, round(filters * width)), 4, strides=2,
                                   padding="same", name=f"deconv{index + 1}")(x)
        x = layers.ReLU()(norm(x, f"bn{index + 1}"))
    images = layers.Conv2D(channels, 3, padding="same", activation="tanh",
                           name="to_images")(x)
    return keras.Model(z, images, name="generator")


"""
## The GAN: a `train_step` with the hinge loss and n_dis

    L_D = E_x[relu(1 - D(x))] + E_z[relu(1 + D(G(z)))]     (eq. 16)
    L_G = -E_z[D(G(z))]                                     (eq. 17)

Real and fake images go through D in one call: one power iteration per
update (the paper's Algorithm 1). The generator update calls D with
`training=False`: the stored singular vectors, no state change.
"""


def discriminator_hinge_loss(real_logits, fake_logits):  # eq. 16
    return ops.mean(ops.relu(1 - real_logits)) + ops.mean(ops.relu(1 + fake_logits))


def generator_hinge_loss(fake_logits):  # eq. 17
    return -ops.mean(fake_logits)


class SNGAN(keras.Model):
    """Per step: `n_dis` D updates, one G update, on `n_dis * batch` images."""

    def __init__(self, generator, discriminator, *, n_dis=1, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.generator, self.discriminator, self.n_dis = generator, discriminator, n_dis
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.trackers = [keras.metrics.Mean(name=n) for n in ("d_loss", "g_loss")]

    @property
    def metrics(self):
        return self.trackers

    def compile(self, *, d_optimizer, g_optimizer, **kwargs):
        super().compile(**kwargs)
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer
        d_optimizer.build(self.discriminator.trainable_variables)
        g_optimizer.build(self.generator.trainable_variables)

    def generator_inputs(self, batch_size, labels):
        return keras.random.normal((batch_size, LATENT_DIM),
                                   seed=self.seed_generator)

    def discriminate(self, images, labels, training):  # labels: conditional
        return self.discriminator(images, training=training)

    def train_step(self, data):
        real, labels = data if isinstance(data, tuple) else (data, None)
        n = ops.shape(real)[0] // self.n_dis  # the batch size
        d_loss = 0.0
        for step in range(self.n_dis):  # a Python loop, unrolled when traced
            step_labels = None if labels is None else labels[step * n:(step + 1) * n]
            fake = self.generator(self.generator_inputs(n, step_labels),
                                  training=True)  # fakes get the real labels
            both = None if labels is None else ops.tile(step_labels, [2])
            with tf.GradientTape() as tape:
                logits = self.discriminate(ops.concatenate(
                    [real[step * n:(step + 1) * n], fake], axis=0), both, True)
                loss = discriminator_hinge_loss(logits[:n], logits[n:])
            variables = self.discriminator.trainable_variables
            self.d_optimizer.apply(tape.gradient(loss, variables), variables)
            d_loss += loss / self.n_dis
        with tf.GradientTape() as tape:
            fake = self.generator(self.generator_inputs(n, step_labels),
                                  training=True)
            g_loss = generator_hinge_loss(
                self.discriminate(fake, step_labels, False))
        variables = self.generator.trainable_variables
        self.g_optimizer.apply(tape.gradient(g_loss, variables), variables)
        self.trackers[0].update_state(d_loss)
        self.trackers[1].update_state(g_loss)
        return {m.name: m.result() for m in self.metrics}


"""
## Callbacks and export

`keras_sn.callbacks.SigmaLogger` adds `sigma/<layer>` (what each weight is
divided by) to the epoch logs; `keras.callbacks.CSVLogger` writes them with
the losses. The generator is exported as a SavedModel whose `serving_default` maps its
named inputs to images, reloaded with plain TensorFlow and checked.
"""


def image_grid(images, columns=10, gap=2, scale=2):
    """(N, H, W, C) in [-1, 1] -> uint8 grid, `gap` white pixels between cells."""
    images = np.asarray(images).repeat(scale, axis=1).repeat(scale, axis=2)
    count, h, w, channels = images.shape
    rows = -(-count // columns)  # ceil
    grid = np.ones((rows * (h + gap) - gap, columns * (w + gap) - gap, channels))
    for i, image in enumerate(images):
        top, left = (i // columns) * (h + gap), (i % columns) * (w + gap)
        grid[top:top + h, left:left + w] = image
    return np.round((grid + 1.0) * 127.5).clip(0, 255).astype("uint8")


def save_grid(generator, inputs, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    keras.utils.save_img(path, image_grid(generator.predict(inputs, verbose=0)),
                         scale=False)


def export_and_check(generator, export_dir, inputs, atol=1e-4):
    """Exports, reloads without Keras, compares; returns the max |difference|."""
    generator.export(str(export_dir), format="tf_saved_model", verbose=False)
    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    arrays = inputs if isinstance(inputs, list) else [inputs]
    (served,) = serve(**{t.name.split(":")[0]: tf.constant(a)
                         for t, a in zip(generator.inputs, arrays)}).values()
    difference = float(np.max(np.abs(
        served.numpy() - generator.predict(inputs, verbose=0))))
    if not difference <= atol:
        raise RuntimeError(f"The SavedModel in {export_dir} differs from the "
                           f"generator by {difference:.3g} > {atol:g}")
    return difference


"""
## Training and the command line

`--jit auto`: XLA on a GPU, TensorFlow graph mode on a CPU (where XLA ran
this step 2x slower). The default budget: 12 epochs x 300 generator updates.
D learns at half G's rate (`--d-lr-factor`): at G's rate it wins (examples/README).
"""


def choose_jit(jit):  # (jit_compile, the reason) for "auto", "on" or "off"
    if jit != "auto":
        return jit == "on", f"jit_compile={jit == 'on'} (--jit {jit})"
    if tf.config.list_physical_devices("GPU"):
        return True, "jit_compile=True (XLA): --jit auto and a GPU is visible"
    return False, ("jit_compile=False (TensorFlow graph mode): --jit auto on a "
                   "CPU, where XLA ran this step about 2x slower")


def adam(setting, lr_factor=1.0):  # the setting's Adam; a constant rate
    lr, beta_1, beta_2, _ = SETTINGS[setting]
    if not lr_factor > 0:  # Adam at a rate <= 0 would not train, silently
        raise ValueError(f"--d-lr-factor must be above 0, not {lr_factor!r}")
    return keras.optimizers.Adam(lr * lr_factor, beta_1=beta_1, beta_2=beta_2)


def build_gan(image_size, channels, *, width, spectral_norm, n_dis, seed):
    """The GAN and the inputs of the sample grid (100 fixed z)."""
    gan = SNGAN(build_generator(image_size, channels, width=width),
                build_discriminator(image_size, channels, width=width,
                                    spectral_norm=spectral_norm),
                n_dis=n_dis, seed=seed)
    return gan, np.random.default_rng(seed).standard_normal(
        (100, LATENT_DIM)).astype("float32")


def train(*, dataset="digits", data_dir=None, image_size=None, width=0.25,
          setting="C", d_lr_factor=0.5, spectral_norm=True, epochs=12,
          steps_per_epoch=300, batch_size=64, jit="auto", seed=0, evaluate=False,
          out="runs/dcgan", cache_dir=None, export=True, verbose="auto",
          conditional=None):
    """Trains, writes to `out`, returns results; `conditional`: its module."""
    start, out = time.perf_counter(), pathlib.Path(out)
    image_size = image_size or (24 if dataset == "digits" and not data_dir else 32)
    if not isinstance(image_size, int) or image_size < 8 or image_size % 8:
        raise ValueError(f"`image_size` must be a multiple of 8, not {image_size!r}")
    if evaluate and (dataset != "digits" or data_dir):
        raise ValueError("--eval scores generators of the bundled digits only")
    keras.utils.set_random_seed(seed)
    images, labels, channels, count = load_images(dataset, data_dir, image_size)
    n_dis = SETTINGS[setting][3]
    data = (tf.data.Dataset.zip(images, labels) if conditional else images)
    data = (data.shuffle(min(count, 20_000), seed=seed).repeat()
            .batch(batch_size * n_dis, drop_remainder=True).prefetch(4))
    gan, grid_inputs = (conditional or sys.modules[__name__]).build_gan(
        image_size, channels, width=width, spectral_norm=spectral_norm,
        n_dis=n_dis, seed=seed)
    jit_compile, why = choose_jit(jit)
    gan.compile(d_optimizer=adam(setting, d_lr_factor),
                g_optimizer=adam(setting), jit_compile=jit_compile)
    print(f"Data: {data_dir or dataset}, {count} images {image_size}x"
          f"{image_size}x{channels}. Setting {setting} (lr, beta_1, beta_2, "
          f"n_dis = {SETTINGS[setting]}), D's lr x{d_lr_factor:g}, batch "
          f"{batch_size}, width x{width:g}, SN {'on' if spectral_norm else 'OFF'}"
          f", {epochs} x {steps_per_epoch} generator updates.\nTrain step: {why}.")
    out.mkdir(parents=True, exist_ok=True)
    callbacks = [keras.callbacks.LambdaCallback(  # a sample grid per epoch
                     on_epoch_end=lambda epoch, logs: save_grid(
                         gan.generator, grid_inputs,
                         out / f"samples/epoch_{epoch + 1:03d}.png")),
                 keras_sn.callbacks.SigmaLogger(),
                 keras.callbacks.CSVLogger(str(out / "log.csv"))]
    history = gan.fit(data, epochs=epochs, steps_per_epoch=steps_per_epoch,
                      callbacks=callbacks, shuffle=False, verbose=verbose)
    result = {"train_time_s": time.perf_counter() - start, "gan": gan,
              "history": history.history, "jit_compile": jit_compile}
    if export:
        gan.generator.save(out / "generator.keras")
        gan.discriminator.save(out / "discriminator.keras")
        result["export_difference"] = export_and_check(
            gan.generator, out / "generator_savedmodel", grid_inputs)
        print(f"Saved {out}/*.keras; exported {out}/generator_savedmodel, "
              f"reloaded: max |difference| {result['export_difference']:.2g}")
    if evaluate:
        score = (conditional.evaluate if conditional
                 else digits_metrics.evaluate_generator)
        result["eval"] = score(gan.generator, image_size, cache_dir=cache_dir,
                               seed=seed)
        print(digits_metrics.format_scores(result["eval"]))
    result["wall_time_s"] = time.perf_counter() - start
    print(f"Done in {result['wall_time_s']:.0f} s. Outputs in {out}/")
    return result


def make_parser(description=__doc__.split("\n")[1][7:], default_out="runs/dcgan",
                default_steps=300, default_d_lr_factor=0.5):
    parser = argparse.ArgumentParser(description=description)
    add = parser.add_argument
    add("--dataset", choices=("digits", "mnist", "fashion_mnist", "cifar10"),
        default="digits", help="digits: the bundled 8x8 digits at 24x24 "
        "(default); the others: keras.datasets, downloaded once")
    add("--data-dir", metavar="PATH", help="a folder of images (RGB; subfolders"
        " = classes) instead, via image_dataset_from_directory")
    add("--image-size", type=int, help="a multiple of 8 (default: 24 digits, 32)")
    add("--width", type=float, default=0.25, metavar="W",
        help="every layer's width x W; 1 is the paper's (0.25)")
    add("--setting", choices=sorted(SETTINGS), default="C", help="the paper's "
        "Table 1 (lr, beta_1, beta_2, n_dis): " + ", ".join(
            f"{k} {v}" for k, v in SETTINGS.items()) + " (default: C)")
    add("--d-lr-factor", type=float, default=default_d_lr_factor, metavar="F",
        help=f"D's learning rate = F x the setting's ({default_d_lr_factor:g})")
    add("--no-sn", dest="spectral_norm", action="store_false",
        help="no spectral normalization in the discriminator (the baseline)")
    add("--epochs", type=int, default=12, help="epochs; a grid, CSV row each (12)")
    add("--steps-per-epoch", type=int, default=default_steps,
        help=f"generator updates per epoch ({default_steps})")
    add("--batch-size", type=int, default=64, help="images per real, fake batch (64)")
    add("--jit", choices=("auto", "on", "off"), default="auto", help="XLA: auto "
        "= on with a GPU, off (graph mode) on a CPU, where XLA is 2x slower")
    add("--seed", type=int, default=0, help="seed of weights, data order, z (0)")
    add("--out", default=default_out, metavar="DIR", help="output folder: "
        f"samples/, log.csv, *.keras, generator_savedmodel/ ({default_out})")
    add("--eval", dest="evaluate", action="store_true", help="score the "
        "generator with examples/digits_metrics.py (bundled digits only)")
    add("--cache-dir", metavar="DIR", help="where --eval caches its digits "
        "classifier (default: $KERAS_HOME/keras_sn)")
    return parser


def main(argv=None):
    parser = make_parser()
    try:
        return train(**vars(parser.parse_args(argv)))
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
