"""The pure math: power iteration, sigma and the Lanczos warm-up vs numpy."""

import numpy as np
import pytest
from keras import ops

from keras_sn._src import lanczos
from keras_sn._src import power_iteration
from keras_sn.weights import matrix_view
from backends import float64_rtol
from backends import tensorflow_only
from backends import to_numpy

# float64 references at 1e-12: x64 on JAX for these tests.
pytestmark = pytest.mark.float64
from references import reference_sigma


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_known_answer_sigma_of_four_times_identity():
    matrix = (4.0 * np.eye(3))[None].astype("float32")
    u = _unit(np.ones((1, 3), "float32"))
    sigma, u, v = power_iteration.power_iteration_and_sigma(
        matrix, u, u, iterations=1, epsilon=1e-12
    )
    assert float(sigma) == pytest.approx(4.0, rel=1e-6)


def test_known_answer_diagonal_matrix_picks_largest_entry():
    matrix = np.diag([1.0, -7.0, 3.0, 0.5])[None]
    u = _unit(np.ones((1, 4)))
    sigma, u, v = power_iteration.power_iteration_and_sigma(
        matrix, u, u, iterations=100, epsilon=1e-12
    )
    assert float(sigma) == pytest.approx(7.0, rel=float64_rtol(1e-10))
    np.testing.assert_allclose(
        np.abs(to_numpy(u)), [[0, 1, 0, 0]], atol=float64_rtol(1e-8)
    )


@pytest.mark.parametrize("shape", [(5, 9), (9, 5), (1, 6), (6, 1), (30, 17)])
def test_power_iteration_one_step_matches_numpy_formula(shape):
    rng = np.random.default_rng(1)
    k = rng.standard_normal(shape)  # (d_in, d_out), i.e. M = k.T
    u0, v0 = _unit(rng.standard_normal((1, shape[1]))), _unit(
        rng.standard_normal((1, shape[0]))
    )
    u, v = power_iteration.power_iteration(k[None], u0, v0, 1, 1e-12)
    v_ref = _unit(u0 @ k.T)  # v <- normalize(M^T u)
    u_ref = _unit(v_ref @ k)  # u <- normalize(M v)
    np.testing.assert_allclose(to_numpy(v), v_ref, rtol=float64_rtol(1e-12))
    np.testing.assert_allclose(to_numpy(u), u_ref, rtol=float64_rtol(1e-12))


@pytest.mark.parametrize("shape", [(5, 9), (9, 5), (40, 13)])
def test_sigma_converges_to_svd(shape):
    rng = np.random.default_rng(2)
    k = rng.standard_normal(shape)
    u0 = _unit(rng.standard_normal((1, shape[1])))
    sigma, _, _ = power_iteration.power_iteration_and_sigma(
        k[None], u0, np.zeros((1, shape[0])), 500, 1e-12
    )
    assert float(sigma) == pytest.approx(
        reference_sigma(k), rel=float64_rtol(1e-10)
    )


def test_blocks_give_the_largest_block_sigma():
    rng = np.random.default_rng(3)
    blocks = rng.standard_normal((4, 6, 3))
    blocks[2] *= 5.0
    u0 = _unit(rng.standard_normal((4, 3)))
    sigma, u, _ = power_iteration.power_iteration_and_sigma(
        blocks, u0, np.zeros((4, 6)), 300, 1e-12
    )
    assert float(sigma) == pytest.approx(
        max(reference_sigma(b) for b in blocks), rel=float64_rtol(1e-10)
    )
    np.testing.assert_allclose(
        np.linalg.norm(to_numpy(u), axis=-1), 1.0, rtol=float64_rtol(1e-7)
    )


def test_zero_matrix_keeps_unit_vectors_and_sigma_zero():
    u0 = _unit(np.ones((1, 3), "float32"))
    v0 = _unit(np.ones((1, 4), "float32"))
    sigma, u, v = power_iteration.power_iteration_and_sigma(
        np.zeros((1, 4, 3), "float32"), u0, v0, 3, 1e-12
    )
    assert float(sigma) == 0.0
    np.testing.assert_allclose(to_numpy(u), u0)
    np.testing.assert_allclose(to_numpy(v), v0)


def test_l2_normalize_matches_torch_semantics_and_fallback():
    x = np.array([[3.0, 4.0], [1e-14, 0.0]])
    out = to_numpy(power_iteration.l2_normalize(x, 1e-12))
    np.testing.assert_allclose(  # x / max(|x|, eps)
        out, [[0.6, 0.8], [1e-2, 0.0]], rtol=float64_rtol(1e-7)
    )
    fallback = np.array([[0.0, 1.0], [0.0, 1.0]])
    out = to_numpy(power_iteration.l2_normalize(x, 1e-12, fallback=fallback))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 1.0]], rtol=float64_rtol(1e-7))


def test_to_matrix_permutes_and_splits_as_described():
    kernel = np.arange(2 * 3 * 4 * 6, dtype="float32").reshape(2, 3, 4, 6)
    view = matrix_view(kernel.shape, (-2,))  # transposed-conv layout
    matrix = to_numpy(power_iteration.to_matrix(kernel, view))
    np.testing.assert_array_equal(
        matrix[0], np.moveaxis(kernel, -2, -1).reshape(-1, 4)
    )
    split = (2, 3, 4, 2, 3)  # 2 groups of 3 filters
    view = matrix_view(kernel.shape, (-1,), block_axes=(-2,), split_shape=split)
    matrix = to_numpy(power_iteration.to_matrix(kernel, view))
    assert matrix.shape == (2, 24, 3)
    np.testing.assert_array_equal(matrix[1], kernel[..., 3:].reshape(24, 3))


@pytest.mark.parametrize(
    "shape", [(64, 128), (27, 64), (576, 64), (300, 7), (7, 300), (1, 5)]
)
def test_lanczos_warmup_reaches_svd_in_few_steps(shape):
    rng = np.random.default_rng(4)
    limit = np.sqrt(6 / sum(shape))  # a Glorot-initialized kernel
    k = rng.uniform(-limit, limit, shape)
    u, v = _lanczos(k, rng.standard_normal(shape[1]), 30)
    assert np.linalg.norm(u) == pytest.approx(1.0)
    assert np.linalg.norm(v) == pytest.approx(1.0)
    assert u @ (k.T @ v) == pytest.approx(reference_sigma(k), rel=1e-8)


def _lanczos(k, u0, steps):
    u, v = lanczos.matrix_top_singular_pairs(k[None], u0[None], steps)
    return u[0], v[0]


def test_lanczos_handles_exact_invariant_subspaces_and_zero_matrices():
    u, v = _lanczos(4.0 * np.eye(3), np.ones(3), 15)
    assert u @ (4.0 * np.eye(3) @ v) == pytest.approx(4.0)
    u0 = np.array([1.0, 2.0, 2.0])
    u, v = _lanczos(np.zeros((4, 3)), u0, 15)
    np.testing.assert_allclose(u, u0 / 3.0)
    assert np.linalg.norm(v) == pytest.approx(1.0)
    assert np.all(np.isfinite(u)) and np.all(np.isfinite(v))


def test_ops_run_on_backend_tensors():
    k = ops.convert_to_tensor(np.ones((1, 2, 3), "float32"))
    u = ops.convert_to_tensor(_unit(np.ones((1, 3), "float32")))
    sigma = power_iteration.sigma_from_vectors(
        k, ops.convert_to_tensor(_unit(np.ones((1, 2), "float32")))
    )
    assert float(sigma) == pytest.approx(np.sqrt(6.0), rel=1e-6)


@pytest.mark.parametrize(
    "kernel_shape, output_axes",
    [
        ((3, 4, 5), (1,)),  # Conv1DTranspose: (k, filters, in)
        ((2, 3, 4, 5), (2,)),  # Conv2DTranspose
        ((2, 2, 3, 4, 2), (3,)),  # Conv3DTranspose
        ((3, 4, 5, 6), (1, 2)),  # two contiguous output axes in the middle
    ],
)
def test_middle_output_operand_products_match_the_matrix(kernel_shape,
                                                         output_axes):
    # `to_operand` reads these kernels without a transpose; its products and
    # sigma must equal those of the explicit (transposed) matrix, in numpy.
    rng = np.random.default_rng(0)
    view = matrix_view(kernel_shape, output_axes)
    kernel = rng.standard_normal(kernel_shape).astype("float32")
    operand = power_iteration.to_operand(kernel, view)
    assert len(operand.shape) == 4  # the copy-free form is taken
    perm = view.permutation
    matrix = np.transpose(kernel, perm).reshape(view.d_in, view.d_out)
    u = _unit(rng.standard_normal((1, view.d_out))).astype("float32")
    v = _unit(rng.standard_normal((1, view.d_in))).astype("float32")
    np.testing.assert_allclose(
        to_numpy(power_iteration._matvec_in(operand, u)), (matrix @ u[0])[None],
        rtol=1e-5, atol=1e-5,
    )
    np.testing.assert_allclose(
        to_numpy(power_iteration._matvec_out(operand, v)),
        (v[0] @ matrix)[None], rtol=1e-5, atol=1e-5,
    )
    u_new, v_new = power_iteration.power_iteration(operand, u, v, 300, 1e-12)
    sigma = power_iteration.sigma_from_vectors(operand, v_new)
    assert float(to_numpy(sigma)) == pytest.approx(
        np.linalg.svd(matrix, compute_uv=False)[0], rel=1e-4
    )


def test_operand_is_the_plain_matrix_when_no_copy_is_needed():
    rng = np.random.default_rng(1)
    for shape, axes, blocks in [((3, 3, 4, 5), (-1,), ()),  # Conv2D
                                ((3, 4, 5), (0,), ())]:  # output axis first
        view = matrix_view(shape, axes, block_axes=blocks)
        kernel = rng.standard_normal(shape).astype("float32")
        operand = power_iteration.to_operand(kernel, view)
        np.testing.assert_array_equal(
            to_numpy(operand), to_numpy(power_iteration.to_matrix(kernel, view))
        )


@tensorflow_only
@pytest.mark.parametrize("jit_compile", [True, False])
@pytest.mark.parametrize(
    "kernel_shape, output_axes",
    [((2, 3, 4, 5), (2,)), ((2, 2, 3, 4, 2), (3,)), ((3, 4, 5, 6), (1, 2))],
)
def test_middle_output_operand_products_in_compiled_functions(
        kernel_shape, output_axes, jit_compile):
    # The transposed-conv products are one form on every runtime; compiled
    # by XLA and by TensorFlow's graph runtime they must equal the explicit
    # matrix's.
    import tensorflow as tf

    rng = np.random.default_rng(2)
    view = matrix_view(kernel_shape, output_axes)
    kernel = rng.standard_normal(kernel_shape).astype("float32")
    u = _unit(rng.standard_normal((1, view.d_out))).astype("float32")
    v = _unit(rng.standard_normal((1, view.d_in))).astype("float32")

    @tf.function(jit_compile=jit_compile)
    def products(kernel, u, v):
        operand = power_iteration.to_operand(kernel, view)
        assert len(operand.shape) == 4
        return (power_iteration._matvec_in(operand, u),
                power_iteration._matvec_out(operand, v))

    matrix = np.transpose(kernel, view.permutation).reshape(view.d_in,
                                                            view.d_out)
    mtu, mv = products(kernel, u, v)
    np.testing.assert_allclose(mtu.numpy(), (matrix @ u[0])[None], rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(mv.numpy(), (v[0] @ matrix)[None], rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize(
    "blocks, d_in, d_out",
    [(1, 1152, 3), (3, 100, 5), (1, 97, 4), (2, 27, 6), (1, 1, 2)],
    ids=["64-chunks", "blocks", "prime-d_in", "27-chunks", "one-row"],
)
def test_chunked_product_matches_numpy(blocks, d_in, d_out):
    # XLA's form of `M v` (partial products over chunks of d_in, summed) must
    # equal the plain product for any d_in, prime ones included.
    rng = np.random.default_rng(3)
    matrix = rng.standard_normal((blocks, d_in, d_out)).astype("float32")
    v = _unit(rng.standard_normal((blocks, d_in))).astype("float32")
    got = to_numpy(power_iteration._chunked_matvec_out(matrix, v))
    want = np.einsum("gi,gio->go", v.astype("float64"), matrix)
    # Entries are O(1) sums of d_in float32 terms of size ~1/sqrt(d_in).
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@tensorflow_only
@pytest.mark.parametrize("jit_compile", [True, False], ids=["xla", "graph"])
@pytest.mark.parametrize("blocks, d_in, d_out", [(1, 576, 8), (2, 30, 4)])
def test_products_and_gradient_in_compiled_functions(blocks, d_in, d_out,
                                                     jit_compile):
    # Under XLA `M v` takes the chunked form, in TensorFlow's graph runtime
    # the plain one: both must give numpy's product, and the gradient of
    # gᵀ(M v) with respect to the kernel must be the rank-one v gᵀ.
    import tensorflow as tf

    rng = np.random.default_rng(4)
    matrix = tf.constant(rng.standard_normal((blocks, d_in, d_out)),
                         tf.float32)
    v = _unit(rng.standard_normal((blocks, d_in))).astype("float32")
    g = rng.standard_normal((blocks, d_out)).astype("float32")

    @tf.function(jit_compile=jit_compile)
    def product_and_gradient(matrix):
        with tf.GradientTape() as tape:
            tape.watch(matrix)
            mv = power_iteration._matvec_out(matrix, v)
            objective = tf.reduce_sum(mv * g)
        return mv, tape.gradient(objective, matrix)

    mv, grad = product_and_gradient(matrix)
    want = np.einsum("gi,gio->go", v.astype("float64"), matrix.numpy())
    np.testing.assert_allclose(mv.numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad.numpy(), v[:, :, None] * g[:, None, :],
                               rtol=1e-6, atol=1e-7)
