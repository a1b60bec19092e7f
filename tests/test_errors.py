"""Bad input: a ValueError that says what was received and how to fix it."""

import keras
import numpy as np
import pytest

import keras_sn
from keras_sn import SpectralNormalization


def _built_dense():
    dense = keras.layers.Dense(3)
    dense.build((None, 4))
    return dense


@pytest.mark.parametrize(
    "layer", ["dense", np.ones(3), None, keras.layers.Dense],
    ids=["string", "array", "none", "class"],
)
def test_not_a_layer(layer):
    with pytest.raises(ValueError, match=r"must be a `keras.layers.Layer`.*Received: layer="):
        SpectralNormalization(layer)


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_power_iterations_must_be_positive_int(value):
    with pytest.raises(
        ValueError, match=rf"`power_iterations` must be a positive integer\. Received: power_iterations={value!r}"
    ):
        SpectralNormalization(keras.layers.Dense(3), power_iterations=value)


@pytest.mark.parametrize("value", [0, 0.0, -1e-3, float("nan"), "1e-12", None])
def test_epsilon_must_be_positive(value):
    with pytest.raises(ValueError, match=r"`epsilon` must be a positive float.*Received: epsilon="):
        SpectralNormalization(keras.layers.Dense(3), epsilon=value)


@pytest.mark.parametrize("value", [-1, 2.0, None])
def test_warmup_iterations_must_be_non_negative_int(value):
    with pytest.raises(ValueError, match=r"`warmup_iterations` must be an integer >= 0"):
        SpectralNormalization(keras.layers.Dense(3), warmup_iterations=value)


def test_wrapping_a_spectral_normalization_again():
    inner = SpectralNormalization(keras.layers.Dense(3))
    with pytest.raises(ValueError, match="already a `SpectralNormalization`"):
        SpectralNormalization(inner)


@pytest.mark.parametrize("axis", ["a", 1.5, (), [0, "x"], True])
def test_axis_of_wrong_type(axis):
    with pytest.raises(ValueError, match=r"`axis` must be None, an int.*Received: axis="):
        SpectralNormalization(keras.layers.Dense(3), axis=axis)


def test_axis_out_of_range_on_a_built_layer_is_caught_at_construction():
    with pytest.raises(ValueError, match=r"`axis` is out of range.*rank 2.*Received: axis=2"):
        SpectralNormalization(_built_dense(), axis=2)


def test_axis_out_of_range_on_an_unbuilt_layer_is_caught_at_build_with_no_state():
    layer = SpectralNormalization(keras.layers.Dense(3), axis=(0, -3))
    with pytest.raises(ValueError, match=r"`axis` is out of range"):
        layer.build((None, 4))
    assert not layer.built
    assert layer.non_trainable_weights == []  # nothing half-built


def test_axis_naming_the_same_axis_twice():
    with pytest.raises(ValueError, match="same kernel axis twice"):
        SpectralNormalization(_built_dense(), axis=(1, -1))


@pytest.mark.parametrize("name", [5, "", [], ["kernel", 3], ["kernel", "kernel"]])
def test_weight_name_of_wrong_type(name):
    with pytest.raises(ValueError, match=r"`weight_name` must be None.*Received: weight_name="):
        SpectralNormalization(keras.layers.Dense(3), weight_name=name)


def test_missing_weight_name_lists_the_available_weights():
    with pytest.raises(
        ValueError,
        match=r"Dense 'dense\w*' has no weight named 'kernal'.*Received: weight_name='kernal'.*\['bias', 'kernel'\]",
    ):
        SpectralNormalization(_built_dense(), weight_name="kernal")


def test_missing_weight_on_unbuilt_layer_fails_at_first_call_with_no_state():
    layer = SpectralNormalization(keras.layers.Dense(3), weight_name="nope")
    with pytest.raises(ValueError, match="has no weight named 'nope'"):
        layer(np.ones((1, 4)))
    assert not layer.built
    assert layer.non_trainable_weights == []


def test_layer_without_matrix_weight_says_how_to_opt_in():
    with pytest.raises(
        ValueError,
        match=r"does not know which weight of LayerNormalization.*Opt in by passing `weight_name=`",
    ):
        SpectralNormalization(keras.layers.LayerNormalization())(np.ones((2, 3)))


def test_integer_weight_is_rejected():
    class WithIntWeight(keras.layers.Layer):
        def build(self, input_shape):
            self.table = self.add_weight(shape=(3, 3), dtype="int32",
                                         initializer="zeros", trainable=False)

        def call(self, x):
            return x

    with pytest.raises(ValueError, match=r"'table'.*is not a float tensor"):
        SpectralNormalization(WithIntWeight(), weight_name="table")(np.ones((1, 3)))


def test_lora_kernel_is_rejected_with_a_fix():
    dense = _built_dense()
    dense.enable_lora(2)
    with pytest.raises(ValueError, match="LoRA and quantized kernels are not supported"):
        SpectralNormalization(dense)


@pytest.mark.parametrize("iterations", [-1, 1.0])
def test_reestimate_iterations(iterations):
    layer = SpectralNormalization(keras.layers.Dense(3))
    layer.build((None, 4))
    with pytest.raises(ValueError, match=r"`iterations` must be an integer >= 0"):
        layer.reestimate(iterations)


def test_sigma_before_build():
    with pytest.raises(ValueError, match="needs a built layer"):
        SpectralNormalization(keras.layers.Dense(3)).sigma


def test_failed_construction_leaves_the_inner_layer_wrappable():
    dense = _built_dense()
    with pytest.raises(ValueError):
        SpectralNormalization(dense, axis=5)
    layer = SpectralNormalization(dense)  # nothing was left attached
    assert layer(np.ones((1, 4))).shape == (1, 3)
