"""Step time and memory of spectral normalization against the unwrapped layers.

Measures a full training step (forward, backward, Adam update) and the
inference call of the SN-GAN "standard CNN" discriminator (Miyato et al. 2018,
Table 3, 32x32x3 inputs) and of its generator with every convolution wrapped
(as SAGAN does), in three variants:

- `plain`: the unwrapped layers,
- `keras_sn`: every conv/dense wrapped in `keras_sn.SpectralNormalization`,
- `keras`: every conv/dense wrapped in `keras.layers.SpectralNormalization`,
- `floor`: `plain` plus only the work an exact spectral normalization cannot
  avoid: in training one power step on every kernel (two matrix-vector
  products) and the rank-one term that sigma adds to the kernel's gradient;
  at inference the product for sigma. It leaves out applying ``1 / sigma``
  (scaling the kernel or the layer's input, and that product's gradient),
  which every wrapper also pays: `floor` is a lower bound for any exact
  spectral normalization on this machine, the reference for reading
  `keras_sn`'s ratio.

- `strip` (inference): the `keras_sn` model after `keras_sn.strip`, plain
  layers holding the normalized kernels.

Variants are interleaved in rounds inside one process (the order is shuffled
each round), so machine noise hits all of them alike; each round times
`--steps` consecutive steps per variant. Every cell reports the median and
the interquartile range (IQR) of the per-round ratios to `plain`, the number
of rounds and the clock (`--clock`), with the median ms per step.

`--protocol issue15` reproduces the independent harness of issue #15
instead: the discriminator's training step only, a fresh model (and
optimizer, and trace) per variant per round, 3 untimed steps then 30 timed
steps on one fixed input, variants interleaved in a shuffled order each
round; `--rounds` rounds (default 7). It times `floor` too, and prints
keras_sn's per-round ratio to the built-in and to `floor`. Every row (in
both protocols) gives a 95% confidence interval of its median ratio from 6
rounds on (distribution-free, from the order statistics).

The optimizer is Adam(2e-4, beta_1=0, beta_2=0.9) and the loss the hinge
loss on real data, ``mean(relu(1 - D(x)))`` (also for the generator, whose
output is then a tensor of pixels: the cost is what matters here).
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
    python benchmarks/step_time.py --protocol issue15 --jit both --rounds 7
"""

import argparse
import json
import math
import os
import random
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_sn  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _models  # noqa: E402

VARIANTS = ("plain", "keras_sn", "keras")
STRIP = "strip"
# `floor`: the unwrapped network plus the work that an exact spectral
# normalization cannot avoid (see `_floor_work`), nothing else: what an ideal
# wrapper would cost.
FLOOR = "floor"


def _inputs(model_name, batch, seed=0):
    return tf.constant(_models.inputs(model_name, batch, seed))


def _products(kernel, output_axis, xla=False):
    """``K u`` and ``Kᵀ v`` of `kernel` read as a matrix whose output index is
    `output_axis` (the axis the wrapper contracts: -1 for Dense and Conv, -2
    for ConvTranspose), in the cheapest forms plain TensorFlow has: a free
    reshape and one `tf.matmul`, never a transposed copy of the kernel.
    (`tf.tensordot`, used here before, transposes the kernel for ``Kᵀ v``;
    that copy made `floor` dearer than the wrapper it is meant to bound.)

    With `xla`, ``Kᵀ v`` is a sum of batched partial products over chunks
    of `d_in` (as the wrapper does under XLA): XLA:CPU lowers the one-row
    product, which contracts the kernel's major axis, to a slow loop (in the
    protocol's step, CPU clock, 11 rounds, it cost 1.20x plain against 1.09x
    for the whole wrapper), and a two-row GEMM, used before, is dearer than
    the chunks in a whole step and in its gradient.
    """
    shape = kernel.shape
    axis = output_axis % len(shape)
    d_out = shape[axis]
    before = math.prod(shape[:axis])
    after = math.prod(shape[axis + 1:])
    d_in = before * after
    if after == 1:  # the output axis is the last: one (d_in, d_out) matrix
        matrix = tf.reshape(kernel, (d_in, d_out))

        def matvec_in(u):  # (d_out,) -> (d_in,)
            return tf.reshape(tf.matmul(matrix, tf.reshape(u, (d_out, 1))),
                              (d_in,))

        def matvec_out(v):  # (d_in,) -> (d_out,)
            if xla:
                chunks = max(c for c in range(1, 65) if d_in % c == 0)
                partial = tf.matmul(
                    tf.reshape(v, (chunks, 1, d_in // chunks)),
                    tf.reshape(kernel, (chunks, d_in // chunks, d_out)))
                return tf.reduce_sum(tf.reshape(partial, (chunks, d_out)),
                                     axis=0)
            return tf.reshape(tf.matmul(tf.reshape(v, (1, d_in)), matrix),
                              (d_out,))
    else:  # the output axis in the middle: `before` (d_out, after) slices
        slices = tf.reshape(kernel, (before, d_out, after))

        def matvec_in(u):
            product = tf.matmul(tf.reshape(u, (1, 1, d_out)), slices)
            return tf.reshape(product, (d_in,))

        def matvec_out(v):
            products = tf.matmul(slices, tf.reshape(v, (before, after, 1)))
            return tf.reshape(tf.reduce_sum(products, axis=0), (d_out,))

    return d_in, d_out, matvec_in, matvec_out


def _floor_work(model, mode, xla=False):
    """What any spectral normalization must add to a step, and nothing else.

    Inference: the product for sigma on every kernel. Training: one power
    step on every kernel (``v = normalize(K u)``, then ``M v``) and every
    kernel's ``sigma = uᵀ M v`` with its gradient (u, v held), scaled by a
    tiny factor: differentiated, it adds eq. 12's rank-one term ``v uᵀ`` to
    the kernel's gradient, which an exact spectral normalization cannot
    avoid either. Applying ``1 / sigma`` is left out. Returns a scalar that
    depends on all of it, so no graph optimizer can prune it.
    """
    total = 0.0
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        unwrapped = model.name.startswith("generator") and isinstance(
            layer, keras.layers.Dense)  # the generator's dense is not wrapped
        if kernel is None or unwrapped:
            continue
        transposed = isinstance(layer, (keras.layers.Conv1DTranspose,
                                        keras.layers.Conv2DTranspose,
                                        keras.layers.Conv3DTranspose))
        d_in, d_out, matvec_in, matvec_out = _products(
            kernel, -2 if transposed else -1, xla=xla)
        u = tf.ones((d_out,)) / d_out ** 0.5
        v = tf.ones((d_in,)) / d_in ** 0.5
        if mode == "infer":
            total += tf.reduce_sum(matvec_out(v))
            continue
        v_new = tf.stop_gradient(tf.math.l2_normalize(matvec_in(u)))
        mv = matvec_out(v_new)
        u_new = tf.stop_gradient(tf.math.l2_normalize(mv))
        # sigma = uᵀ M v with u and v held: differentiated, v uᵀ.
        total += 1e-12 * tf.reduce_sum(u_new * mv)
    return total


def make_step(model, mode, jit_compile, floor=False):
    """A compiled training step (forward, backward, Adam) or inference call.

    With `floor`, the step also does the work any spectral normalization
    must add, on the unwrapped kernels (see `_floor_work`).
    """
    if mode == "infer":
        def infer(x):
            y = model(x, training=False)
            if floor:
                y = y + 0.0 * _floor_work(model, mode, jit_compile)
            return y

        return tf.function(infer, jit_compile=jit_compile)
    optimizer = keras.optimizers.Adam(**_models.ADAM)
    optimizer.build(model.trainable_variables)

    def train_step(x):
        with tf.GradientTape() as tape:
            y = model(x, training=True)
            loss = tf.reduce_mean(tf.nn.relu(1.0 - y))  # hinge, as for D
            if floor:
                loss += _floor_work(model, mode, jit_compile)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

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
    optimizer = torch.optim.Adam(model.parameters(), 2e-4, betas=(0.0, 0.9))

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


def tool_parser(description, steps_help):
    """The arguments the development tools in `tools/` share.

    `--batch`, `--model`, `--rounds`, `--steps` and `--clock`, with this
    script's meanings; each tool adds its own.
    """
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--model", default="discriminator",
                        choices=("discriminator", "generator"))
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--steps", type=int, default=10, help=steps_help)
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall")
    return parser


def machine_line(clock):
    """`machine: ...`, the line every benchmark starts with."""
    return "machine: " + _models.describe({**_models.machine(), "clock": clock})


def _table(samples, clock):
    """Per variant: median ms/step and the summary of the per-round ratios
    to the first variant (median, quartiles, IQR, rounds), with the clock."""
    baseline = samples[next(iter(samples))]
    table = {}
    for name, values in samples.items():
        table[name] = {
            "median_ms": statistics.median(values),
            "ratio": _models.ratio_summary(values, baseline),
            "rounds": len(values),
            "clock": clock,
            "ms": values,
        }
    return table


def time_interleaved(steps, rounds, steps_per_round, warmup_rounds, seed=0,
                     clock="wall"):
    """Times `steps` in interleaved rounds; see `_table` for the result.

    Args:
        steps: dict variant -> zero-argument callable running one step and
            returning something `_sync` can block on. The first is the
            baseline of the ratios.
        clock: "wall" (elapsed time) or "cpu" (CPU time of this process, all
            its threads: on a machine shared with other jobs it leaves out
            the time the process waits for a core).
    """
    now = CLOCKS[clock]
    order = list(steps)
    rng = random.Random(seed)
    samples = {name: [] for name in steps}
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
    return _table(samples, clock)


def time_protocol(model_name, batch, jit_compile, variants, rounds,
                  untimed=3, timed=30, seed=0, clock="wall"):
    """Issue #15's harness: per round, each variant (shuffled order) gets a
    fresh model, optimizer and trace, `untimed` steps, then `timed` steps on
    one fixed input; see `_table` for the result."""
    now = CLOCKS[clock]
    x = _inputs(model_name, batch)
    order = list(variants)
    rng = random.Random(seed)
    samples = {name: [] for name in variants}
    for round_index in range(rounds):
        rng.shuffle(order)
        for name in order:
            keras.utils.set_random_seed(round_index)
            model = _models.build(model_name,
                                  "plain" if name == FLOOR else name)
            step = make_step(model, "train", jit_compile,
                             floor=name == FLOOR)
            for _ in range(untimed):
                _sync(step(x))
            start = now()
            for _ in range(timed):
                result = step(x)
            _sync(result)
            samples[name].append((now() - start) / timed * 1e3)
    return _table(samples, clock)


def _sync_any(result):
    if hasattr(result, "detach"):  # torch
        float(result.detach().float().sum())
    else:
        _sync(result)


def run(models, batches, jits, modes, rounds, steps_per_round, warmup_rounds,
        with_torch, log=print, clock="wall", memory=True):
    rows = []
    for model_name in models:
        for batch in batches:
            x = _inputs(model_name, batch)
            for mode in modes:
                for jit in jits:
                    keras.utils.set_random_seed(0)
                    steps, peaks = {}, {}
                    variants = VARIANTS + (FLOOR,)
                    if mode == "infer":
                        variants += (STRIP,)
                    for variant in variants:
                        if variant == STRIP:
                            model = keras_sn.strip(
                                _models.build(model_name, "keras_sn"))
                        else:
                            model = _models.build(
                                model_name,
                                "plain" if variant == FLOOR else variant)
                        step = make_step(model, mode, jit,
                                         floor=variant == FLOOR)
                        _sync(step(x))  # trace and compile
                        peaks[variant] = (peak_memory_bytes(step, x)
                                          if memory else float("nan"))
                        steps[variant] = (lambda s=step: s(x))
                    table = time_interleaved(
                        steps, rounds, steps_per_round, warmup_rounds,
                        clock=clock,
                    )
                    for variant in variants:
                        row = dict(model=model_name, batch=batch, mode=mode,
                                   jit=jit, variant=variant,
                                   peak_mb=peaks[variant] / 2**20,
                                   **table[variant])
                        rows.append(row)
                        log(_format_row(row))
                    if with_torch and not jit:
                        rows += _torch_rows(model_name, batch, mode, rounds,
                                            steps_per_round, warmup_rounds, log,
                                            clock)
    return rows


def run_protocol(batches, jits, rounds, log=print, clock="wall",
                 model_name="discriminator"):
    rows = []
    variants = VARIANTS + (FLOOR,)
    for batch in batches:
        for jit in jits:
            table = time_protocol(model_name, batch, jit, variants, rounds,
                                  clock=clock)
            for variant in variants:
                row = dict(model=model_name, batch=batch, mode="train",
                           jit=jit, variant=variant, peak_mb=float("nan"),
                           protocol="issue15", **table[variant])
                if variant == "keras_sn":
                    row["paired"] = paired = _paired(table, variant,
                                                     ("keras", FLOOR))
                rows.append(row)
                log(_format_row(row))
            for other, summary in paired.items():
                log(f"{'':>30} keras_sn / {other:<6} per round: "
                    f"{_models.cell(summary)}, 95% CI of the median "
                    f"{_models.interval(summary)}, keras_sn faster in "
                    f"{summary['faster']} of {summary['n']} rounds")
    return rows


def _paired(table, variant, others):
    """The per-round ratios of `variant` to each of `others` (same round, so
    the machine's drift cancels): their summary (with the 95% interval of
    the median) and in how many rounds `variant` was the faster one. Issue
    15's "keras_sn <= built-in" is a claim about this ratio."""
    result = {}
    for other in others:
        mine, theirs = table[variant]["ms"], table[other]["ms"]
        summary = _models.ratio_summary(mine, theirs)
        summary["faster"] = sum(a < b for a, b in zip(mine, theirs))
        result[other] = summary
    return result


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
    interval = ("" if row["ratio"].get("ci95") is None else
                f" 95% CI {_models.interval(row['ratio'])}")
    return (f"{row['model']:>13} {row['mode']:>5} b={row['batch']:<3} "
            f"{jit:>5} {row['variant']:>11}: {row['median_ms']:9.2f} ms  "
            f"{_models.cell(row['ratio'])}{interval}  n={row['rounds']} "
            f"clock={row['clock']}  peak {row['peak_mb']:8.1f} MiB")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--protocol", choices=["table", "issue15"],
                        default="table",
                        help="table: the interleaved table (default); "
                        "issue15: issue #15's harness (discriminator "
                        "training, fresh model per round, 3 + 30 steps, "
                        "with floor)")
    parser.add_argument("--model", choices=["discriminator", "generator", "both"],
                        default="both", help="which network to time")
    parser.add_argument("--batch", type=int, nargs="+", default=None,
                        help="batch sizes (default: 4 64; issue15: 4)")
    parser.add_argument("--jit", choices=["on", "off", "both"], default="both",
                        help="XLA (jit_compile) on, off or both")
    parser.add_argument("--mode", choices=["train", "infer", "both"],
                        default="both", help="training step, inference or both")
    parser.add_argument("--rounds", type=int, default=None,
                        help="timed rounds per configuration (default: 15; "
                        "issue15: 7)")
    parser.add_argument("--steps", type=int, default=5,
                        help="steps per variant per round (default: 5)")
    parser.add_argument("--warmup-rounds", type=int, default=2,
                        help="untimed rounds first (default: 2)")
    parser.add_argument("--no-torch", action="store_true",
                        help="skip PyTorch even if it is installed")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory measurement")
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
    info = _models.machine()
    log = (lambda line: print(line, file=sys.stderr)) if args.json else print
    info["clock"] = args.clock
    log("machine: " + _models.describe(info))
    jits = {"on": [True], "off": [False], "both": [False, True]}[args.jit]
    if args.protocol == "issue15":
        log("protocol: issue #15 (discriminator, train, fresh model per "
            "round, 3 untimed + 30 timed steps, Adam(2e-4, 0, 0.9), hinge)")
        rows = run_protocol(batches=args.batch or [4], jits=jits,
                            rounds=args.rounds or 7, log=log,
                            clock=args.clock)
    else:
        rows = run(
            models=["discriminator", "generator"] if args.model == "both"
            else [args.model],
            batches=args.batch or [4, 64],
            jits=jits,
            modes={"train": ["train"], "infer": ["infer"],
                   "both": ["train", "infer"]}[args.mode],
            rounds=args.rounds or 15,
            steps_per_round=args.steps,
            warmup_rounds=args.warmup_rounds,
            with_torch=with_torch,
            log=log,
            clock=args.clock,
            memory=not args.no_memory,
        )
    if args.json:
        print(json.dumps({"machine": info, "rows": rows}, indent=1))
    if args.markdown:
        log("")
        log(markdown_table(rows))
    return rows


def markdown_table(rows):
    """One line per (model, mode, batch, XLA): ms and ratio cells (median and
    IQR of the per-round ratios to plain) of each variant."""
    def find(key, variant):
        for row in rows:
            if (row["model"], row["mode"], row["batch"], row["jit"],
                    row["variant"]) == (*key, variant):
                return row
        return None

    def ratio(row):
        return _models.cell(row["ratio"]) if row else ""

    lines = [
        "| network | step | batch | XLA | plain ms | floor | keras_sn "
        "| keras built-in | strip | rounds / clock "
        "| peak MiB plain / keras_sn / keras | PyTorch SN (eager) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = []
    for row in rows:
        key = (row["model"], row["mode"], row["batch"], row["jit"])
        if row["variant"] in VARIANTS and key not in keys:
            keys.append(key)
    for key in keys:
        model, mode, batch, jit = key
        plain, ours, theirs = (find(key, v) for v in VARIANTS)
        torch_row = (find((model, mode, batch, "eager"), "torch_sn")
                     if not jit else None)
        lines.append(
            f"| {'D' if model == 'discriminator' else 'G'} | {mode} | {batch} "
            f"| {'on' if jit else 'off'} | {plain['median_ms']:.1f} "
            f"| {ratio(find(key, FLOOR))} "
            f"| **{ratio(ours)}** | {ratio(theirs)} "
            f"| {ratio(find(key, STRIP))} "
            f"| {plain['rounds']} / {plain['clock']} "
            f"| {plain['peak_mb']:.0f} / {ours['peak_mb']:.0f} / "
            f"{theirs['peak_mb']:.0f} | {ratio(torch_row)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
