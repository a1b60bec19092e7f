"""Every ```python block of README.md and docs/*.md runs as written.

Each block is one test, `<file>:<n>` (the n-th Python block of the file,
from 1), run standalone in a fresh namespace; its printed output must not
contain `False` (the snippets print their checks). tests/snippets.py reads
the blocks and their markers (slow, requires MODULE). The snippets are
written for the TensorFlow backend (`tf.function`, SavedModel, TFLite); the
features they show are tested on every backend elsewhere.

The two scale-out recipes (JAX DataParallel, torch DDP) run in
tests/test_scale_out.py instead, inside the processes of its own scale-out
check: starting their processes again here cost ~70 s of the CI budget.
"""

import contextlib
import importlib.util
import io
import re

import pytest

import snippets
from backends import tensorflow_only

# The docs are checked once, in the integration tier (TensorFlow, latest).
pytestmark = pytest.mark.integration

def _cases():
    cases = []
    for path in snippets.FILES:
        name = path.relative_to(snippets.ROOT).as_posix()
        for n, (code, marker, line) in enumerate(snippets.blocks(path), start=1):
            if marker in snippets.SCALE_OUT_MARKERS:
                continue  # run by tests/test_scale_out.py
            marks = [pytest.mark.slow] if marker == "slow" else []
            cases.append(pytest.param(name, line, code, marker, id=f"{name}:{n}", marks=marks))
    return cases


CASES = _cases()


def test_every_python_block_is_collected():
    for path in snippets.FILES:
        text = path.read_text(encoding="utf-8")
        fences = len(re.findall(r"^ *```python\s*$", text, flags=re.M))
        assert fences == len(snippets.blocks(path)), path.name
    # The rest run in tests/test_scale_out.py, which runs one per marker.
    for marker in snippets.SCALE_OUT_MARKERS:
        assert len(snippets.marked(marker)) == 1, marker
    assert len(CASES) + len(snippets.SCALE_OUT_MARKERS) == sum(
        len(snippets.blocks(path)) for path in snippets.FILES)
    assert len(CASES) >= 20
    assert {case.values[0] for case in CASES} >= {
        "README.md", "docs/getting-started.md", "docs/gans.md",
        "docs/lipschitz.md", "docs/saving.md", "docs/migration.md"}


def test_the_main_tools_appear_in_a_snippet():
    joined = "\n".join(case.values[2] for case in CASES)
    for name in ["target_norm=", "shrink_only=", 'method="operator"',
                 "keras_sn.spectral_norm(", "keras_sn.apply(", "keras_sn.strip(",
                 "keras_sn.report(", "keras_sn.from_builtin(", "reestimate("]:
        assert name in joined, name


@tensorflow_only
@pytest.mark.parametrize("name, line, code, marker", CASES)
def test_snippet_runs(name, line, code, marker, tmp_path, monkeypatch):
    if marker and marker.startswith("requires"):
        module = marker.split()[1]
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{name}:{line} needs {module}, which is not installed")
    monkeypatch.chdir(tmp_path)  # files a snippet writes stay in tmp_path
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(code, f"{name}:{line}", "exec"), {"__name__": "__snippet__"})
    assert "False" not in output.getvalue(), output.getvalue()

