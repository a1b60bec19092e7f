"""Discriminator normalization vs none across the paper's settings, on digits.

For each Table 1 setting (A-F), each discriminator normalization (`--norms`:
`sn` = keras_sn.SpectralNormalization on every layer, `none`, and `wn` =
keras_sn.WeightNormalization where the package has it) and each seed, it
trains the SN-GAN "standard CNN" of examples/dcgan.py (the same Table 3
models and hinge-loss step, rebuilt here from public `keras_sn` names only)
with the same number of generator updates for every setting, as in the
paper, and scores it with examples/digits_metrics.py: the Frechet distance
(FD) in a digits classifier's feature space and KL(labels || uniform). It
prints the machine, every run and a markdown table (median and range over the
seeds), and writes all of it to `--json` (an interrupted run resumes).

Usage (the table in examples/README.md, about an hour on 2 CPU cores):
    python benchmarks/gan_quality.py --norms sn,none,wn --updates 500 \
        --batch-size 32 --json benchmarks/results/gan_quality_500.json

XLA is off (`--jit` turns it on): on a CPU, TensorFlow graph mode ran this
step about 2x faster; it changes the speed, not the computation.
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402
from keras import ops  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import digits_metrics  # noqa: E402

import keras_sn  # noqa: E402

LATENT_DIM = 128
SETTINGS = {"A": (1e-4, 0.5, 0.9, 5), "B": (1e-4, 0.5, 0.999, 1),
            "C": (2e-4, 0.5, 0.999, 1), "D": (1e-3, 0.5, 0.9, 5),
            "E": (1e-3, 0.5, 0.999, 5), "F": (1e-3, 0.9, 0.999, 5)}
CONVS = ((3, 1, 64), (4, 2, 64), (3, 1, 128), (4, 2, 128), (3, 1, 256),
         (4, 2, 256), (3, 1, 512))


def wrapper(norm):
    """The layer wrapper of a normalization name: sn, wn or none."""
    if norm == "sn":
        return keras_sn.SpectralNormalization
    if norm == "wn":
        wn = getattr(keras_sn, "WeightNormalization", None)
        if wn is None:
            raise SystemExit("--norms wn needs keras_sn.WeightNormalization, "
                             "which this version of keras_sn does not have")
        return wn
    if norm == "none":
        return lambda layer: layer
    raise SystemExit(f"Unknown normalization {norm!r}: sn, wn or none")


def leaky_relu(x):
    return ops.maximum(x, 0.1 * x)  # as in examples/dcgan.py


def build_discriminator(image_size, channels, width, norm="sn"):
    wrap = wrapper(norm)
    x = images = keras.Input((image_size, image_size, channels))
    for kernel, stride, filters in CONVS:
        x = wrap(layers.Conv2D(max(1, round(filters * width)), kernel,
                               strides=stride, padding="same"))(x)
        x = layers.Activation(leaky_relu)(x)
    return keras.Model(images, wrap(layers.Dense(1))(layers.Flatten()(x)))


def build_generator(image_size, channels, width):
    mg, bottom = image_size // 8, max(1, round(512 * width))
    z = keras.Input((LATENT_DIM,))
    x = layers.Reshape((mg, mg, bottom))(layers.Dense(mg * mg * bottom)(z))
    x = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(x))
    for filters in (256, 128, 64):
        x = layers.Conv2DTranspose(max(1, round(filters * width)), 4, strides=2,
                                   padding="same")(x)
        x = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(x))
    return keras.Model(z, layers.Conv2D(channels, 3, padding="same",
                                        activation="tanh")(x))


class GAN(keras.Model):
    """examples/dcgan.py's SNGAN step: n_dis hinge-loss D updates, one G."""

    def __init__(self, generator, discriminator, n_dis, seed=0):
        super().__init__()
        self.generator, self.discriminator, self.n_dis = (
            generator, discriminator, n_dis)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.trackers = [keras.metrics.Mean(name=n) for n in ("d_loss", "g_loss")]

    @property
    def metrics(self):
        return self.trackers

    def compile(self, d_optimizer, g_optimizer, jit_compile):
        super().compile(jit_compile=jit_compile)
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer
        d_optimizer.build(self.discriminator.trainable_variables)
        g_optimizer.build(self.generator.trainable_variables)

    def train_step(self, real):
        n = ops.shape(real)[0] // self.n_dis
        d_loss = 0.0
        for step in range(self.n_dis):
            z = keras.random.normal((n, LATENT_DIM), seed=self.seed_generator)
            fake = self.generator(z, training=True)
            with tf.GradientTape() as tape:
                logits = self.discriminator(ops.concatenate(
                    [real[step * n:(step + 1) * n], fake], 0), training=True)
                loss = ops.mean(ops.relu(1 - logits[:n])) + ops.mean(
                    ops.relu(1 + logits[n:]))
            variables = self.discriminator.trainable_variables
            self.d_optimizer.apply(tape.gradient(loss, variables), variables)
            d_loss += loss / self.n_dis
        with tf.GradientTape() as tape:
            z = keras.random.normal((n, LATENT_DIM), seed=self.seed_generator)
            g_loss = -ops.mean(self.discriminator(
                self.generator(z, training=True), training=False))
        variables = self.generator.trainable_variables
        self.g_optimizer.apply(tape.gradient(g_loss, variables), variables)
        self.trackers[0].update_state(d_loss)
        self.trackers[1].update_state(g_loss)
        return {m.name: m.result() for m in self.metrics}


def build_gan(*, setting, norm, image_size=24, channels=1, width=0.25,
              jit_compile=False, seed=0):
    keras.utils.set_random_seed(seed)
    learning_rate, beta_1, beta_2, n_dis = SETTINGS[setting]
    gan = GAN(build_generator(image_size, channels, width),
              build_discriminator(image_size, channels, width, norm), n_dis, seed)

    def adam():
        return keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2)

    gan.compile(adam(), adam(), jit_compile=jit_compile)
    return gan


def train_and_score(*, setting, norm, seed, updates, batch_size, width, jit,
                    scorer):
    gan = build_gan(setting=setting, norm=norm, width=width, jit_compile=jit,
                    seed=seed)
    x8, _ = digits_metrics.load_digits_8x8()
    images = digits_metrics.digits_to_images(x8, 24)
    data = (tf.data.Dataset.from_tensor_slices(images)
            .shuffle(len(images), seed=seed).repeat()
            .batch(batch_size * gan.n_dis, drop_remainder=True).prefetch(4))
    start = time.perf_counter()
    history = gan.fit(data, epochs=1, steps_per_epoch=updates, verbose=0,
                      shuffle=False)
    z = np.random.default_rng(seed + 1).standard_normal(
        (scorer.samples, LATENT_DIM)).astype("float32")
    score = scorer.score(gan.generator.predict(z, verbose=0))
    return {"setting": setting, "hyper": SETTINGS[setting], "norm": norm,
            "seed": seed, "fd": score["fd"], "kl": score["kl"],
            "d_loss": float(history.history["d_loss"][-1]),
            "wall_s": time.perf_counter() - start}


def cell(values, digits):
    return (f"{statistics.median(values):.{digits}f} "
            f"({min(values):.{digits}f}-{max(values):.{digits}f})")


def markdown_table(runs, settings, norms, reference):
    header = " | ".join(f"FD, {n}" for n in norms) + " | " + " | ".join(
        f"KL, {n}" for n in norms)
    lines = [f"| Setting (lr, β1, β2, n_dis) | {header} |",
             "|---" * (1 + 2 * len(norms)) + "|"]
    for setting in settings:
        fds, kls = [], []
        for norm in norms:
            chosen = [r for r in runs if (r["setting"], r["norm"]) == (setting, norm)]
            fds.append(cell([r["fd"] for r in chosen], 1) if chosen else "-")
            kls.append(cell([r["kl"] for r in chosen], 2) if chosen else "-")
        hyper = ", ".join(f"{v:g}" for v in SETTINGS[setting])
        lines.append(f"| {setting} ({hyper}) | " + " | ".join(fds + kls) + " |")
    lines += ["", "Reference rows (same classifier, same sample size):", "",
              "| | FD | KL |", "|---|---|---|"]
    lines += [f"| {k} | {v['fd']:.2f} | {v['kl']:.3f} |" for k, v in reference.items()]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default="ABCDEF",
                        help="which Table 1 settings, e.g. ABCDEF (default)")
    parser.add_argument("--norms", default="sn,none",
                        help="comma-separated discriminator normalizations: sn, "
                        "none, wn (keras_sn.WeightNormalization) (default: sn,none)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cell (3)")
    parser.add_argument("--updates", type=int, default=1000,
                        help="generator updates per run (default: 1000)")
    parser.add_argument("--batch-size", type=int, default=64, help="default: 64")
    parser.add_argument("--width", type=float, default=0.25, help="default: 0.25")
    parser.add_argument("--jit", action="store_true",
                        help="compile the train step with XLA")
    parser.add_argument("--cache-dir", default=None,
                        help="digits classifier cache (default: digits_metrics')")
    parser.add_argument("--json", default=None, help="write everything here "
                        "after every run; runs already in it (same budget) are "
                        "kept, so an interrupted benchmark resumes")
    args = parser.parse_args(argv)
    norms = args.norms.split(",")
    for norm in norms:
        wrapper(norm)  # fails now for an unknown or missing normalization
    budget = {"updates": args.updates, "batch_size": args.batch_size,
              "width": args.width, "jit": args.jit}
    info = {"device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
            "cores": os.cpu_count(), "tensorflow": tf.__version__,
            "keras": keras.__version__}
    print("Machine:", json.dumps(info), "\nBudget per run:", json.dumps(budget),
          flush=True)
    runs = []
    path = pathlib.Path(args.json) if args.json else None
    if path and path.exists():
        previous = json.loads(path.read_text())
        if previous.get("budget") != budget:
            raise SystemExit(f"{path} holds runs with another budget "
                             f"({previous.get('budget')}); pass the same flags "
                             "or another --json path")
        runs = previous["runs"]
    scorer = digits_metrics.DigitsScorer(24, args.cache_dir)
    reference = scorer.baselines(0)
    start = time.perf_counter()
    for setting in args.settings:
        for norm in norms:
            for seed in range(args.seeds):
                key = (setting, norm, seed)
                if any((r["setting"], r["norm"], r["seed"]) == key for r in runs):
                    continue
                run = train_and_score(setting=setting, norm=norm, seed=seed,
                                      updates=args.updates, jit=args.jit,
                                      batch_size=args.batch_size,
                                      width=args.width, scorer=scorer)
                runs.append(run)
                print(f"RUN setting {setting} {norm:4s} seed {seed}: FD "
                      f"{run['fd']:8.2f}  KL {run['kl']:.3f}  d_loss "
                      f"{run['d_loss']:.3f}  ({run['wall_s']:.0f} s)", flush=True)
                if path:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps({"machine": info, "budget": budget,
                                                "runs": runs}, indent=2))
    table = markdown_table(runs, args.settings, norms, reference)
    print(f"\nTotal {(time.perf_counter() - start) / 60:.1f} min\n\n{table}")
    if path:
        path.write_text(json.dumps({"machine": info, "budget": budget, "runs": runs,
                                    "reference": reference, "table": table},
                                   indent=2))
    return runs, table


if __name__ == "__main__":
    main(sys.argv[1:])
