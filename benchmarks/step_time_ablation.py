"""Where `keras_sn`'s step-time overhead goes: the wrapper with parts removed.

Times the networks of `step_time.py` (interleaved rounds in one process, the
median of the per-round ratio to `plain`) in these variants:

- `plain`, `floor`, `keras_sn`, `keras`: as in `step_time.py`;
- `floor_exact` (training): `floor` plus eq. 12's rank-one term ``v uᵀ``
  added to each kernel's gradient, the least an exact spectral
  normalization must add to a step;
- `sn_noupdate`: `keras_sn` without the power step in training (sigma from
  the stored vectors, still with its gradient);
- `sn_nosigmagrad`: `keras_sn` with sigma held constant in the backward pass
  (no eq. 12 rank-one term);
- `sn_kernelpath` / `sn_inputpath`: `keras_sn` forced to scale the kernel,
  or the inputs, in every layer.

The `sn_*` variants change private methods of the wrapper for the
measurement only; they are not options of the package (and may break when
those methods change).

Usage (the README's ablation):
    python benchmarks/step_time_ablation.py --model discriminator --batch 4 \\
        --mode train --jit off --clock cpu --rounds 15 \\
        --variants plain,floor,floor_exact,keras_sn,keras,sn_nosigmagrad
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_sn  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import step_time  # noqa: E402

VARIANTS = ("plain", "floor", "floor_exact", "keras_sn", "keras", "sn_noupdate",
            "sn_nosigmagrad", "sn_kernelpath", "sn_inputpath")


def _wrappers(model):
    return [layer for layer in model.layers
            if isinstance(layer, keras_sn.SpectralNormalization)]


def _ablate(model, variant):
    """Patches every wrapper of `model` as `variant` says (see the docstring)."""
    sigmas = keras_sn.SpectralNormalization._sigmas
    for layer in _wrappers(model):
        if variant == "sn_noupdate":
            layer._sigmas = lambda update, layer=layer: sigmas(layer, False)
        elif variant == "sn_nosigmagrad":
            layer._sigmas = lambda update, layer=layer: [
                (state, kernel, tf.stop_gradient(sigma))
                for state, kernel, sigma in sigmas(layer, update)
            ]
        elif variant == "sn_kernelpath":
            layer._scale_inputs = False
        elif variant == "sn_inputpath":
            layer._input_is_smaller = lambda inputs: True


def build_step(model_name, variant, mode, jit_compile):
    keras.utils.set_random_seed(0)
    build = (step_time.discriminator if model_name == "discriminator"
             else step_time.generator)
    base = variant if variant in ("plain", "keras") else "keras_sn"
    if variant in ("floor", "floor_exact"):
        base = "plain"
    model = build(base)
    _ablate(model, variant)
    return step_time.make_step(model, mode, jit_compile,
                               floor=variant == "floor",
                               exact_floor=variant == "floor_exact")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["discriminator", "generator"],
                        default="generator")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--mode", choices=["train", "infer"], default="train")
    parser.add_argument("--jit", choices=["on", "off"], default="off")
    parser.add_argument("--variants",
                        default="plain,floor,keras_sn,sn_noupdate,sn_nosigmagrad",
                        help="comma-separated, from: " + ", ".join(VARIANTS))
    parser.add_argument("--clock", choices=sorted(step_time.CLOCKS),
                        default="wall")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)

    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or variants[0] != "plain":
        parser.error(f"--variants must start with plain and use {VARIANTS}; "
                     f"received {args.variants!r}")
    info = step_time.machine()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    x = step_time._inputs(args.model, args.batch)
    steps = {}
    for variant in variants:
        step = build_step(args.model, variant, args.mode, args.jit == "on")
        step_time._sync(step(x))  # trace and compile
        steps[variant] = lambda s=step: s(x)
    table = step_time.time_interleaved(steps, args.rounds, args.steps, 2,
                                       clock=args.clock)
    for variant in variants:
        print(f"{args.model} {args.mode} b={args.batch} jit={args.jit} "
              f"clock={args.clock} {variant:>15}: "
              f"{table[variant]['median_ms']:8.2f} ms  "
              f"{step_time._models.cell(table[variant]['ratio'])}  "
              f"n={table[variant]['rounds']}")


if __name__ == "__main__":
    main()
