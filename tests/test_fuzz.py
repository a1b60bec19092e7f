"""Fuzzed inputs (hypothesis): the math and the wrapper never crash or NaN.

Random shapes, dtypes, scales (zero and tiny included) and options. The
oracles below are written from the documented contract, not from keras_sn's
own checks: every invalid combination must raise a `ValueError` whose message
names the offending argument, and leave nothing half-built; every valid one
must give finite outputs and a sigma within tolerance of numpy's SVD.

Tolerances (relative, on sigma): 1e-5 where the state is float32 (float32,
float16 and bfloat16 layers), 1e-10 for float64 layers. The tight check
applies when the warm-up ran at least `min(d_in, d_out)` Lanczos steps (then
the Krylov space is the whole space, so the estimate is exact up to
rounding); with fewer steps sigma must still not exceed the SVD value (a
Ritz value, and after a power step ||M v|| with unit v, never exceed it).
"""

import json
import math
import re

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import event
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from keras import ops

import keras_sn
from backends import BACKEND
from backends import FLOAT64_IS_EXACT
from backends import float64_rtol
from backends import to_numpy
from keras_sn._src import lanczos
from keras_sn._src import power_iteration
from references import LAYER_CASES
from references import reference_sigma

# float64 references and layers: x64 on JAX for these tests.
pytestmark = pytest.mark.float64


def fuzz(max_examples):
    """Hypothesis settings: bounded examples, no deadline, no database.

    JAX compiles every op anew for each new shape in eager mode (a wrapper
    example takes about 2 s there), so other backends run a fifth of the
    examples.
    """
    if BACKEND != "tensorflow":
        max_examples = max(10, max_examples // 5)
    return settings(
        max_examples=max_examples,
        deadline=None,
        # conftest's autouse fixture only seeds and resets the dtype policy;
        # the examples reset the policy themselves.
        suppress_health_check=[HealthCheck.function_scoped_fixture,
                               HealthCheck.too_slow],
        database=None,
    )


STATE_RTOL = {"float32": 1e-5, "float64": float64_rtol(1e-10)}
# Keras' torch backend computes float64 ops in float32 (see backends.py).
MACHINE_EPS = {
    "float32": float(np.finfo(np.float32).eps),
    "float64": float(np.finfo(np.float64 if FLOAT64_IS_EXACT
                              else np.float32).eps),
}
FLOAT32_NORMAL = (float(np.finfo(np.float32).tiny),
                  float(np.finfo(np.float32).max))


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# --- The power-iteration math ----------------------------------------------


@st.composite
def stacks(draw):
    """A `(blocks, d_in, d_out)` stack, unit start vectors and its dtype.

    Scales include 0 (an all-zero kernel) and 1e-30, whose squared norms
    underflow in float32; one block may be zeroed or made rank one.
    """
    dtype = draw(st.sampled_from(["float32", "float64"]))
    blocks = draw(st.integers(1, 3))
    d_in, d_out = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    scale = draw(st.sampled_from([0.0, 1e-30, 1e-6, 1.0, 1e6]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    matrix = rng.standard_normal((blocks, d_in, d_out)) * scale
    special = draw(st.sampled_from(["none", "zero_block", "rank_one_block"]))
    if special == "zero_block":
        matrix[-1] = 0.0
    elif special == "rank_one_block":
        matrix[0] = np.outer(matrix[0][:, 0], matrix[0][0, :])
    u0 = _unit(rng.standard_normal((blocks, d_out)))
    v0 = _unit(rng.standard_normal((blocks, d_in)))
    return (matrix.astype(dtype), u0.astype(dtype), v0.astype(dtype), dtype)


def _block_sigmas(matrix):
    return [reference_sigma(m) for m in np.asarray(matrix, np.float64)]


@fuzz(120)
@given(stacks(), st.integers(0, 4))
def test_power_iteration_stays_finite_unit_and_below_svd(stack, iterations):
    matrix, u0, v0, dtype = stack
    u, v = power_iteration.power_iteration(matrix, u0, v0, iterations, 1e-12)
    u, v = to_numpy(u), to_numpy(v)
    assert u.dtype == dtype and v.dtype == dtype
    assert np.all(np.isfinite(u)) and np.all(np.isfinite(v))
    # Unit rows always: where a product is too small to normalize (zero or
    # underflowing kernel), the previous unit vector is kept.
    tol = 100 * MACHINE_EPS[dtype]
    np.testing.assert_allclose(np.linalg.norm(u, axis=-1), 1.0, atol=tol)
    np.testing.assert_allclose(np.linalg.norm(v, axis=-1), 1.0, atol=tol)

    sigma, u1, v1 = power_iteration.power_iteration_and_sigma(
        matrix, u0, v0, iterations + 1, 1e-12
    )
    sigma = float(sigma)
    true = max(_block_sigmas(matrix))
    assert math.isfinite(sigma)
    # |u^T M v| <= sigma_max for unit u, v.
    assert abs(sigma) <= true * (1 + STATE_RTOL[dtype]) + 1e-37
    if true == 0.0:
        assert sigma == 0.0
        np.testing.assert_array_equal(u1, u0)  # kept, not NaN or zero
        np.testing.assert_array_equal(v1, v0)


def _normalize_reference(x, fallback, epsilon, dtype, top):
    """PyTorch-style normalize per row in float64, with the fallback rule.

    Returns the reference rows and a per-row absolute tolerance (the
    first-order rounding error of normalizing a product computed in `dtype`:
    about n * machine-eps * ||M|| / ||x||), or None for rows whose norm is
    too close to `epsilon` for the branch to be decided in `dtype`.
    """
    eps = MACHINE_EPS[dtype]
    norms = np.linalg.norm(x, axis=-1)
    reference, tolerance = np.array(fallback, np.float64), []
    for row, norm in enumerate(norms):
        if norm > 2 * epsilon and norm > 1e-30:
            reference[row] = x[row] / norm
            tolerance.append(50 * x.shape[-1] * eps * max(top[row], norm)
                             / norm)
        elif norm < epsilon / 2 or norm <= 1e-30:
            tolerance.append(0.0)  # the fallback row, exactly
        else:
            return None, None
    return reference, np.asarray(tolerance)[:, None]


@fuzz(80)
@given(stacks(), st.sampled_from([1e-12, 1e-6, 1e-1]))
def test_one_power_step_matches_the_numpy_formula(stack, epsilon):
    matrix, u0, v0, dtype = stack
    k = np.asarray(matrix, np.float64)
    top = _block_sigmas(k)
    u, v = power_iteration.power_iteration(matrix, u0, v0, 1, epsilon)
    u, v = to_numpy(u).astype(np.float64), to_numpy(v).astype(np.float64)
    # v <- normalize(M^T u) = normalize(K u); else v is kept.
    v_ref, v_tol = _normalize_reference(
        np.einsum("gio,go->gi", k, u0.astype(np.float64)), v0, epsilon,
        dtype, top)
    if v_ref is None:
        return  # at the epsilon threshold: either branch is right
    assert np.all(np.abs(v - v_ref) <= v_tol + 1e-300), (v, v_ref, v_tol)
    # u <- normalize(M v) = normalize(K^T v), from the computed v.
    u_ref, u_tol = _normalize_reference(
        np.einsum("gio,gi->go", k, v), u0, epsilon, dtype, top)
    if u_ref is None:
        return
    assert np.all(np.abs(u - u_ref) <= u_tol + 1e-300), (u, u_ref, u_tol)


@fuzz(80)
@given(stacks())
def test_full_warmup_then_sigma_matches_svd(stack):
    matrix, u0, _, dtype = stack
    k = np.asarray(matrix, np.float64)
    steps = min(k.shape[1], k.shape[2])
    u, v = lanczos.matrix_top_singular_pairs(k, u0.astype(np.float64), steps)
    assert np.all(np.isfinite(u)) and np.all(np.isfinite(v))
    # As tensors: unlike the other functions of the module,
    # sigma_from_vectors does not convert numpy inputs (torch needs it).
    sigma = float(power_iteration.sigma_from_vectors(
        *(ops.convert_to_tensor(a) for a in (matrix, v.astype(dtype)))
    ))
    true = max(_block_sigmas(k))
    assert sigma == pytest.approx(true, rel=STATE_RTOL[dtype], abs=1e-37)


# --- The wrapper's constructor and build -----------------------------------

# Every argument draws a valid value about 7 times in 8 (so that about half of
# the examples reach build and call) and otherwise an invalid one of any type.
def _mostly(valid, invalid):
    return st.sampled_from([True] * 7 + [False]).flatmap(
        lambda is_valid: valid if is_valid else invalid
    )


POWER_ITERATIONS = _mostly(
    st.one_of(st.integers(1, 3), st.just(np.int64(2))),
    st.one_of(st.integers(-3, 0),
              st.sampled_from([True, False, 1.0, 2.5, "2", None,
                               np.int32(0)])),
)
EPSILON = _mostly(
    st.one_of(st.floats(1e-15, 1e-3), st.floats(1.2e-38, 3.4e38),
              st.sampled_from([1, np.float32(1e-6), np.float64(1e-12)])),
    st.one_of(st.floats(allow_nan=True, allow_infinity=True),
              st.integers(-2, 0),
              st.sampled_from([None, "1e-6", True, 1e-40, 1e39])),
)
WARMUP_ITERATIONS = _mostly(
    st.one_of(st.integers(0, 25), st.just(np.int64(4))),
    st.one_of(st.integers(-3, -1),
              st.sampled_from([None, 1.0, True, "3"])),
)
AXIS_INT = st.integers(-5, 4)  # in or out of range, depending on the rank
AXIS = _mostly(
    st.one_of(st.none(), AXIS_INT, st.just(np.int64(-1)),
              st.lists(AXIS_INT, min_size=1, max_size=3).map(tuple),
              st.lists(AXIS_INT, min_size=1, max_size=3)),
    st.sampled_from(["a", 1.5, True, (), [], (0, "x"), (True,)]),
)
NAMES = ["kernel", "bias", "embeddings", "depthwise_kernel",
         "pointwise_kernel", "nope"]  # present or not, depending on the layer
WEIGHT_NAME = _mostly(
    st.one_of(st.none(), st.sampled_from(NAMES),
              st.lists(st.sampled_from(NAMES), min_size=1, max_size=2,
                       unique=True),
              st.lists(st.sampled_from(NAMES), min_size=1, max_size=2,
                       unique=True).map(tuple)),
    st.sampled_from([5, "", [], ["kernel", 3], [""]]),
)
POLICIES = ["float32", "float64", "mixed_float16", "mixed_bfloat16"]


def _is_int(value, minimum):
    return (isinstance(value, (int, np.integer))
            and not isinstance(value, (bool, np.bool_)) and value >= minimum)


def _constructor_errors(power, epsilon, warmup, axis, weight_name):
    """The arguments that the contract rejects before anything is built."""
    errors = set()
    if not _is_int(power, 1):
        errors.add("power_iterations")
    if not _is_int(warmup, 0):
        errors.add("warmup_iterations")
    if (not isinstance(epsilon, (int, float, np.integer, np.floating))
            or isinstance(epsilon, bool)
            or not FLOAT32_NORMAL[0] <= epsilon <= FLOAT32_NORMAL[1]):
        errors.add("epsilon")
    is_int = lambda a: _is_int(a, -math.inf)  # noqa: E731
    if not (axis is None or is_int(axis) or (
            isinstance(axis, (list, tuple)) and axis
            and all(is_int(a) for a in axis))):
        errors.add("axis")
    names = weight_name if isinstance(weight_name, (list, tuple)) else None
    if not (weight_name is None
            or (isinstance(weight_name, str) and weight_name)
            or (names and all(isinstance(n, str) and n for n in names))):
        errors.add("weight_name")
    return errors


def _build_errors(layer, axis, weight_name):
    """What the contract rejects once the wrapped layer's weights exist.

    All of them: the error may name whichever the checks meet first.
    """
    if weight_name is None:
        names = _table_names(layer)
    else:
        names = [weight_name] if isinstance(weight_name, str) else weight_name
    errors = set()
    for name in names:
        weight = getattr(layer, name, None)
        if not keras_sn._compat.is_variable(weight):
            errors.add("weight_name")
        elif axis is not None:
            axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
            rank = len(weight.shape)
            if (any(not -rank <= a < rank for a in axes)
                    or len({a % rank for a in axes}) != len(axes)):
                errors.add("axis")
    return errors


def _table_names(layer):
    for row in keras_sn.weights.WEIGHT_TABLE:
        if isinstance(layer, row.classes):
            return list(row.rules)
    return ["kernel"]


def _reference_matrix(case, layer, name, axis):
    """The paper's matrix of weight `name`: the table's, or plain `axis`."""
    table = case.matrices(layer)
    if axis is None and name in table:
        return table[name]
    weight = to_numpy(getattr(layer, name)).astype(np.float64)
    axes = [axis] if isinstance(axis, (int, np.integer)) else list(
        axis or [-1])
    axes = [a % weight.ndim for a in axes]
    rows = math.prod(weight.shape[a] for a in axes)
    return np.moveaxis(weight, axes, list(range(len(axes)))).reshape(rows, -1)


def _assert_names_argument(error, arguments):
    message = str(error)
    assert any(re.search(rf"\b{a}\b", message) for a in arguments), (
        f"ValueError does not name any of {sorted(arguments)}: {message}"
    )


@pytest.mark.slow
@fuzz(150)
@given(
    case=st.sampled_from(LAYER_CASES),
    policy=st.sampled_from(POLICIES),
    prebuilt=st.booleans(),
    power=POWER_ITERATIONS,
    epsilon=EPSILON,
    warmup=WARMUP_ITERATIONS,
    axis=AXIS,
    weight_name=WEIGHT_NAME,
)
def test_wrapper_arguments_either_raise_value_error_or_work(
    case, policy, prebuilt, power, epsilon, warmup, axis, weight_name
):
    keras.config.set_dtype_policy(policy)
    try:
        inner = case.make()
    finally:
        keras.config.set_dtype_policy("float32")
    if prebuilt:
        inner.build(case.input_shape)
    options = dict(power_iterations=power, epsilon=epsilon,
                   warmup_iterations=warmup, axis=axis,
                   weight_name=weight_name)

    expected = _constructor_errors(power, epsilon, warmup, axis, weight_name)
    event(f"rejected: {sorted(expected)[0]}" if expected else "passes init")
    if expected:
        with pytest.raises(ValueError) as error:
            keras_sn.SpectralNormalization(inner, **options)
        _assert_names_argument(error.value, expected)
        return
    if prebuilt:
        expected = _build_errors(inner, axis, weight_name)
        if expected:  # caught at construction, before anything is attached
            event(f"rejected at init (prebuilt): {sorted(expected)[0]}")
            with pytest.raises(ValueError) as error:
                keras_sn.SpectralNormalization(inner, **options)
            _assert_names_argument(error.value, expected)
            return
    layer = keras_sn.SpectralNormalization(inner, **options)
    json.dumps(layer.get_config())  # JSON-serializable config
    try:
        layer.build(case.input_shape)
    except ValueError as error:
        expected = _build_errors(inner, axis, weight_name)
        event(f"rejected at build: {sorted(expected)[0] if expected else '?'}")
        assert expected, f"valid arguments {options} raised {error}"
        _assert_names_argument(error, expected)
        assert not layer.built
        assert layer.non_trainable_weights == []  # nothing half-built
        # The inner layer is left wrappable.
        again = keras_sn.SpectralNormalization(inner)
        assert np.all(np.isfinite(to_numpy(again(case.inputs()))))
        return
    assert not _build_errors(inner, axis, weight_name), (
        f"{options} should have been rejected"
    )

    raw = [np.array(w) for w in inner.get_weights()]
    state_dtype = "float64" if policy == "float64" else "float32"
    views = {w.name: w.view for w in keras_sn.weights.resolve_weights(
        inner, layer.weight_name, layer.axis)}

    def check_sigmas(when):
        sigmas = {k: float(v) for k, v in layer.sigmas.items()}
        assert sorted(sigmas) == sorted(views)
        for name, sigma in sigmas.items():
            true = reference_sigma(_reference_matrix(case, inner, name, axis))
            assert math.isfinite(sigma), (when, name)
            rtol = STATE_RTOL[state_dtype]
            if warmup >= min(views[name].d_in, views[name].d_out):
                assert sigma == pytest.approx(true, rel=rtol, abs=1e-30), (
                    when, name)
            else:
                assert -1e-30 <= sigma <= true * (1 + rtol) + 1e-30, (
                    when, name, sigma, true)

    event("valid: built and called")
    check_sigmas("after build")
    x = case.inputs()
    unwrapped = inner(x)  # the same layer on its raw weights
    for training in (True, False):
        y = layer(x, training=training)
        assert y.shape == unwrapped.shape and y.dtype == unwrapped.dtype
        assert np.all(np.isfinite(to_numpy(y))), (
            f"non-finite output, training={training}")
    check_sigmas("after a training call")
    for before, after in zip(raw, inner.get_weights()):
        np.testing.assert_array_equal(before, after)  # never written
    for v in layer.non_trainable_weights:
        np.testing.assert_allclose(
            np.linalg.norm(to_numpy(v), axis=-1), 1.0, rtol=1e-5
        )
    restored = keras_sn.SpectralNormalization.from_config(layer.get_config())
    assert restored.get_config() == layer.get_config()
