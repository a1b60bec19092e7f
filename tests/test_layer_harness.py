"""The standard Keras layer checks, for every layer type in the weight table.

In the manner of keras-hub's `run_layer_test`: config and serialization round
trips, weight counts, symbolic and eager shapes and dtypes, a `fit` step with
and without XLA, a mixed-precision pass and a `.keras` round trip. Each check
builds a fresh inner layer.
"""

import keras
import numpy as np
import pytest
from keras.backend import standardize_dtype

import keras_sn
from backends import BACKEND
from backends import to_numpy
from references import LAYER_CASE_IDS
from references import LAYER_CASES

each_case = pytest.mark.parametrize("case", LAYER_CASES, ids=LAYER_CASE_IDS)


def _input(case):
    dtype = "int32" if case.integer_input else "float32"
    return keras.Input(case.input_shape[1:], batch_size=None, dtype=dtype)


def _model(case, **options):
    inputs = _input(case)
    outputs = keras_sn.SpectralNormalization(case.make(), **options)(inputs)
    return keras.Model(inputs, keras.layers.Flatten()(outputs))


@each_case
def test_config_round_trip(case):
    layer = keras_sn.SpectralNormalization(case.make(), power_iterations=2)
    config = layer.get_config()
    clone = keras_sn.SpectralNormalization.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert restored.get_config() == config


@each_case
def test_weight_counts(case):
    layer = keras_sn.SpectralNormalization(case.make())
    layer.build(case.input_shape)
    inner = layer.layer
    assert len(layer.trainable_weights) == len(inner.trainable_weights)
    assert len(layer.non_trainable_weights) == (
        len(inner.non_trainable_weights) + 2 * len(layer.sigmas)
    )


@each_case
def test_symbolic_and_eager_shapes_and_dtypes_agree(case):
    layer = keras_sn.SpectralNormalization(case.make())
    symbolic = layer(_input(case))
    eager = layer(case.inputs(), training=True)
    assert len(symbolic.shape) == len(eager.shape)
    for static, actual in zip(symbolic.shape[1:], eager.shape[1:]):
        assert static in (None, actual)  # EinsumDense may leave axes unknown
    assert standardize_dtype(symbolic.dtype) == "float32"
    assert standardize_dtype(eager.dtype) == "float32"
    assert layer.compute_output_shape(case.input_shape) == (
        layer.layer.compute_output_shape(case.input_shape)
    )


def _fit_cases():
    """`(case, jit_compile)` pairs: XLA on TensorFlow and JAX, and without.

    torch has no XLA: its `jit_compile=True` is torch.compile (about 35 s a
    model here, Dynamo tracing), which tests/test_torch_compile.py runs on
    every kernel layout, against eager. On JAX, `jit_compile=False` is eager
    execution op by op, the same functional code as the XLA variant without
    the tracing (and about 4x slower to run here): two layer types suffice.
    """
    jit = [True, False] if BACKEND != "torch" else [False]
    jax_eager = {"dense", "conv2d"}
    for case in LAYER_CASES:
        for jit_compile in jit:
            if BACKEND == "jax" and not (jit_compile or case.id in jax_eager):
                continue
            yield pytest.param(
                case, jit_compile,
                id=f"{'xla' if jit_compile else 'graph'}-{case.id}",
            )


@pytest.mark.parametrize("case, jit_compile", list(_fit_cases()))
def test_fit_step(case, jit_compile):
    model = _model(case, warmup_iterations=0)  # u far from its fixed point
    wrapper = model.layers[1]
    model.compile(optimizer="adam", loss="mse", jit_compile=jit_compile)
    x = case.inputs()
    y = np.zeros_like(to_numpy(model(x)))
    kernel = wrapper.layer.trainable_weights[0].numpy().copy()
    u = wrapper.vector_u.numpy().copy()
    history = model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.array_equal(wrapper.layer.trainable_weights[0].numpy(), kernel)
    assert not np.array_equal(wrapper.vector_u.numpy(), u)


@each_case
def test_mixed_precision_pass(case):
    keras.config.set_dtype_policy("mixed_float16")
    layer = keras_sn.SpectralNormalization(case.make())
    y = layer(case.inputs(), training=True)
    assert standardize_dtype(y.dtype) == "float16"
    assert all(standardize_dtype(w.dtype) == "float32" for w in layer.weights)


@each_case
def test_keras_file_round_trip(case, tmp_path):
    model = _model(case)
    x = case.inputs()
    model(x, training=True)  # move u away from its warm-up value
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(to_numpy(model(x)), to_numpy(loaded(x)))
    np.testing.assert_array_equal(
        model.layers[1].vector_u.numpy(), loaded.layers[1].vector_u.numpy()
    )
