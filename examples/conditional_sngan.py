"""
Title: Class-conditional SN-GAN with a projection discriminator
Author: keras_sn contributors
Description: A class-conditional SN-GAN on scikit-learn's bundled digits: the
    projection discriminator of Miyato & Koyama (2018) with
    `keras_sn.SpectralNormalization` on every conv, dense and embedding layer,
    and a generator with conditional batch normalization.
Accelerator: GPU when there is one (then with XLA); CPU otherwise.

## Introduction

`examples/dcgan.py` trains an unconditional SN-GAN. Here both networks also
receive a class label y:

- the discriminator is the projection form
  `logit = psi(phi(x)) + <embed(y), phi(x)>`, where phi is the Table 3 conv
  stack (flattened), psi a dense layer and embed a `keras.layers.Embedding`;
  all three, and every conv, are wrapped in `keras_sn.SpectralNormalization`
  (an `Embedding` is normalized like a dense kernel, rows = classes);
- the generator's BatchNormalization layers are conditional: the normalized
  activations are scaled and shifted by a class-dependent gain and bias,
  looked up in two embeddings (de Vries et al. 2017; Miyato & Koyama 2018).

Training, callbacks, `.keras` saving and the SavedModel export are
`examples/dcgan.py`'s (this file imports it). The sample grid has one row per
class. `--eval` reports the digits classifier's accuracy on generated digits
against the labels they were requested with, and the mean per-class Frechet
distance, beside the same figures for held-out real digits.

References: T. Miyato, M. Koyama. cGANs with Projection Discriminator. ICLR
2018. https://arxiv.org/abs/1802.05637 -- H. de Vries et al. Modulating early
visual processing by language. NeurIPS 2017.
"""

"""
## Setup
"""

import functools
import os
import pathlib
import sys
import types

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402
from keras import ops  # noqa: E402

import dcgan  # noqa: E402  (examples/dcgan.py)
import digits_metrics  # noqa: E402  (examples/digits_metrics.py)

"""
## The generator: conditional batch normalization

`ConditionalBatchNormalization` normalizes like `BatchNormalization` without
its own gain and bias, then applies `gamma[y] * x + beta[y]`, with gamma and
beta rows of two embeddings (initialized to 1 and 0: plain BatchNorm at
first).
"""


@keras.saving.register_keras_serializable(package="keras_sn_examples")
class ConditionalBatchNormalization(layers.Layer):
    """`[x, labels] -> gamma[labels] * BatchNorm(x) + beta[labels]`."""

    def __init__(self, num_classes, momentum=0.9, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.momentum = num_classes, momentum
        self.norm = layers.BatchNormalization(momentum=momentum, center=False,
                                              scale=False)

    def build(self, input_shape):
        channels = input_shape[0][-1]
        self.norm.build(input_shape[0])
        self.gamma = layers.Embedding(self.num_classes, channels,
                                      embeddings_initializer="ones")
        self.beta = layers.Embedding(self.num_classes, channels,
                                     embeddings_initializer="zeros")
        self.gamma.build(input_shape[1])
        self.beta.build(input_shape[1])

    def call(self, inputs, training=None):
        x, labels = inputs
        x = self.norm(x, training=training)
        shape = (-1,) + (1,) * (len(x.shape) - 2) + (x.shape[-1],)
        gamma = ops.reshape(self.gamma(labels), shape)
        beta = ops.reshape(self.beta(labels), shape)
        return x * gamma + beta

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "momentum": self.momentum}


def build_generator(image_size, channels, num_classes, *, width=1.0):
    """dcgan.py's Table 3 generator, its BatchNorms conditional on `labels`."""
    z = keras.Input((dcgan.LATENT_DIM,), name="z")
    labels = keras.Input((), dtype="int32", name="labels")
    mg, bottom = image_size // 8, max(1, round(512 * width))
    x = layers.Dense(mg * mg * bottom, name="dense")(z)
    x = layers.Reshape((mg, mg, bottom))(x)
    x = layers.ReLU()(ConditionalBatchNormalization(num_classes, name="cbn0")(
        [x, labels]))
    for index, filters in enumerate(dcgan.GENERATOR_DECONVS):
        x = layers.Conv2DTranspose(max(1, round(filters * width)), 4, strides=2,
                                   padding="same", name=f"deconv{index + 1}")(x)
        x = ConditionalBatchNormalization(num_classes, name=f"cbn{index + 1}")(
            [x, labels])
        x = layers.ReLU()(x)
    images = layers.Conv2D(channels, 3, padding="same", activation="tanh",
                           name="to_images")(x)
    return keras.Model([z, labels], images, name="conditional_generator")


"""
## The projection discriminator

phi(x) is dcgan.py's seven-conv stack, flattened; psi a dense layer to one
logit; embed(y) a class embedding of phi's width. The projection term
`<embed(y), phi(x)>` makes the logit class-aware: it is large when the
features of x align with the embedding of its class.
"""


def build_discriminator(image_size, channels, num_classes, *, width=1.0,
                        spectral_norm=True):
    images = keras.Input((image_size, image_size, channels), name="images")
    labels = keras.Input((), dtype="int32", name="labels")
    phi = dcgan.discriminator_features(images, width=width,
                                       spectral_norm=spectral_norm)
    psi = dcgan.sn(layers.Dense(1, name="psi"), spectral_norm)(phi)
    embed = dcgan.sn(layers.Embedding(num_classes, phi.shape[-1], name="embed"),
                     spectral_norm)(labels)
    projection = layers.Dot(axes=1, name="projection")([embed, phi])
    logits = layers.Add(name="logits")([psi, projection])
    return keras.Model([images, labels], logits, name="projection_discriminator")


"""
## The GAN: dcgan.py's train step, with labels

The data yields `(images, labels)`. In each discriminator update the
generated half gets the real half's labels (the same class counts), and so
does the generator update.
"""


class ConditionalSNGAN(dcgan.SNGAN):
    def generator_inputs(self, batch_size, labels):
        return [super().generator_inputs(batch_size, None), labels]

    def discriminate(self, images, labels, training):
        return self.discriminator([images, labels], training=training)


def build_gan(image_size, channels, *, width, spectral_norm, n_dis, seed,
              num_classes=10):
    """The GAN and the sample grid's inputs: one row of 10 per class."""
    gan = ConditionalSNGAN(
        build_generator(image_size, channels, num_classes, width=width),
        build_discriminator(image_size, channels, num_classes, width=width,
                            spectral_norm=spectral_norm),
        n_dis=n_dis, seed=seed)
    labels = np.repeat(np.arange(num_classes), 10).astype("int32")
    z = np.random.default_rng(seed).standard_normal(
        (len(labels), dcgan.LATENT_DIM)).astype("float32")
    return gan, [z, labels]


"""
## Training and scores

`dcgan.train` does the rest: data, compile, `fit` with the same callbacks,
`.keras` files and the checked SavedModel export (inputs `z` and `labels`).
`--eval` adds the digits classifier's accuracy on generated digits against
their requested labels and the mean per-class Frechet distance. D learns at
the setting's rate (`--d-lr-factor 1`; at dcgan.py's 0.5, one seed of three
drew the wrong digits: accuracy 0.80).
"""


def train(*, data_dir=None, out="runs/conditional_sngan", steps_per_epoch=200,
          d_lr_factor=1.0, **options):
    """Trains the conditional SN-GAN (dcgan.train's options); returns results."""
    num_classes = 10  # digits, mnist, fashion_mnist, cifar10; a folder:
    if data_dir and pathlib.Path(data_dir).is_dir():  # one class per subfolder
        num_classes = max(1, sum(p.is_dir() for p in pathlib.Path(data_dir).iterdir()))
    parts = types.SimpleNamespace(
        build_gan=functools.partial(build_gan, num_classes=num_classes),
        evaluate=digits_metrics.evaluate_conditional)
    return dcgan.train(data_dir=data_dir, out=out, steps_per_epoch=steps_per_epoch,
                       d_lr_factor=d_lr_factor, conditional=parts, **options)


def main(argv=None):
    parser = dcgan.make_parser(
        description=__doc__.split("\n")[1][7:], default_out="runs/conditional_sngan",
        default_steps=200, default_d_lr_factor=1.0)
    args = parser.parse_args(argv)
    try:
        return train(**vars(args))
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
