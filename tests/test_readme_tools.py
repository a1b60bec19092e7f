"""The README's Lipschitz-tools snippets run as written and print no False."""

import contextlib
import io
import pathlib
import re

import pytest

from backends import tensorflow_only

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _snippets():
    text = README.read_text()
    section = text[text.index("## Lipschitz tools"):text.index("## Citing")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


SNIPPETS = _snippets()


def test_every_tool_has_a_snippet():
    assert len(SNIPPETS) == 6
    joined = "\n".join(SNIPPETS)
    for name in ["target_norm=", "shrink_only=", 'method="operator"',
                 "keras_sn.spectral_norm(", "keras_sn.apply(",
                 "keras_sn.strip(", "SigmaLogger(", "keras_sn.report("]:
        assert name in joined, name


@tensorflow_only  # the README is written for TensorFlow (np.allclose on
# outputs, SavedModel export); the tools themselves are tested on all three.
@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_snippet_runs(index):
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(SNIPPETS[index], f"README snippet {index}", "exec"), {})
    assert "False" not in output.getvalue()
