"""Griffe extension: show docstring doctests (`>>>` lines) as code blocks.

The package's docstrings follow Keras' layout, where the `>>>` lines of an
`Example:` are not indented under it; Markdown would otherwise run them into
the surrounding paragraph (and read `['a']` as a link). Each run of
non-blank lines that starts with `>>>` becomes a fenced `pycon` block. Used by
`mkdocs.yml` (mkdocstrings' `extensions`); the docstrings are not changed.
"""

import griffe


def fence_doctests(text):
    out, inside = [], False
    for line in text.splitlines():
        stripped = line.lstrip()
        if not inside and stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
            inside = True
        elif inside and not stripped:
            out.append(f"{indent}```")
            inside = False
        out.append(line)
    if inside:
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    def on_object(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
