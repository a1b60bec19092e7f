"""The ```python blocks of README.md and docs/*.md, and their markers.

A comment on the line before a block marks it:

- `<!-- snippet: slow -->`: its test carries the `slow` marker;
- `<!-- snippet: requires MODULE -->`: skipped when MODULE cannot be
  imported (TF Addons, which does not run on Keras 3; torch);
- `<!-- snippet: jax-2-devices -->`, `<!-- snippet: torchrun-2 -->`: a
  scale-out recipe, run by tests/test_scale_out.py in the processes of its
  own scale-out check (two virtual JAX devices; two gloo ranks).

Blocks indented under a content tab (`=== "..."`) are collected too.
"""

import pathlib
import re
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
SCALE_OUT_MARKERS = ("jax-2-devices", "torchrun-2")
FENCE = re.compile(r"^( *)```python\s*$")
MARKER = re.compile(r"<!--\s*snippet:\s*(slow|requires\s+[\w.]+|"
                    + "|".join(SCALE_OUT_MARKERS) + r")\s*-->")


def blocks(path):
    """`(code, marker, line)` for each ```python block of `path`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
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
        found.append((code, marker.group(1) if marker else None, start + 1))
        i += 1
    return found


def marked(marker):
    """`(file name, line, code)` of every block marked `marker`."""
    return [(path.relative_to(ROOT).as_posix(), line, code)
            for path in FILES for code, mark, line in blocks(path)
            if mark == marker]
