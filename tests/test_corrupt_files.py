"""Edited and damaged `.keras` files: loud, specific errors and no leftovers.

A `.keras` file is a zip of `metadata.json`, `config.json` and
`model.weights.h5`. Keras 3.15 passes a `ValueError` raised by a layer's
`from_config`/`__init__` through unchanged (it wraps only `TypeError`s), so
a config edited to an invalid value fails with our message. After every
failed load, the global state Keras keeps for deserialization is unchanged
and the intact file still loads to the same weights (u and v included) and
outputs.
"""

import json
import zipfile

import keras
import numpy as np
import pytest
from keras.src.saving import serialization_lib  # in_safe_mode(): no public API

import keras_sn
from backends import to_numpy

REGISTERED_NAME = "keras_sn>SpectralNormalization"


def _sequential():
    return keras.Sequential([
        keras.Input((6,)),
        keras_sn.SpectralNormalization(keras.layers.Dense(4), name="sn"),
        keras.layers.Dense(1),
    ])


def _functional():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(5)(inputs)
    outputs = keras_sn.SpectralNormalization(keras.layers.Dense(4), name="sn")(
        hidden)
    return keras.Model(inputs, outputs)


MODELS = {"sequential": _sequential, "functional": _functional}
X = np.random.default_rng(0).standard_normal((8, 6)).astype("float32")


@pytest.fixture(scope="module", params=sorted(MODELS))
def saved(request, tmp_path_factory):
    """A trained model (optimizer built) and its intact `.keras` file."""
    keras.utils.set_random_seed(0)
    model = MODELS[request.param]()
    model.compile(optimizer="adam", loss="mse")
    y = np.zeros(model(X).shape, "float32")
    model.fit(X, y, batch_size=4, epochs=1, verbose=0)
    path = tmp_path_factory.mktemp(request.param) / "good.keras"
    model.save(path)
    return model, path


def _rewrite(source, target, member, transform):
    """Copies the zip `source` to `target` with `member` transformed.

    `transform(bytes)` returns the new bytes, or None to drop the member.
    """
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == member:
                data = transform(data)
            if data is not None:
                zout.writestr(item, data)


def _edit_wrapper_config(source, target, key, value):
    def edit(node):
        if isinstance(node, dict):
            if node.get("registered_name") == REGISTERED_NAME:
                node["config"][key] = value
                return 1
            return sum(edit(v) for v in node.values())
        if isinstance(node, list):
            return sum(edit(v) for v in node)
        return 0

    def transform(data):
        config = json.loads(data)
        assert edit(config) == 1  # exactly the one wrapper
        # json writes inf as `Infinity`, which json (and Keras) reads back.
        return json.dumps(config).encode()

    _rewrite(source, target, "config.json", transform)


class _GlobalState:
    """What deserialization may register or leave behind, process-wide."""

    def __init__(self):
        self.custom_objects = dict(keras.saving.get_custom_objects())
        self.policy = keras.config.dtype_policy().name

    def assert_unchanged(self):
        assert dict(keras.saving.get_custom_objects()) == self.custom_objects
        assert (keras.saving.get_registered_object(REGISTERED_NAME)
                is keras_sn.SpectralNormalization)
        assert keras.config.dtype_policy().name == self.policy
        assert serialization_lib.in_safe_mode() is None  # scope exited


def _assert_intact_file_still_loads(model, path):
    loaded = keras.models.load_model(path)
    # By position and name: the wrapped layer's paths differ after a load
    # ("sn/dense_1/kernel" when built by the wrapper, "dense_1/kernel" when
    # Keras builds it from its own build_config while loading).
    assert [v.name for v in loaded.weights] == [v.name for v in model.weights]
    for original, restored in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(original.numpy(), restored.numpy())
    np.testing.assert_array_equal(to_numpy(loaded(X)), to_numpy(model(X)))


# (key, edited value, our message). Every one is a value the constructor or
# the build rejects; the message is matched as the user sees it.
INVALID_EDITS = [
    ("power_iterations", -1,
     r"`power_iterations` must be a positive integer\. "
     r"Received: power_iterations=-1"),
    ("power_iterations", 0, r"Received: power_iterations=0"),
    ("power_iterations", 1.5, r"Received: power_iterations=1\.5"),
    ("power_iterations", "2", r"Received: power_iterations='2'"),
    ("power_iterations", True, r"Received: power_iterations=True"),
    ("power_iterations", None, r"Received: power_iterations=None"),
    ("epsilon", -1e-12, r"`epsilon` must be a positive float.*"
                        r"Received: epsilon=-1e-12"),
    ("epsilon", 0, r"Received: epsilon=0"),
    ("epsilon", "tiny", r"Received: epsilon='tiny'"),
    ("epsilon", float("inf"), r"Received: epsilon=inf"),
    ("epsilon", 1e-40, r"Received: epsilon=1e-40"),
    ("warmup_iterations", -1,
     r"`warmup_iterations` must be an integer >= 0\. "
     r"Received: warmup_iterations=-1"),
    ("axis", "last", r"`axis` must be None, an int.*Received: axis='last'"),
    ("axis", 7, r"`axis` is out of range .*rank 2\. Received: axis=7"),
    ("axis", [1, -1], r"`axis` names the same kernel axis twice"),
    ("weight_name", "kernal",
     r"has no weight named 'kernal'\. Received: weight_name='kernal'"),
    ("weight_name", 5, r"`weight_name` must be None.*Received: weight_name=5"),
    ("layer", None, r"`layer` must be a `keras\.layers\.Layer` instance.*"
                    r"Received: layer=None"),
]


@pytest.mark.parametrize(
    "key, value, message", INVALID_EDITS,
    ids=[f"{k}={v!r}" for k, v, _ in INVALID_EDITS],
)
def test_config_edited_to_invalid_value_fails_with_our_value_error(
    saved, tmp_path, key, value, message
):
    model, good = saved
    edited = tmp_path / "edited.keras"
    _edit_wrapper_config(good, edited, key, value)
    state = _GlobalState()
    with pytest.raises(ValueError, match=message) as error:
        keras.models.load_model(edited)  # safe_mode=True, no custom_objects
    assert type(error.value) is ValueError  # not wrapped by Keras
    state.assert_unchanged()


def test_config_edited_to_another_valid_axis_fails_on_the_saved_u(
    saved, tmp_path
):
    """A consistent-looking edit is caught: u's shape encodes the axis."""
    model, good = saved
    edited = tmp_path / "edited.keras"
    _edit_wrapper_config(good, edited, "axis", 0)  # Dense kernel (in, out)
    state = _GlobalState()
    with pytest.raises(ValueError, match=r"vector_u"):
        keras.models.load_model(edited)
    state.assert_unchanged()
    _assert_intact_file_still_loads(model, good)


def _cut(fraction):
    def damage(good, target):
        data = good.read_bytes()
        target.write_bytes(data[: int(len(data) * fraction)])
    return damage


def _damage_member(member, transform):
    def damage(good, target):
        _rewrite(good, target, member, transform)
    return damage


def _flip_bytes_inside_weights(good, target):
    # Every bit of 16 bytes flipped: the bytes change whatever they were
    # (zeroing them could leave zeros unchanged and the CRC intact).
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as z:
        info = z.getinfo("model.weights.h5")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    middle = start + info.compress_size // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    target.write_bytes(bytes(data))


# (damage, the error Keras 3.15 raises, its message). The truncated zip's
# message is Keras' own and says "File not found" for a file that exists;
# it does name the path and the expected format.
DAMAGES = {
    "zip_cut_to_10_percent": (_cut(0.1), ValueError,
                              r"accessible `\.keras` zip file"),
    "zip_cut_to_50_percent": (_cut(0.5), ValueError,
                              r"accessible `\.keras` zip file"),
    "zip_missing_last_byte": (_cut(0.99999), ValueError,
                              r"accessible `\.keras` zip file"),
    "weights_member_truncated": (
        _damage_member("model.weights.h5", lambda d: d[: len(d) // 2]),
        OSError, r"truncated file"),
    "config_member_truncated": (
        _damage_member("config.json", lambda d: d[: len(d) // 2]),
        json.JSONDecodeError, r"line 1 column"),
    "weights_member_missing": (
        _damage_member("model.weights.h5", lambda d: None),
        ValueError, r"Expected a model\.weights\.h5"),
    "16_bytes_flipped_inside_weights": (
        _flip_bytes_inside_weights, zipfile.BadZipFile,
        r"Bad CRC-32 for file 'model\.weights\.h5'"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_file_fails_clearly_and_leaves_nothing_registered(
    saved, tmp_path, damage
):
    model, good = saved
    make_damage, error_type, message = DAMAGES[damage]
    damaged = tmp_path / "damaged.keras"
    make_damage(good, damaged)
    state = _GlobalState()
    with pytest.raises(error_type, match=message) as error:
        keras.models.load_model(damaged)
    if damage.startswith("zip_"):
        assert str(damaged) in str(error.value)  # names the file
    state.assert_unchanged()
    _assert_intact_file_still_loads(model, good)
