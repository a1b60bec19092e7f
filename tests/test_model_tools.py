"""`keras_sn.apply` and `keras_sn.strip` on Sequential and functional models.

References: the original model's weights and outputs, numpy SVD of the
copied weights, the wrapped model's inference outputs (for strip), and a
SavedModel / TFLite round trip of the stripped model.
"""

import json

import keras
import numpy as np
import pytest

import keras_sn
from backends import tensorflow_only
from backends import to_numpy
from references import output_axis_matrix
from references import reference_sigma

SN = keras_sn.SpectralNormalization


def _sequential():
    return keras.Sequential([
        keras.Input((8, 8, 2)),
        keras.layers.Conv2D(4, 3, strides=2, padding="same", name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.LeakyReLU(0.1),
        keras.layers.Flatten(),
        keras.layers.Dense(5, activation="relu", name="hidden"),
        keras.layers.Dense(1, name="out"),
    ], name="sequential_model")


def _functional():
    # Two inputs, an Embedding, a residual Add and a nested Sequential.
    image = keras.Input((6, 6, 3), name="image")
    ids = keras.Input((4,), dtype="int32", name="ids")
    h = keras.layers.Conv2D(3, 3, padding="same", name="conv_a")(image)
    h = keras.layers.Add()([h, image])
    block = keras.Sequential([
        keras.Input((6, 6, 3)),
        keras.layers.Conv2DTranspose(2, 3, strides=2, padding="same",
                                     name="up"),
        keras.layers.GlobalAveragePooling2D(),
    ], name="block")
    h = block(h)
    e = keras.layers.Flatten()(keras.layers.Embedding(10, 2, name="emb")(ids))
    h = keras.layers.Concatenate()([h, e])
    out = keras.layers.Dense(2, name="head")(h)
    return keras.Model([image, ids], out, name="functional_model")


def _inputs(model, seed=0):
    rng = np.random.default_rng(seed)
    if model.name == "sequential_model":
        return rng.standard_normal((3, 8, 8, 2)).astype("float32")
    return [rng.standard_normal((3, 6, 6, 3)).astype("float32"),
            rng.integers(0, 10, (3, 4)).astype("int32")]


def _randomize(model, seed=1):
    # "Pretrained" weights, unlike a fresh initialization's.
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if weight.trainable:
            weight.assign(rng.standard_normal(weight.shape) * 0.7)


MODELS = {"sequential": _sequential, "functional": _functional}


def _wrapper(model, name):
    for layer in keras_sn.wrapped_layers(model):
        if layer.name == name:
            return layer
    raise KeyError(name)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_apply_wraps_the_table_layers_and_keeps_the_weights(kind):
    model = MODELS[kind]()
    _randomize(model)
    before = [to_numpy(w).copy() for w in model.weights]
    wrapped = keras_sn.apply(model)
    assert type(wrapped) is type(model)
    names = {layer.name for layer in keras_sn.wrapped_layers(
        wrapped)}
    expected = ({"conv", "hidden", "out"} if kind == "sequential"
                else {"conv_a", "up", "emb", "head"})
    assert names == expected
    assert isinstance(wrapped.get_layer(sorted(expected)[0]), SN)
    for wrapper in keras_sn.wrapped_layers(wrapped):
        original = model.get_layer(wrapper.name) if kind == "sequential" or (
            wrapper.name != "up") else model.get_layer("block").get_layer("up")
        for mine, theirs in zip(wrapper.layer.weights, original.weights):
            np.testing.assert_array_equal(to_numpy(mine), to_numpy(theirs))
        # The warm-up saw the copied weights, not a fresh initialization.
        kernel = to_numpy(original.weights[0])
        axis = -2 if wrapper.name == "up" else -1
        np.testing.assert_allclose(
            float(wrapper.sigma),
            reference_sigma(output_axis_matrix(kernel, axis)), rtol=1e-3,
        )
    for old, weight in zip(before, model.weights):  # the original untouched
        np.testing.assert_array_equal(old, to_numpy(weight))
    # The other layers' weights (BatchNormalization's too) are copied.
    if kind == "sequential":
        for mine, theirs in zip(wrapped.get_layer("bn").weights,
                                model.get_layer("bn").weights):
            np.testing.assert_array_equal(to_numpy(mine), to_numpy(theirs))


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_apply_with_initial_target_runs_like_the_original(kind):
    # Capturing sigma of the pretrained weights leaves the outputs unchanged.
    model = MODELS[kind]()
    _randomize(model)
    wrapped = keras_sn.apply(model, target_norm="initial", shrink_only=True)
    x = _inputs(model)
    np.testing.assert_allclose(to_numpy(wrapped(x)), to_numpy(model(x)),
                               rtol=1e-5, atol=1e-5)
    conv = wrapped.get_layer("conv" if kind == "sequential" else "conv_a")
    np.testing.assert_allclose(
        float(keras.ops.convert_to_numpy(conv.initial_sigma)),
        reference_sigma(output_axis_matrix(to_numpy(conv.layer.kernel))),
        rtol=1e-3,
    )


def test_apply_with_a_predicate_and_options():
    model = _sequential()
    wrapped = keras_sn.apply(
        model, predicate=lambda layer: isinstance(layer, keras.layers.Conv2D),
        power_iterations=2, target_norm=0.5,
    )
    assert [layer.name for layer in
            keras_sn.wrapped_layers(wrapped)] == ["conv"]
    conv = wrapped.get_layer("conv")
    assert (conv.power_iterations, conv.target_norm) == (2, 0.5)
    assert isinstance(wrapped.get_layer("hidden"), keras.layers.Dense)


def test_apply_operator_method_applies_to_convolutions_only():
    wrapped = keras_sn.apply(_functional(), method="operator")
    methods = {layer.name: layer.method for layer in
               keras_sn.wrapped_layers(wrapped)}
    assert methods == {"conv_a": "operator", "up": "operator",
                       "emb": "reshape", "head": "reshape"}


def test_apply_copies_existing_wrappers_with_their_state():
    model = keras.Sequential([
        keras.Input((4,)),
        SN(keras.layers.Dense(3), name="kept", power_iterations=3),
        keras.layers.Dense(2, name="plain"),
    ])
    model.layers[0](np.ones((1, 4)), training=True)  # u off its warm-up
    wrapped = keras_sn.apply(model)
    kept = wrapped.get_layer("kept")
    assert kept.power_iterations == 3
    assert not isinstance(kept.layer, SN)
    for mine, theirs in zip(kept.weights, model.layers[0].weights):
        np.testing.assert_array_equal(to_numpy(mine), to_numpy(theirs))
    assert isinstance(wrapped.get_layer("plain"), SN)


def _train(model):
    x = _inputs(model)
    y = np.zeros_like(to_numpy(model(x)))
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=2, batch_size=3, verbose=0)
    return x


@pytest.mark.parametrize(
    "kind, options",
    [
        ("sequential", {}),
        ("sequential", {"target_norm": 2.0, "shrink_only": True}),
        ("functional", {"target_norm": "initial"}),
        ("functional", {"method": "operator", "target_norm": 0.8}),
    ],
    ids=["sequential", "sequential_shrink_only", "functional_initial",
         "functional_operator"],
)
def test_strip_bakes_in_the_normalized_weights(kind, options):
    model = MODELS[kind]()
    _randomize(model)
    wrapped = keras_sn.apply(model, **options)
    x = _train(wrapped)  # u, v and the weights move off their first values
    plain = keras_sn.strip(wrapped)
    assert keras_sn.wrapped_layers(plain) == []
    assert "keras_sn" not in json.dumps(
        keras.saving.serialize_keras_object(plain)
    )
    np.testing.assert_allclose(to_numpy(plain(x)),
                               to_numpy(wrapped(x, training=False)),
                               rtol=1e-6, atol=1e-6)
    layer_names = {layer.name for layer in plain.layers}
    assert "conv" in layer_names or "conv_a" in layer_names
    # The stripped weights are W * scale, so its sigma is the target's.
    conv = plain.get_layer("conv" if kind == "sequential" else "conv_a")
    wrapper = wrapped.get_layer(conv.name)
    np.testing.assert_allclose(
        to_numpy(conv.kernel), to_numpy(wrapper.effective_weights()["kernel"]),
        rtol=0,
    )


def test_strip_keeps_unwrapped_layers_and_their_state():
    model = _sequential()
    _randomize(model)
    wrapped = keras_sn.apply(model)
    _train(wrapped)
    plain = keras_sn.strip(wrapped)
    for mine, theirs in zip(plain.get_layer("bn").weights,
                            wrapped.get_layer("bn").weights):
        np.testing.assert_array_equal(to_numpy(mine), to_numpy(theirs))


@pytest.fixture
def stripped_and_expected():
    model = MODELS["sequential"]()
    _randomize(model)
    wrapped = keras_sn.apply(model, method="operator")
    x = _train(wrapped)
    plain = keras_sn.strip(wrapped)
    return plain, x, to_numpy(wrapped(x, training=False))


@pytest.mark.slow
@tensorflow_only
def test_stripped_model_saved_model_round_trip(stripped_and_expected,
                                               tmp_path):
    import tensorflow as tf

    plain, x, expected = stripped_and_expected
    path = str(tmp_path / "saved")
    plain.export(path)
    reloaded = tf.saved_model.load(path)
    np.testing.assert_allclose(reloaded.serve(tf.constant(x)), expected,
                               rtol=1e-6, atol=1e-6)


@pytest.mark.slow
@tensorflow_only
@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_stripped_model_converts_to_tflite(stripped_and_expected, tmp_path):
    import tensorflow as tf

    plain, x, expected = stripped_and_expected
    path = str(tmp_path / "saved")
    plain.export(path)
    converter = tf.lite.TFLiteConverter.from_saved_model(path)
    flatbuffer = converter.convert()
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    runner = interpreter.get_signature_runner()
    (name,) = runner.get_input_details()
    outputs = runner(**{name: x})
    (output,) = outputs.values()
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)


def test_apply_and_strip_need_a_built_model():
    model = keras.Sequential([keras.layers.Dense(2)])
    for function in (keras_sn.apply, keras_sn.strip):
        with pytest.raises(ValueError, match=r"needs a built model.*"
                           r"keras.Input"):
            function(model)


def test_apply_rejects_a_non_model():
    with pytest.raises(ValueError, match="takes a Keras `Sequential` or "
                       "functional model"):
        keras_sn.apply(keras.layers.Dense(3))


@pytest.mark.parametrize("model", [3, None, "model"])
def test_wrapped_layers_rejects_what_is_not_a_layer(model):
    with pytest.raises(ValueError, match=r"takes a Keras model or layer\. "
                       r"Received: model="):
        keras_sn.wrapped_layers(model)


def test_apply_rejects_a_subclassed_model():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.ones((1, 3)))
    with pytest.raises(ValueError, match="subclassed model"):
        keras_sn.apply(net)


def test_apply_rejects_bad_options_and_predicates():
    with pytest.raises(ValueError, match=r"`target_norm` must be"):
        keras_sn.apply(_sequential(), target_norm=-1.0)
    with pytest.raises(ValueError, match=r"`predicate` must be None or a "
                       r"callable"):
        keras_sn.apply(_sequential(), predicate="Dense")
    with pytest.raises(ValueError, match="names each wrapper after the layer"):
        keras_sn.apply(_sequential(), name="x")
