"""Generator updates per second of examples/dcgan.py's GAN, XLA on and off.

For each configuration it builds the example's SN-GAN (the same models and
step, from benchmarks/gan_quality.py, which uses public `keras_sn` names only) (and, with
`--with-no-sn`, the same GAN with an unwrapped discriminator), compiles the
train step with `jit_compile=True` and with `jit_compile=False`, times the
first `fit` step (tracing and compilation), then times the variants in
interleaved rounds of `--steps` generator updates in one process (so machine
noise hits them alike) and reports the median updates/s of each and the ratio.

Configurations:
    digits: the example's default run (24x24x1, width 0.25, batch 64).
    cifar32: the paper's 32x32x3 "standard CNN" at full width, batch 64: the
        figure to report from a GPU.
Both use the example's default setting (C, n_dis = 1; B costs the same).

Usage:
    python benchmarks/gan_step_time.py                  # both configurations
    python benchmarks/gan_step_time.py --config cifar32 --rounds 5 --steps 20

It prints the device (the GPU's name when TensorFlow uses one), the CPU model,
the core count and the TensorFlow / Keras versions with the figures. Absolute
CPU figures depend on what else runs on the machine; the ratio within one run
is the comparable number.
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gan_quality  # noqa: E402

CONFIGS = {
    "digits": dict(image_size=24, channels=1, width=0.25, batch_size=64),
    "cifar32": dict(image_size=32, channels=3, width=1.0, batch_size=64),
}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine():
    gpus = tf.config.list_physical_devices("GPU")
    gpu = None
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        gpu = details.get("device_name", gpus[0].name)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {
        "device": f"GPU: {gpu}" if gpu else "CPU",
        "cpu": cpu_model(),
        "cores_usable": cores,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
    }


def build_gan(config, setting, spectral_norm, jit_compile, seed=0):
    return gan_quality.build_gan(
        setting=setting, norm="sn" if spectral_norm else "none",
        image_size=config["image_size"], channels=config["channels"],
        width=config["width"], jit_compile=jit_compile, seed=seed)


def run(config_name, *, setting, rounds, steps, with_no_sn):
    config = CONFIGS[config_name]
    n_dis = gan_quality.SETTINGS[setting][3]
    size, channels = config["image_size"], config["channels"]
    images = np.random.default_rng(0).uniform(
        -1, 1, (4 * config["batch_size"] * n_dis, size, size, channels)
    ).astype("float32")
    data = (
        tf.data.Dataset.from_tensor_slices(images)
        .repeat()
        .batch(config["batch_size"] * n_dis, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )
    variants = {}
    for spectral_norm in (True, False) if with_no_sn else (True,):
        for jit_compile in (True, False):
            name = (
                f"{'SN' if spectral_norm else 'no SN'}, "
                f"{'XLA' if jit_compile else 'no XLA'}"
            )
            gan = build_gan(config, setting, spectral_norm, jit_compile)
            start = time.perf_counter()
            gan.fit(data, steps_per_epoch=1, epochs=1, verbose=0)
            first = time.perf_counter() - start
            variants[name] = {"gan": gan, "first_step_s": first, "rates": []}
            print(f"  {name}: first step (trace + compile) {first:.1f} s",
                  flush=True)
    for _ in range(rounds):
        for variant in variants.values():
            start = time.perf_counter()
            variant["gan"].fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
            variant["rates"].append(steps / (time.perf_counter() - start))
    results = {}
    baseline = statistics.median(variants[next(iter(variants))]["rates"])
    for name, variant in variants.items():
        rate = statistics.median(variant["rates"])
        results[name] = {
            "updates_per_s": rate,
            "rounds": variant["rates"],
            "first_step_s": variant["first_step_s"],
            "relative_to_first": rate / baseline,
        }
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config", choices=sorted(CONFIGS) + ["all"], default="all",
        help="which configuration(s) to time",
    )
    parser.add_argument("--setting", default="C",
                        help="Table 1 setting (default: C, the example's)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved timing rounds per variant")
    parser.add_argument("--steps", type=int, default=10,
                        help="generator updates per round")
    parser.add_argument("--with-no-sn", action="store_true",
                        help="also time the GAN with an unwrapped discriminator")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)

    info = machine()
    print("Machine:", json.dumps(info))
    names = sorted(CONFIGS) if args.config == "all" else [args.config]
    report = {"machine": info, "setting": args.setting, "configs": {}}
    for name in names:
        config = CONFIGS[name]
        print(f"\n{name}: {config}, setting {args.setting}, "
              f"{args.rounds} rounds x {args.steps} updates", flush=True)
        results = run(name, setting=args.setting, rounds=args.rounds,
                      steps=args.steps, with_no_sn=args.with_no_sn)
        report["configs"][name] = {"config": config, "results": results}
        print(f"  {'variant':16s} {'updates/s':>10s} {'x first':>8s} "
              f"{'first step s':>13s}  rounds")
        for variant, r in results.items():
            print(f"  {variant:16s} {r['updates_per_s']:10.3f} "
                  f"{r['relative_to_first']:8.2f} {r['first_step_s']:13.1f}  "
                  + ", ".join(f"{x:.3f}" for x in r["rounds"]))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
