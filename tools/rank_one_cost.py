"""What adding σ's rank-one gradient term costs without XLA, at best.

A development tool for docs/performance.md ("Without XLA: what σ's gradient
costs"). The paper's gradient adds ``c · v uᵀ`` to every kernel's gradient
``G``. In TensorFlow's graph runtime autodiff writes that outer product (a
MatMul with one inner dimension) and adds it to ``G`` (AddN). This tool
times, on the kernels of the benchmark's model, in interleaved rounds in
one process:

- `plain_step`: the unwrapped model's whole training step (the scale);
- `autodiff`: ``G + vᵀ u`` as autodiff builds it (MatMul, then add);
- `xla_fused`: the same in one fused XLA kernel (a nested
  ``jit_compile=True`` function), which reads ``G`` once and writes once;
- `one_pass`: ``G + 1``, one elementwise pass over the kernels, the least
  any unfused form can cost.

Each row gives the median ms, its IQR over rounds, and the median as a
share of the plain step. Usage:

    python tools/rank_one_cost.py --batch 4 --rounds 25
"""

import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "benchmarks"))
import _models  # noqa: E402
import step_time  # noqa: E402


def kernel_shapes(model):
    """`(d_in, d_out)` of every kernel, the output axis last."""
    return [(int(np.prod(w.shape[:-1])), int(w.shape[-1]))
            for w in model.trainable_weights if len(w.shape) >= 2]


def operands(shapes, seed=0):
    """`(G, v, u)` per kernel: a gradient, a (1, d_in) and a (1, d_out) row."""
    rng = np.random.default_rng(seed)
    return [tuple(tf.constant(rng.standard_normal(s).astype("float32"))
                  for s in (shape, (1, shape[0]), (1, shape[1])))
            for shape in shapes]


@tf.function(jit_compile=True)
def _fused_add(g, v, u):
    return g + tf.transpose(v) * u


def forms(ops_):
    """The three forms, each a graph function over all kernels."""
    def autodiff():
        return [g + tf.matmul(v, u, transpose_a=True) for g, v, u in ops_]

    def xla_fused():
        return [_fused_add(g, v, u) for g, v, u in ops_]

    def one_pass():
        return [g + 1.0 for g, _, _ in ops_]

    return {name: tf.function(f) for name, f in
            (("autodiff", autodiff), ("xla_fused", xla_fused),
             ("one_pass", one_pass))}


def main(argv=None):
    parser = step_time.tool_parser(__doc__, "calls per variant per round")
    args = parser.parse_args(argv)
    print(step_time.machine_line(args.clock))
    x = step_time._inputs(args.model, args.batch)
    model = _models.build(args.model, "plain")
    step = step_time.make_step(model, "train", False)
    step_time._sync(step(x))
    shapes = kernel_shapes(model)
    print(f"{len(shapes)} kernels, {sum(a * b for a, b in shapes) * 4 / 1e6:.1f}"
          " MB in float32")
    functions = forms(operands(shapes))
    calls = {"plain_step": lambda: step(x)}
    for name, f in functions.items():
        f()  # trace (and compile) before timing
        calls[name] = (lambda f=f: f()[-1])
    table = step_time.time_interleaved(calls, args.rounds, args.steps,
                                       warmup_rounds=2, clock=args.clock)
    base = table["plain_step"]["median_ms"]
    for name, row in table.items():
        q1, _, q3 = statistics.quantiles(row["ms"], n=4)
        print(f"{args.model} b={args.batch} xla=off {name:>10}: "
              f"{row['median_ms']:7.3f} ms (IQR {q3 - q1:.3f})  "
              f"{100 * row['median_ms'] / base:5.1f}% of the plain step  "
              f"n={row['rounds']} clock={row['clock']}")


if __name__ == "__main__":
    main()
