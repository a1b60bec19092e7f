"""Generator updates per second of the SN-GAN Table-3 GAN train step.

A self-contained SN-GAN step (Miyato et al. 2018, Table 3 "standard CNN" at
32x32x3, the hinge loss, Adam(2e-4, beta_1=0, beta_2=0.9), one
discriminator update per generator update): the discriminator is wrapped by
`keras_sn.SpectralNormalization`, by the built-in
`keras.layers.SpectralNormalization`, or not at all (`plain`); the generator
is unwrapped, as in the paper. One update = one discriminator step on a real
batch and a generated one, then one generator step, in one `tf.function`
(`jit_compile` per `--jit`).

The variants are timed in interleaved rounds in one process (shuffled order
each round) of `--steps` updates each; reported: the median updates/s per
variant and the median and IQR of the per-round ratio of its time per
update to `plain`'s, with the number of rounds and the clock. The "real"
images are fixed uniform noise (no data set is needed: the cost of a step
does not depend on the pixels).

Usage:
    python benchmarks/gan_step_time.py                  # batch 64, XLA on
    python benchmarks/gan_step_time.py --jit off --rounds 7 --steps 10
"""

import argparse
import json
import os
import random
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _models  # noqa: E402

VARIANTS = ("plain", "keras_sn", "keras")
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def gan_step(variant, batch, jit_compile, seed=0):
    """A compiled SN-GAN update (D then G) for a discriminator wrapped by
    `variant`; returns `step(real)`."""
    keras.utils.set_random_seed(seed)
    generator = _models.generator("plain")
    discriminator = _models.discriminator(variant)
    d_opt = keras.optimizers.Adam(**_models.ADAM)
    g_opt = keras.optimizers.Adam(**_models.ADAM)
    d_opt.build(discriminator.trainable_variables)
    g_opt.build(generator.trainable_variables)
    seeds = keras.random.SeedGenerator(seed)

    def step(real):
        z = keras.random.normal((batch, _models.LATENT), seed=seeds)
        fake = generator(z, training=True)
        with tf.GradientTape() as tape:
            d_real = discriminator(real, training=True)
            d_fake = discriminator(fake, training=True)
            d_loss = (tf.reduce_mean(tf.nn.relu(1.0 - d_real))
                      + tf.reduce_mean(tf.nn.relu(1.0 + d_fake)))
        grads = tape.gradient(d_loss, discriminator.trainable_variables)
        d_opt.apply_gradients(zip(grads, discriminator.trainable_variables))
        z = keras.random.normal((batch, _models.LATENT), seed=seeds)
        with tf.GradientTape() as tape:
            g_loss = -tf.reduce_mean(
                discriminator(generator(z, training=True), training=True))
        grads = tape.gradient(g_loss, generator.trainable_variables)
        g_opt.apply_gradients(zip(grads, generator.trainable_variables))
        return d_loss + g_loss

    return tf.function(step, jit_compile=jit_compile)


def run(batch, jit_compile, rounds, steps, clock="wall", log=print,
        variants=VARIANTS):
    now = CLOCKS[clock]
    real = tf.constant(_models.inputs("discriminator", batch))
    compiled, first = {}, {}
    for variant in variants:
        step = gan_step(variant, batch, jit_compile)
        start = time.perf_counter()
        float(step(real))  # trace and compile
        first[variant] = time.perf_counter() - start
        float(step(real))
        compiled[variant] = step
        log(f"  {variant}: first update (trace + compile) "
            f"{first[variant]:.1f} s")
    samples = {variant: [] for variant in variants}
    order = list(variants)
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for variant in order:
            start = now()
            for _ in range(steps):
                result = compiled[variant](real)
            float(result)
            samples[variant].append((now() - start) / steps)
    results = {}
    for variant in variants:
        rates = [1.0 / s for s in samples[variant]]
        results[variant] = {
            "updates_per_s": _models.summarize(rates)["median"],
            "time_ratio": _models.ratio_summary(samples[variant],
                                                samples[variants[0]]),
            "rounds": rounds,
            "steps_per_round": steps,
            "clock": clock,
            "first_update_s": first[variant],
        }
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--jit", choices=["on", "off"], default="on")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10,
                        help="generator updates per variant per round")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)

    info = _models.machine()
    info["clock"] = args.clock
    print("machine: " + _models.describe(info), flush=True)
    print(f"SN-GAN Table-3 update, batch {args.batch}, XLA {args.jit}, "
          f"{args.rounds} rounds x {args.steps} updates", flush=True)
    results = run(args.batch, args.jit == "on", args.rounds, args.steps,
                  clock=args.clock)
    print(f"  {'discriminator':14s} {'updates/s':>10s}  time / plain "
          f"(median, IQR)  rounds  clock")
    for variant, r in results.items():
        print(f"  {variant:14s} {r['updates_per_s']:10.2f}  "
              f"{_models.cell(r['time_ratio'])}  {r['rounds']:6d}  "
              f"{r['clock']}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"machine": info, "batch": args.batch, "jit": args.jit,
                       "results": results}, file, indent=1)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
