"""The public API is small and explicit."""

import re

import keras_sn


def test_all_is_pinned():
    assert sorted(keras_sn.__all__) == sorted(
        ["SpectralNormalization", "WeightNormalization", "apply", "callbacks", "report",
         "spectral_norm", "strip", "weights", "wrapped_layers",
         "__version__"]
    )
    for name in keras_sn.__all__:
        assert hasattr(keras_sn, name)


def test_public_tools_are_the_documented_objects():
    assert keras_sn.callbacks.SigmaLogger.__module__ == "keras_sn.callbacks"
    for name in ["apply", "strip", "report", "spectral_norm"]:
        assert callable(getattr(keras_sn, name)), name


def test_version_is_pep440():
    assert re.fullmatch(r"\d+\.\d+\.\d+", keras_sn.__version__)


def test_weight_table_covers_the_documented_layer_types():
    import keras

    covered = {cls for row in keras_sn.weights.WEIGHT_TABLE
               for cls in row.classes}
    for name in ["Dense", "EinsumDense", "Conv1D", "Conv2D", "Conv3D",
                 "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
                 "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
                 "SeparableConv2D", "Embedding"]:
        assert getattr(keras.layers, name) in covered, name
