"""`jit_compile=True` on torch is `torch.compile`: a compiled `fit` trains a
wrapped model exactly as an eager one does, on every kernel layout.

torch has no XLA, so the layer harness's `jit_compile=True` variant does not
run on torch; these tests do, with a stronger check (equal to eager), on two
models that between them hold every kernel layout of the weight table:

- with Inductor, torch.compile's default backend (C++ code generation), one
  convolution: Inductor's first use on a fresh machine costs ~30-50 s (it
  probes the CPU's vector instructions and precompiles headers), and Dynamo
  traces Keras' step through the graph breaks of Keras' optimizer and
  backward pass, so this model is small;
- with `aot_eager` (Dynamo and AOT autograd trace the wrapper, as Inductor
  does, without code generation; tests/conftest.py), an embedding, a grouped
  convolution (block-diagonal), separable and depthwise convolutions, a
  transposed convolution (output axis in the middle), an `EinsumDense` (a
  2-D kernel, as `Dense`'s) and the operator method. AOT autograd is where
  a gradient term can be lost (below); Inductor only generates code for the
  graphs it produces.

Before σ's gradient went through autodiff, a compiled step lost σ's term of
the gradient and the kernels were 0.4% apart after one step.

A wrapper's call, training or not, is also one graph for Dynamo: no graph
break (Keras' torch `ops.max` made 11-26 of them per call before the
power iteration took `ops.amax`), so a compiled model is not cut into
pieces at every wrapped layer.
"""

import keras
import numpy as np
import pytest

import keras_sn
from backends import BACKEND
from backends import to_numpy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(BACKEND != "torch", reason="torch.compile is torch's"),
]
SN = keras_sn.SpectralNormalization


def _convolution():
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        SN(keras.layers.Conv2D(4, 3, strides=2, padding="same")),
        keras.layers.Flatten(),
    ])


def _other_layouts():
    tokens = keras.Input((8,), dtype="int32")
    x = SN(keras.layers.Embedding(10, 4))(tokens)
    x = SN(keras.layers.Conv1D(4, 3, groups=2, padding="same"))(x)
    x = SN(keras.layers.SeparableConv1D(4, 3, padding="same"))(x)
    x = SN(keras.layers.DepthwiseConv1D(3, padding="same"))(x)
    x = SN(keras.layers.Conv1DTranspose(4, 3, padding="same"))(x)
    x = SN(keras.layers.Conv1D(4, 3, padding="same"), method="operator")(x)
    x = SN(keras.layers.EinsumDense("abc,cd->abd", output_shape=(8, 2)))(x)
    return keras.Model(tokens, keras.layers.Flatten()(x))


def _train(build, jit_compile, x, y):
    keras.utils.set_random_seed(3)
    model = build()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse",
                  jit_compile=jit_compile)
    history = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    return model, history.history["loss"]


def _check_compiled_equals_eager(build, x, y):
    compiled, compiled_loss = _train(build, True, x, y)
    eager, eager_loss = _train(build, False, x, y)
    keras.utils.set_random_seed(3)
    initial = build()
    # Training moved every wrapped kernel and u (4 steps; a u of one entry
    # per block, as a depthwise kernel's, is ±1 for good): the comparison is
    # not one of two untouched models.
    for before, after in zip(initial.weights, compiled.weights):
        if after.trainable or ("vector_u" in after.path and after.shape[-1] > 1):
            assert not np.allclose(to_numpy(before), to_numpy(after)), after.path
    # The same float32 arithmetic in another order (compilers fuse): values
    # of order 1 after 4 steps agree to many float32 ulps, far closer than
    # the 4e-3 a missing gradient term made.
    np.testing.assert_allclose(compiled_loss, eager_loss, rtol=1e-4)
    for a, b in zip(compiled.weights, eager.weights):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-4,
                                   atol=1e-5, err_msg=a.path)
    for wrapper in keras_sn.wrapped_layers(compiled):
        assert 0 < wrapper.sigma


@pytest.mark.inductor
def test_inductor_trains_like_eager():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 8, 8, 3)).astype("float32")
    y = rng.standard_normal((8, 64)).astype("float32")
    _check_compiled_equals_eager(_convolution, x, y)


def test_compiled_step_trains_every_other_layout_like_eager():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 10, (8, 8)).astype("int32")
    y = rng.standard_normal((8, 16)).astype("float32")
    _check_compiled_equals_eager(_other_layouts, x, y)


def _layouts():
    """`(wrapper, input)` for one layer of each kernel layout, built."""
    rng = np.random.default_rng(2)
    sequence = rng.standard_normal((2, 8, 4)).astype("float32")
    cases = [
        (SN(keras.layers.Dense(3)), sequence),
        (SN(keras.layers.Embedding(10, 4)),
         rng.integers(0, 10, (2, 8)).astype("int32")),
        (SN(keras.layers.Conv1D(4, 3, groups=2, padding="same")), sequence),
        (SN(keras.layers.SeparableConv1D(4, 3, padding="same")), sequence),
        (SN(keras.layers.DepthwiseConv1D(3, padding="same")), sequence),
        (SN(keras.layers.Conv1DTranspose(4, 3, padding="same")), sequence),
        (SN(keras.layers.Conv1D(4, 3, padding="same"), method="operator"),
         sequence),
        (SN(keras.layers.EinsumDense("abc,cd->abd", output_shape=(8, 2))),
         sequence),
    ]
    for wrapper, x in cases:
        wrapper(x)
    return cases


@pytest.mark.parametrize("training", [True, False])
def test_a_wrapper_call_is_one_graph_for_dynamo(training):
    import torch

    for wrapper, x in _layouts():
        torch.compiler.reset()
        x = torch.as_tensor(x)
        explanation = torch._dynamo.explain(
            lambda x, wrapper=wrapper: wrapper(x, training=training)
        )(x)
        reasons = [str(b.reason).splitlines()[0]
                   for b in explanation.break_reasons]
        assert explanation.graph_break_count == 0, (
            type(wrapper.layer).__name__, reasons)
        assert explanation.graph_count == 1, type(wrapper.layer).__name__
