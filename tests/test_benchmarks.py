"""The step-time benchmark's `floor`: the products it times are the ones the
wrapper must compute, checked against numpy.

`floor` is the reference every keras_sn ratio in docs/performance.md is read
against, so a wrong contraction (as the generator's floor once had, along
the last axis of a `Conv2DTranspose` kernel) would silently mislead.
"""

import importlib.util
import pathlib

import numpy as np
import pytest

pytestmark = pytest.mark.core

tf = pytest.importorskip("tensorflow")

_BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name, folder=_BENCHMARKS):
    """Imports `<folder>/<name>.py`, `benchmarks/` by default (the
    benchmarks and tools are scripts, not a package; they import `_models`
    from `benchmarks/`)."""
    import sys

    sys.path.insert(0, str(_BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(
            f"{name}_under_test", folder / f"{name}.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(_BENCHMARKS))


# (kernel shape, the axis of output units): Dense, Conv2D, Conv2DTranspose,
# Conv2D. Under XLA `Kᵀ v` of the Dense and Conv2D kernels is cut into chunks
# of d_in: 12, 36 and 50 chunks (of 1, 1 and 4 rows).
CASES = [((12, 5), -1), ((3, 3, 4, 6), -1), ((4, 4, 6, 3), -2),
         ((5, 5, 8, 3), -1)]


@pytest.mark.parametrize("shape, axis", CASES)
@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
def test_floor_products_are_the_wrappers_products(shape, axis, mode):
    step_time = _load("step_time")
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal(shape)
    # The paper's (d_out, d_in) matrix; input axes keep their order.
    matrix = np.moveaxis(kernel, axis, 0).reshape(shape[axis], -1)
    u = rng.standard_normal(matrix.shape[0])
    v = rng.standard_normal(matrix.shape[1])

    def products(kernel, u, v):
        d_in, d_out, matvec_in, matvec_out = step_time._products(
            kernel, axis, xla=mode == "xla"
        )
        assert (d_in, d_out) == (matrix.shape[1], matrix.shape[0])
        return matvec_in(u), matvec_out(v)

    if mode != "eager":
        products = tf.function(products, jit_compile=mode == "xla")
    got_in, got_out = products(
        *(tf.constant(a, tf.float32) for a in (kernel, u, v))
    )
    # float32 sums of at most 200 products of O(1) numbers: 1e-5 relative to
    # the sum of magnitudes bounds the rounding.
    scale_in = np.abs(matrix.T) @ np.abs(u)
    scale_out = np.abs(matrix) @ np.abs(v)
    np.testing.assert_array_less(np.abs(got_in.numpy() - matrix.T @ u),
                                 1e-5 * scale_in + 1e-30)
    np.testing.assert_array_less(np.abs(got_out.numpy() - matrix @ v),
                                 1e-5 * scale_out + 1e-30)


@pytest.mark.parametrize(
    "n, ranks",
    [
        # Known answers from the binomial tables: (k, n + 1 - k) with
        # coverage 1 - 2 P(Bin(n, 1/2) < k) >= 0.95, k largest.
        (6, (1, 6)),  # 1 - 2/64 = 0.969
        (11, (2, 10)),  # k = 2: 0.988; k = 3 would give 0.935
        (21, (6, 16)),  # k = 6: 0.973; k = 7 would give 0.922
    ],
)
def test_median_interval_takes_the_binomial_order_statistics(n, ranks):
    values = np.random.default_rng(n).permutation(np.arange(1.0, n + 1) * 0.1)
    low, high = _load("_models").median_interval(values)
    assert (low, high) == pytest.approx((ranks[0] * 0.1, ranks[1] * 0.1))


def test_median_interval_needs_six_values():
    assert _load("_models").median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is None


def test_ab_tool_swaps_forms_that_compute_the_same_and_restores_them():
    # tools/ab_private_forms.py's figures in docs/performance.md compare
    # forms of one computation: its previous XLA form of `M v` must give the
    # product too, and every swap must be undone.
    from keras_sn._src import power_iteration

    tool = _load("ab_private_forms", _BENCHMARKS.parent / "tools")
    rng = np.random.default_rng(5)
    matrix = rng.standard_normal((2, 200, 3)).astype("float32")
    v = rng.standard_normal((2, 200)).astype("float32")
    want = np.einsum("gi,gio->go", v.astype("float64"), matrix)
    scale = np.einsum("gi,gio->go", np.abs(v), np.abs(matrix))
    originals = (power_iteration._chunked_matvec_out,
                 power_iteration._block_sigmas)
    for variant in ("two_row", "no_sigma_grad", "keras_sn"):
        with tool._tracing_context(variant):
            got = np.asarray(power_iteration._chunked_matvec_out(matrix, v))
            np.testing.assert_array_less(np.abs(got - want), 1e-5 * scale)
            swapped = (power_iteration._chunked_matvec_out,
                       power_iteration._block_sigmas)
            assert (swapped != originals) == (variant != "keras_sn")
        assert (power_iteration._chunked_matvec_out,
                power_iteration._block_sigmas) == originals


def test_rank_one_tool_forms_add_the_outer_product_to_each_gradient():
    # tools/rank_one_cost.py times three ways of adding sigma's rank-one term
    # (docs/performance.md): the first two must compute G + vᵀu, the third
    # (its cost floor) one elementwise pass, on every kernel it reads.
    import keras

    tool = _load("rank_one_cost", _BENCHMARKS.parent / "tools")
    model = keras.Sequential([
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(5, 3),
        keras.layers.Flatten(),
        keras.layers.Dense(1),
    ])
    shapes = tool.kernel_shapes(model)
    assert shapes == [(18, 5), (80, 1)]
    operands = tool.operands(shapes, seed=3)
    for name, form in tool.forms(operands).items():
        for got, (g, v, u) in zip(form(), operands):
            g, v, u = (np.asarray(t, dtype="float64") for t in (g, v, u))
            if name == "one_pass":
                want, scale = g + 1.0, np.abs(g) + 1.0
            else:
                want, scale = g + v.T @ u, np.abs(g) + np.abs(v.T @ u)
            # One product and one sum in float32: at most 2 roundings.
            np.testing.assert_array_less(np.abs(np.asarray(got) - want),
                                         3 * 2.0**-24 * scale + 1e-30)
