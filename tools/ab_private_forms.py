"""A/B of the wrapper's internal forms on a whole training step.

A development tool, not a benchmark: it swaps private functions of
`keras_sn._src.power_iteration` while a variant is traced, which nothing
public allows. Variants (all in interleaved rounds in one process; every
row gives the median and IQR of the per-round ratios to the first variant,
`plain`, and the last lines each variant's per-round ratio to `keras_sn`):

- `plain`, `keras_sn`, `keras` (the built-in) and `floor`: as in
  benchmarks/step_time.py;
- `two_row`: keras_sn traced with the XLA form of `M v` used before
  2026-12-03 (v repeated as a two-row matrix, one GEMM, first row kept)
  instead of `_chunked_matvec_out`;
- `no_sigma_grad`: keras_sn with sigma's gradient cut (stop_gradient), an
  ablation that is not spectral normalization: it shows what the paper's
  rank-one gradient term costs, which the built-in does not pay.

Usage:
    python tools/ab_private_forms.py --jit on --variants plain keras_sn two_row floor
    python tools/ab_private_forms.py --jit off --variants plain keras_sn no_sigma_grad keras
"""

import contextlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
from keras import ops  # noqa: E402

from keras_sn._src import power_iteration  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "benchmarks"))
import _models  # noqa: E402
import step_time  # noqa: E402

VARIANTS = ("plain", "keras_sn", "two_row", "no_sigma_grad", "keras", "floor")


def two_row_matvec_out(matrix, v):
    """The previous XLA form of `M v`: `[v; v] @ K`, first row."""
    return ops.matmul(ops.stack([v, v], axis=1), matrix)[:, 0]


@contextlib.contextmanager
def swapped(name, replacement):
    original = getattr(power_iteration, name)
    setattr(power_iteration, name, replacement)
    try:
        yield
    finally:
        setattr(power_iteration, name, original)


def _tracing_context(variant):
    if variant == "two_row":
        return swapped("_chunked_matvec_out", two_row_matvec_out)
    if variant == "no_sigma_grad":
        block_sigmas = power_iteration._block_sigmas

        def without_gradient(mv):
            sigmas, u_hat = block_sigmas(mv)
            return ops.stop_gradient(sigmas), u_hat

        return swapped("_block_sigmas", without_gradient)
    return contextlib.nullcontext()


def main(argv=None):
    parser = step_time.tool_parser(__doc__, "steps per variant per round")
    parser.add_argument("--jit", choices=("on", "off"), default="on")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS,
                        default=["plain", "keras_sn", "two_row", "floor"])
    args = parser.parse_args(argv)
    if args.variants[0] != "plain" or "keras_sn" not in args.variants:
        parser.error("--variants must start with plain and name keras_sn")
    jit = args.jit == "on"
    print(step_time.machine_line(args.clock))
    x = step_time._inputs(args.model, args.batch)
    steps = {}
    for name in args.variants:
        keras.utils.set_random_seed(0)
        built = {"two_row": "keras_sn", "no_sigma_grad": "keras_sn",
                 "floor": "plain"}.get(name, name)
        with _tracing_context(name):
            model = _models.build(args.model, built)
            step = step_time.make_step(model, "train", jit,
                                       floor=name == "floor")
            step_time._sync(step(x))  # trace and compile in this context
        steps[name] = (lambda s=step: s(x))
    table = step_time.time_interleaved(steps, args.rounds, args.steps,
                                       warmup_rounds=2, clock=args.clock)
    for name, row in table.items():
        print(f"{args.model} train b={args.batch} xla={args.jit} "
              f"{name:>13}: {row['median_ms']:8.2f} ms  "
              f"{_models.cell(row['ratio'])}  "
              f"95% CI {_models.interval(row['ratio'])}  "
              f"n={row['rounds']} clock={row['clock']}")
    for name in args.variants:
        if name in ("plain", "keras_sn"):
            continue
        paired = _models.ratio_summary(table[name]["ms"],
                                       table["keras_sn"]["ms"])
        print(f"{name} / keras_sn per round: {_models.cell(paired)}  "
              f"95% CI {_models.interval(paired)}")


if __name__ == "__main__":
    main()
