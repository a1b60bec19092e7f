"""Step time and memory of spectral normalization against the unwrapped layers.

Measures a full training step (forward, backward, Adam update) and the
inference call of the SN-GAN "standard CNN" discriminator (Miyato et al. 2018,
Table 3, 32x32x3 inputs) and of its generator with every convolution wrapped
(as SAGAN does), in three variants:

- `plain`: the unwrapped layers,
- `keras_sn`: every conv/dense wrapped in `keras_sn.SpectralNormalization`,
- `keras`: every conv/dense wrapped in `keras.layers.SpectralNormalization`,
- `floor`: `plain` plus only the matrix-vector products that spectral
  normalization cannot avoid (one power step on every kernel in training, the
  product for sigma at inference): the cost of an ideal wrapper on this
  machine.

Variants are interleaved in rounds inside one process (the order is shuffled
each round), so machine noise hits all of them alike; each round times
`--steps` consecutive steps per variant. Reported: the median over rounds of
ms per step, and the median over rounds of the per-round ratio to `plain`.
Peak memory is TensorFlow's allocator peak during one steady-state step
(`tf.config.experimental.get_memory_info`), minus the memory in use before it
(the median of three steps, after two untimed ones).

If PyTorch is installed, the same networks with
`torch.nn.utils.parametrizations.spectral_norm` (eager) are timed the same
way, as their own `torch_plain` / `torch_sn` pair.

Usage:
    python benchmarks/step_time.py                      # the full table
    python benchmarks/step_time.py --batch 64 --jit on --model discriminator
    python benchmarks/step_time.py --json > results.json
"""

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_sn  # noqa: E402

VARIANTS = ("plain", "keras_sn", "keras")
# `floor`: the unwrapped network plus the matrix-vector products that spectral
# normalization cannot avoid (one power step per kernel in training, one
# product for sigma at inference), nothing else: what an ideal wrapper costs.
FLOOR = "floor"


# ---------------------------------------------------------------------------
# The SN-GAN "standard CNN" (Table 3)
# ---------------------------------------------------------------------------


def _wrapper(variant):
    if variant == "plain":
        return lambda layer: layer
    if variant == "keras_sn":
        return keras_sn.SpectralNormalization
    return keras.layers.SpectralNormalization


def discriminator(variant, image_size=32, channels=3):
    sn = _wrapper(variant)
    layers = [keras.Input((image_size, image_size, channels))]
    for filters, kernel, stride in [
        (64, 3, 1), (64, 4, 2), (128, 3, 1), (128, 4, 2),
        (256, 3, 1), (256, 4, 2), (512, 3, 1),
    ]:
        layers += [
            sn(keras.layers.Conv2D(filters, kernel, stride, padding="same")),
            keras.layers.LeakyReLU(0.1),
        ]
    layers += [keras.layers.Flatten(), sn(keras.layers.Dense(1))]
    return keras.Sequential(layers, name=f"discriminator_{variant}")


def generator(variant, image_size=32, channels=3, latent=128):
    sn = _wrapper(variant)
    mg = image_size // 8
    layers = [
        keras.Input((latent,)),
        keras.layers.Dense(mg * mg * 512),
        keras.layers.Reshape((mg, mg, 512)),
    ]
    for filters in (256, 128, 64):
        layers += [
            sn(keras.layers.Conv2DTranspose(filters, 4, 2, padding="same")),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
        ]
    layers += [
        sn(keras.layers.Conv2D(channels, 3, padding="same")),
        keras.layers.Activation("tanh"),
    ]
    return keras.Sequential(layers, name=f"generator_{variant}")


def _inputs(model_name, batch, rng):
    if model_name == "discriminator":
        return tf.constant(rng.uniform(-1, 1, (batch, 32, 32, 3)), tf.float32)
    return tf.constant(rng.standard_normal((batch, 128)), tf.float32)


def _floor_work(model, mode, exact=False):
    """The products of one power step (or of sigma) on every kernel.

    Returns a scalar that depends on all of them, so no graph optimizer can
    prune them. With `exact` (training), the scalar also carries every
    kernel's ``sigma = uᵀ M v`` with its gradient, scaled by a tiny factor:
    differentiated, it adds eq. 12's rank-one term ``v uᵀ`` to each kernel's
    gradient, which an exact spectral normalization cannot avoid either.
    """
    from keras_sn import power_iteration

    total = 0.0
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        unwrapped = model.name.startswith("generator") and isinstance(
            layer, keras.layers.Dense)  # the generator's dense is not wrapped
        if kernel is None or unwrapped:
            continue
        matrix = tf.reshape(kernel, (1, -1, kernel.shape[-1]))
        d_in, d_out = matrix.shape[1], matrix.shape[2]
        u = tf.ones((1, d_out)) / d_out ** 0.5
        v = tf.ones((1, d_in)) / d_in ** 0.5
        if mode == "infer":
            total += tf.reduce_sum(power_iteration._matvec_out(matrix, v))
        elif exact:
            sigma, _, _ = power_iteration.power_iteration_and_sigma(
                matrix, u, v, 1, 1e-12)
            total += 1e-12 * sigma
        else:
            u, v = power_iteration.power_iteration(matrix, u, v, 1, 1e-12)
            total += tf.reduce_sum(u) + tf.reduce_sum(v)
    return total


def make_step(model, mode, jit_compile, floor=False, exact_floor=False):
    """A compiled training step (forward, backward, Adam) or inference call.

    With `floor`, the step also runs the unavoidable products of spectral
    normalization on the unwrapped kernels (see `FLOOR`); with `exact_floor`
    (training), also the rank-one gradient term of sigma (see `_floor_work`).
    """
    if mode == "infer":
        def infer(x):
            y = model(x, training=False)
            if floor:
                y = y + 0.0 * _floor_work(model, mode)
            return y

        return tf.function(infer, jit_compile=jit_compile)
    optimizer = keras.optimizers.Adam(2e-4, beta_1=0.5, beta_2=0.999)
    optimizer.build(model.trainable_variables)

    def train_step(x):
        extra = _floor_work(model, mode) if floor else 0.0
        with tf.GradientTape() as tape:
            y = model(x, training=True)
            loss = tf.reduce_mean(tf.nn.relu(1.0 - y))  # hinge, as for D
            if exact_floor:
                loss += _floor_work(model, mode, exact=True)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss + 0.0 * extra

    return tf.function(train_step, jit_compile=jit_compile)


def _sync(result):
    # Reading a value blocks until the step has really run.
    return float(tf.reduce_sum(tf.cast(result, tf.float32)))


def peak_memory_bytes(step, x, warm_steps=2, repeats=3):
    """The allocator's peak during one steady-state step, minus the memory in
    use before it: the median of `repeats` steps after `warm_steps` untimed
    ones (measured right after tracing, a step's peak varied by up to 17 MiB
    with what the compilation left in the allocator)."""
    device = "CPU:0" if not tf.config.list_physical_devices("GPU") else "GPU:0"
    for _ in range(warm_steps):
        _sync(step(x))
    peaks = []
    for _ in range(repeats):
        tf.config.experimental.reset_memory_stats(device)
        before = tf.config.experimental.get_memory_info(device)["current"]
        _sync(step(x))
        peaks.append(
            tf.config.experimental.get_memory_info(device)["peak"] - before)
    return statistics.median(peaks)


# ---------------------------------------------------------------------------
# PyTorch's parametrized spectral_norm, for reference
# ---------------------------------------------------------------------------


def torch_models(model_name, use_sn):
    import torch
    from torch import nn
    from torch.nn.utils.parametrizations import spectral_norm

    sn = spectral_norm if use_sn else (lambda m: m)
    if model_name == "discriminator":
        layers, channels = [], 3
        for filters, kernel, stride in [
            (64, 3, 1), (64, 4, 2), (128, 3, 1), (128, 4, 2),
            (256, 3, 1), (256, 4, 2), (512, 3, 1),
        ]:
            layers += [sn(nn.Conv2d(channels, filters, kernel, stride, 1)),
                       nn.LeakyReLU(0.1)]
            channels = filters
        layers += [nn.Flatten(), sn(nn.Linear(4 * 4 * 512, 1))]
        return nn.Sequential(*layers)
    layers = [nn.Linear(128, 4 * 4 * 512), nn.Unflatten(1, (512, 4, 4))]
    channels = 512
    for filters in (256, 128, 64):
        layers += [sn(nn.ConvTranspose2d(channels, filters, 4, 2, 1)),
                   nn.BatchNorm2d(filters), nn.ReLU()]
        channels = filters
    layers += [sn(nn.Conv2d(channels, 3, 3, 1, 1)), nn.Tanh()]
    return nn.Sequential(*layers)


def torch_step(model, mode, batch, model_name):
    import torch

    shape = (batch, 3, 32, 32) if model_name == "discriminator" else (batch, 128)
    x = torch.rand(shape) * 2 - 1
    if mode == "infer":
        model.eval()

        def step():
            with torch.no_grad():
                return model(x)

        return step
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), 2e-4, betas=(0.5, 0.999))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.relu(1.0 - model(x)).mean()
        loss.backward()
        optimizer.step()
        return loss

    return step


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_interleaved(steps, rounds, steps_per_round, warmup_rounds, seed=0,
                     clock="wall"):
    """Median ms/step per variant and median per-round ratio to the first.

    Args:
        steps: dict variant -> zero-argument callable running one step and
            returning something `_sync` can block on.
        clock: "wall" (elapsed time) or "cpu" (CPU time of this process, all
            its threads: on a machine shared with other jobs it leaves out
            the time the process waits for a core).
    """
    now = CLOCKS[clock]
    order = list(steps)
    rng = random.Random(seed)
    samples = {name: [] for name in order}
    for index in range(warmup_rounds + rounds):
        rng.shuffle(order)
        for name in order:
            step = steps[name]
            start = now()
            for _ in range(steps_per_round):
                result = step()
            _sync_any(result)
            elapsed = (now() - start) / steps_per_round
            if index >= warmup_rounds:
                samples[name].append(elapsed * 1e3)
    baseline = next(iter(steps))
    table = {}
    for name in steps:
        ratios = [a / b for a, b in zip(samples[name], samples[baseline])]
        table[name] = {
            "median_ms": statistics.median(samples[name]),
            "ratio": statistics.median(ratios),
            "rounds": len(samples[name]),
        }
    return table


def _sync_any(result):
    if hasattr(result, "detach"):  # torch
        float(result.detach().float().sum())
    else:
        _sync(result)


def machine():
    info = {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_sn": keras_sn.__version__,
        "cores": os.cpu_count(),
        "cores_usable": (len(os.sched_getaffinity(0))
                         if hasattr(os, "sched_getaffinity") else None),
    }
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f
                      if line.startswith("model name")]
        info["cpu"] = models[0] if models else platform.processor()
    except OSError:
        info["cpu"] = platform.processor()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        info["gpu"] = details.get("device_name", gpus[0].name)
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def run(models, batches, jits, modes, rounds, steps_per_round, warmup_rounds,
        with_torch, log=print, clock="wall"):
    rows = []
    rng = np.random.default_rng(0)
    for model_name in models:
        build = discriminator if model_name == "discriminator" else generator
        for batch in batches:
            x = _inputs(model_name, batch, rng)
            for mode in modes:
                for jit in jits:
                    keras.utils.set_random_seed(0)
                    steps, memory = {}, {}
                    for variant in VARIANTS + (FLOOR,):
                        model = build("plain" if variant == FLOOR else variant)
                        step = make_step(model, mode, jit,
                                         floor=variant == FLOOR)
                        _sync(step(x))  # trace and compile
                        memory[variant] = peak_memory_bytes(step, x)
                        steps[variant] = (lambda s=step: s(x))
                    table = time_interleaved(
                        steps, rounds, steps_per_round, warmup_rounds,
                        clock=clock,
                    )
                    for variant in VARIANTS + (FLOOR,):
                        row = dict(model=model_name, batch=batch, mode=mode,
                                   jit=jit, variant=variant,
                                   peak_mb=memory[variant] / 2**20,
                                   **table[variant])
                        rows.append(row)
                        log(_format_row(row))
                    if with_torch and not jit:
                        rows += _torch_rows(model_name, batch, mode, rounds,
                                            steps_per_round, warmup_rounds, log,
                                            clock)
    return rows


def _torch_rows(model_name, batch, mode, rounds, steps_per_round,
                warmup_rounds, log, clock):
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    steps = {}
    for name, use_sn in (("torch_plain", False), ("torch_sn", True)):
        steps[name] = torch_step(torch_models(model_name, use_sn), mode, batch,
                                 model_name)
        steps[name]()
    table = time_interleaved(steps, rounds, steps_per_round, warmup_rounds,
                             clock=clock)
    rows = []
    for name in steps:
        row = dict(model=model_name, batch=batch, mode=mode, jit="eager",
                   variant=name, peak_mb=float("nan"), **table[name])
        rows.append(row)
        log(_format_row(row))
    return rows


def _format_row(row):
    jit = {True: "xla", False: "graph"}.get(row["jit"], row["jit"])
    return (f"{row['model']:>13} {row['mode']:>5} b={row['batch']:<3} "
            f"{jit:>5} {row['variant']:>11}: {row['median_ms']:9.2f} ms  "
            f"x{row['ratio']:.3f}  peak {row['peak_mb']:8.1f} MiB")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["discriminator", "generator", "both"],
                        default="both", help="which network to time")
    parser.add_argument("--batch", type=int, nargs="+", default=[4, 64],
                        help="batch sizes (default: 4 64)")
    parser.add_argument("--jit", choices=["on", "off", "both"], default="both",
                        help="XLA (jit_compile) on, off or both")
    parser.add_argument("--mode", choices=["train", "infer", "both"],
                        default="both", help="training step, inference or both")
    parser.add_argument("--rounds", type=int, default=15,
                        help="timed rounds per configuration (default: 15)")
    parser.add_argument("--steps", type=int, default=5,
                        help="steps per variant per round (default: 5)")
    parser.add_argument("--warmup-rounds", type=int, default=2,
                        help="untimed rounds first (default: 2)")
    parser.add_argument("--no-torch", action="store_true",
                        help="skip PyTorch even if it is installed")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document instead of the table")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time (default); cpu: this "
                        "process's CPU time, steadier on a shared machine")
    parser.add_argument("--markdown", action="store_true",
                        help="also print the results as a markdown table")
    args = parser.parse_args(argv)

    try:
        import torch  # noqa: F401

        with_torch = not args.no_torch
    except ImportError:
        with_torch = False
    info = machine()
    log = (lambda line: print(line, file=sys.stderr)) if args.json else print
    info["clock"] = args.clock
    log("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    rows = run(
        models=["discriminator", "generator"] if args.model == "both"
        else [args.model],
        batches=args.batch,
        jits={"on": [True], "off": [False], "both": [False, True]}[args.jit],
        modes={"train": ["train"], "infer": ["infer"],
               "both": ["train", "infer"]}[args.mode],
        rounds=args.rounds,
        steps_per_round=args.steps,
        warmup_rounds=args.warmup_rounds,
        with_torch=with_torch,
        log=log,
        clock=args.clock,
    )
    if args.json:
        print(json.dumps({"machine": info, "rows": rows}, indent=1))
    if args.markdown:
        log("")
        log(markdown_table(rows))


def markdown_table(rows):
    """One line per (model, mode, batch, XLA): ms and ratios of each variant."""
    def find(key, variant):
        for row in rows:
            if (row["model"], row["mode"], row["batch"], row["jit"],
                    row["variant"]) == (*key, variant):
                return row
        return None

    lines = [
        "| network | step | batch | XLA | plain ms | floor | keras_sn "
        "| keras built-in | peak MiB plain / keras_sn / keras "
        "| PyTorch SN (eager) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = []
    for row in rows:
        key = (row["model"], row["mode"], row["batch"], row["jit"])
        if row["variant"] in VARIANTS and key not in keys:
            keys.append(key)
    for key in keys:
        model, mode, batch, jit = key
        plain, ours, theirs = (find(key, v) for v in VARIANTS)
        floor = find(key, FLOOR)
        torch_row = (find((model, mode, batch, "eager"), "torch_sn")
                     if not jit else None)
        torch_cell = (f"x{torch_row['ratio']:.3f}" if torch_row else "")
        lines.append(
            f"| {'D' if model == 'discriminator' else 'G'} | {mode} | {batch} "
            f"| {'on' if jit else 'off'} | {plain['median_ms']:.1f} "
            f"| x{floor['ratio']:.3f} "
            f"| **x{ours['ratio']:.3f}** | x{theirs['ratio']:.3f} "
            f"| {plain['peak_mb']:.0f} / {ours['peak_mb']:.0f} / "
            f"{theirs['peak_mb']:.0f} | {torch_cell} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
