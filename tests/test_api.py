"""The public API is small and explicit."""

import re

import pytest

import keras_sn

pytestmark = pytest.mark.core


def test_all_is_pinned():
    assert sorted(keras_sn.__all__) == sorted(
        ["SpectralNormalization", "WeightNormalization", "apply", "callbacks",
         "from_builtin", "report",
         "spectral_norm", "strip", "weights", "wrapped_layers",
         "__version__"]
    )
    for name in keras_sn.__all__:
        assert hasattr(keras_sn, name)


def test_public_tools_are_the_documented_objects():
    assert keras_sn.callbacks.SigmaLogger.__module__ == "keras_sn.callbacks"
    for name in ["apply", "strip", "report", "spectral_norm", "from_builtin"]:
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


def _public_use_violations(text):
    """Names of keras_sn that `text` uses beyond the public API."""
    import re

    public = set(keras_sn.__all__) - {"__version__"}
    bad = set()
    for name in re.findall(r"\bkeras_sn\.([A-Za-z_]\w*)", text):
        if name not in public and name != "__version__":
            bad.add(f"keras_sn.{name}")
    for module, names in re.findall(
        r"^\s*from (keras_sn[\w.]*) import (\([\w,\s]+\)|[\w, ]+)", text,
        re.M,
    ):
        if module not in ("keras_sn", "keras_sn.callbacks", "keras_sn.weights"):
            bad.add(module)
        elif module == "keras_sn":
            bad.update(
                f"keras_sn.{n.strip()}" for n in names.strip("()").split(",")
                if n.strip() and n.strip() not in public
            )
    return bad


def test_the_public_use_check_can_fail():
    assert _public_use_violations(
        "import keras_sn\nkeras_sn._src.lanczos\n"
        "from keras_sn._src import report\nfrom keras_sn import _compat\n"
        "from keras_sn import (\n    strip,\n    model_tools,\n)\n"
    ) == {"keras_sn._src", "keras_sn._compat", "keras_sn.model_tools"}
    assert _public_use_violations("keras_sn.strip(model)") == set()


def test_examples_benchmarks_and_docs_use_only_the_public_api():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    files = [root / "README.md"]
    for folder in ("examples", "benchmarks", "docs"):
        files += sorted((root / folder).rglob("*.py"))
        files += sorted((root / folder).rglob("*.md"))
        files += sorted((root / folder).rglob("*.sh"))
    offenders = {
        str(path.relative_to(root)): sorted(bad)
        for path in files
        if (bad := _public_use_violations(path.read_text()))
    }
    assert offenders == {}
