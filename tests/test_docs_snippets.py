"""Every ```python block of README.md and docs/*.md runs as written.

Each block is one test, `<file>:<n>` (the n-th Python block of the file,
from 1), run standalone in a fresh namespace; its printed output must not
contain `False` (the snippets print their checks). A comment on the line
before a block marks it:

- `<!-- snippet: slow -->`: the test carries the `slow` marker;
- `<!-- snippet: requires MODULE -->`: skipped when MODULE cannot be
  imported (TF Addons, which does not run on Keras 3; torch).

Blocks indented under a content tab (`=== "..."`) are collected too. The
snippets are written for the TensorFlow backend (`tf.function`, SavedModel,
TFLite); the features they show are tested on every backend elsewhere.
"""

import contextlib
import importlib.util
import io
import pathlib
import re
import textwrap

import pytest

from backends import tensorflow_only

# The docs are checked once, in the integration tier (TensorFlow, latest).
pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^( *)```python\s*$")
MARKER = re.compile(
    r"<!--\s*snippet:\s*(slow|requires\s+([\w.]+)|jax-2-devices|torchrun-2)"
    r"\s*-->"
)


def _blocks(path):
    """`(code, marker)` for each ```python block of `path`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, start = match.group(1), i
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"{path.name}: unclosed block at line {start + 1}"
        previous = next((line for line in reversed(lines[:start]) if line.strip()), "")
        marker = MARKER.search(previous)
        code = textwrap.dedent("\n".join(body)) if indent else "\n".join(body)
        blocks.append((code, marker.group(1) if marker else None, start + 1))
        i += 1
    return blocks


def _cases():
    cases = []
    for path in FILES:
        name = path.relative_to(ROOT).as_posix()
        for n, (code, marker, line) in enumerate(_blocks(path), start=1):
            marks = [pytest.mark.slow] if marker == "slow" else []
            cases.append(pytest.param(name, line, code, marker, id=f"{name}:{n}", marks=marks))
    return cases


CASES = _cases()


def test_every_python_block_is_collected():
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        fences = len(re.findall(r"^ *```python\s*$", text, flags=re.M))
        assert fences == len(_blocks(path)), path.name
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
    if marker in ("jax-2-devices", "torchrun-2"):
        # Scale-out recipes run as their comments say: in a child process on
        # their backend (two virtual JAX devices, or two torchrun ranks on
        # 127.0.0.1 with a free port), bounded in time.
        output = _run_in_child(code, marker, tmp_path)
        assert "Traceback" not in output, output
        assert "False" not in output, output
        return
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(code, f"{name}:{line}", "exec"), {"__name__": "__snippet__"})
    assert "False" not in output.getvalue(), output.getvalue()


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_in_child(code, marker, tmp_path):
    import os
    import subprocess
    import sys

    script = tmp_path / "snippet.py"
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    if marker == "jax-2-devices":
        env.update(KERAS_BACKEND="jax",
                   XLA_FLAGS="--xla_force_host_platform_device_count=2")
        command = [sys.executable, str(script)]
    else:
        env.update(KERAS_BACKEND="torch", CUDA_VISIBLE_DEVICES="")
        command = [sys.executable, "-m", "torch.distributed.run",
                   "--nproc_per_node=2", "--master_addr=127.0.0.1",
                   f"--master_port={_free_port()}", str(script)]
    run = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout
