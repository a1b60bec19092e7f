"""The README's test command is the one CI runs."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n([^\n]*)\n```", readme)
    test_commands = [c for c in commands if "tools/test.sh" in c]
    assert test_commands == ["bash tools/test.sh"]
    if not (ROOT / "tools" / "test.sh").exists():
        pytest.skip("tools/test.sh comes with the packaging change (lead)")
    assert "tools/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_readme_main_command_runs_the_example():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(python3 -m venv[^\n]*)\n```", readme)
    assert len(commands) == 1 and commands[0].endswith("examples/dcgan.py")
