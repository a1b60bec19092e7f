"""Configs, .keras and .weights.h5 files, and SavedModel export."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_sn
from backends import tensorflow_only
from backends import to_numpy


def _model():
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        keras_sn.SpectralNormalization(
            keras.layers.Conv2D(4, 3, strides=2), power_iterations=2
        ),
        keras.layers.LeakyReLU(0.1),
        keras_sn.SpectralNormalization(keras.layers.Conv2DTranspose(2, 3)),
        keras.layers.Flatten(),
        keras_sn.SpectralNormalization(keras.layers.Dense(1), epsilon=1e-10),
    ])


def _data(n=8):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, 8, 8, 3)).astype("float32"),
            rng.standard_normal((n, 1)).astype("float32"))


def _trained_model():
    model = _model()
    model.compile(optimizer="adam", loss="mse")
    x, y = _data()
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    return model


def test_get_config_is_complete_and_round_trips():
    layer = keras_sn.SpectralNormalization(
        keras.layers.Dense(3), power_iterations=3, epsilon=1e-9, axis=(-1,),
        weight_name="kernel", warmup_iterations=7, name="sn",
    )
    config = layer.get_config()
    for key, value in [("power_iterations", 3), ("epsilon", 1e-9),
                       ("axis", (-1,)), ("weight_name", "kernel"),
                       ("warmup_iterations", 7), ("name", "sn")]:
        assert config[key] == value
    json.dumps(config)  # JSON-serializable
    clone = keras_sn.SpectralNormalization.from_config(config)
    assert clone.get_config() == config
    assert isinstance(clone.layer, keras.layers.Dense)


def test_serialize_round_trip_without_custom_objects():
    layer = keras_sn.SpectralNormalization(
        keras.layers.SeparableConv2D(3, 2), weight_name=["depthwise_kernel",
                                                          "pointwise_kernel"]
    )
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == "keras_sn>SpectralNormalization"
    restored = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(serialized))
    )
    assert restored.get_config() == layer.get_config()


def test_keras_file_restores_state_outputs_and_training_continues(tmp_path):
    model = _trained_model()
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)  # no custom_objects
    for original, restored in zip(model.weights, loaded.weights):
        assert original.name == restored.name
        np.testing.assert_array_equal(original.numpy(), restored.numpy())
    x, y = _data()
    np.testing.assert_array_equal(model.predict(x, verbose=0),
                                  loaded.predict(x, verbose=0))
    u = loaded.layers[0].vector_u.numpy().copy()
    loaded.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert not np.array_equal(loaded.layers[0].vector_u.numpy(), u)


def test_weights_h5_round_trip(tmp_path):
    model = _trained_model()
    path = str(tmp_path / "model.weights.h5")
    model.save_weights(path)
    other = _model()
    other.load_weights(path)
    for original, restored in zip(model.weights, other.weights):
        np.testing.assert_array_equal(original.numpy(), restored.numpy())
    x, _ = _data()
    np.testing.assert_array_equal(to_numpy(model(x)), to_numpy(other(x)))


SAVED_MODEL_KINDS = ["export", "tf_saved_model_save"]
_RELOAD = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    directory = sys.argv[1]
    x = np.load(directory + "/x.npy")
    for kind in sys.argv[2:]:
        loaded = tf.saved_model.load(f"{directory}/{kind}")
        if kind == "export":
            y = loaded.serve(tf.constant(x))
        else:
            signature = loaded.signatures["serving_default"]
            y = list(signature(tf.constant(x)).values())[0]
        np.save(f"{directory}/{kind}.npy", np.asarray(y))
""")


@pytest.fixture(scope="module")
def saved_models_reloaded(tmp_path_factory):
    """The trained model's outputs, and each SavedModel's outputs after a
    reload in one fresh interpreter that never imports keras_sn (the
    SavedModels must stand on their own)."""
    import tensorflow as tf

    directory = tmp_path_factory.mktemp("saved_models")
    model = _trained_model()
    x, _ = _data()
    np.save(directory / "x.npy", x)
    model.export(str(directory / "export"))
    tf.saved_model.save(model, str(directory / "tf_saved_model_save"))
    expected = np.asarray(model(x, training=False))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run(
        [sys.executable, "-c", _RELOAD, str(directory), *SAVED_MODEL_KINDS],
        check=True, env=env, timeout=300,
    )
    return expected, {kind: np.load(directory / f"{kind}.npy")
                      for kind in SAVED_MODEL_KINDS}


@tensorflow_only
@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("kind", SAVED_MODEL_KINDS)
def test_saved_model_reloads_in_fresh_process_with_identical_outputs(
    saved_models_reloaded, kind
):
    expected, reloaded = saved_models_reloaded
    np.testing.assert_allclose(reloaded[kind], expected, rtol=1e-6, atol=1e-7)
