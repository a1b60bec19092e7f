"""The README's two commands are the ones the project runs."""

import pathlib
import re

import pytest

pytestmark = pytest.mark.core

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _bash_blocks(path="README.md"):
    readme = (ROOT / path).read_text()
    return re.findall(r"```bash\n([^\n]*)\n```", readme)


def test_ci_runs_the_readme_test_command():
    commands = [c for c in _bash_blocks() if "tools/test.sh" in c]
    assert commands == ["bash tools/test.sh"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^bash tools/test\.sh$", ci, re.M)


def test_the_readme_main_command_runs_the_example_with_a_backend():
    commands = [c for c in _bash_blocks() if "examples/dcgan.py" in c]
    assert len(commands) == 1
    command = commands[0]
    assert command.startswith("python3 -m venv .venv && ")
    # TensorFlow is an extra now: the main job must install it.
    assert re.search(r'-e "\.\[[^"]*tensorflow[^"]*\]"', command)


def test_examples_readme_repeats_the_main_command_exactly():
    (main,) = [c for c in _bash_blocks() if "examples/dcgan.py" in c]
    assert main in _bash_blocks("examples/README.md")


def test_readme_stays_a_short_pitch():
    # Issue 16: README.md at most 12 KB; the guides and tables live in docs/.
    size = len((ROOT / "README.md").read_bytes())
    assert size <= 12_000, (
        f"README.md is {size} bytes, over the 12 KB it must stay under; "
        "move the details into docs/ and link them.")


def _section(text, title):
    """The body of the `## title` section of a Markdown text."""
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_readme_gives_the_distributed_recipes_and_the_gpu_status():
    # Issue 15: the README's "Distributed" section names each backend's
    # engine, and the GPU table is either there or said to be pending.
    readme = (ROOT / "README.md").read_text()
    distributed = _section(readme, "Distributed")
    for engine in ("MirroredStrategy", "keras.distribution.DataParallel",
                   "DistributedDataParallel"):
        assert engine in distributed
    performance = _section(readme, "Performance")
    assert "GPU: pending" in performance or "GPU (" in performance
