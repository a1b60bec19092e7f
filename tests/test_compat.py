"""Version shims live in one module; other versions fail early and clearly."""

import pathlib
import re
import sys

import pytest

import keras_sn
from keras_sn import _compat

pytestmark = pytest.mark.core

PACKAGE = pathlib.Path(keras_sn.__file__).resolve().parent
PRIVATE_IMPORT = re.compile(
    r"^\s*(from|import) (keras\.src|tensorflow\.python|tensorflow\.core)\b",
    re.M,
)
PRIVATE_NAME = re.compile(
    r"[\"'](keras\.src|tensorflow\.python|tensorflow\.core)[\w.]*[\"']"
)


def test_private_keras_and_tensorflow_modules_are_reached_only_in_compat():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_compat.py":
            continue
        text = path.read_text()
        if PRIVATE_IMPORT.search(text) or PRIVATE_NAME.search(text):
            offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []
    # ... and the shim module itself does reach them (the check can fail).
    assert PRIVATE_NAME.search((PACKAGE / "_compat.py").read_text())


@pytest.mark.parametrize("version", ["3.8.0", "3.9.2", "3.15.1", "3.20.0rc1"])
def test_supported_keras_versions_pass_the_import_check(version):
    _compat.check_keras_version(version)


@pytest.mark.parametrize("version", ["2.15.0", "3.0.5", "3.3.3", "3.7.0", "4.0.0"])
def test_unsupported_keras_versions_fail_at_import_naming_the_range(version):
    with pytest.raises(ImportError, match=r"keras>=3\.8,<4") as error:
        _compat.check_keras_version(version)
    assert f"keras=={version}" in str(error.value)


def test_a_tensorflow_only_feature_without_tensorflow_names_the_extra(
    monkeypatch, tmp_path
):
    # `None` in sys.modules makes `import tensorflow` raise ImportError, as
    # on a machine with only JAX or PyTorch.
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(ImportError, match=r"keras-sn\[tensorflow\]"):
        _compat.require_tensorflow("`SigmaLogger(log_dir=...)`")
    logger = keras_sn.callbacks.SigmaLogger(log_dir=str(tmp_path))
    with pytest.raises(ImportError, match=r"SigmaLogger\(log_dir=\.\.\.\).*"
                       r"keras-sn\[tensorflow\]"):
        logger._write({"sigma/x": 1.0}, 0)


def test_the_stateless_scope_getter_is_found_on_this_keras():
    # The fallback (None) would silently lose JAX's traced values; on the
    # versions CI runs, the real getter must be found.
    import keras

    assert _compat.get_stateless_scope() is None
    with keras.StatelessScope() as scope:
        assert _compat.get_stateless_scope() is scope
