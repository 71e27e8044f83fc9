"""Markdown output shared by the benchmarks and the experiment tools.

`write_markdown_section` lets a generated table live in a hand-edited document (README,
BENCHMARKS.md, docs/ablation_synthetic.md): only the text between its markers is replaced.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from damono_jax import files


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    for index, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(
                f"markdown_table: row {index} has {len(row)} cells, header {len(header)}"
            )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_markdown_section(path: str | os.PathLike[str], section_id: str, body: str) -> None:
    """Puts `body` between `<!-- section_id:begin -->` / `:end -->` markers in `path`.

    An existing section with the same id is replaced, anything else in the file is kept
    as is, and a missing file is created. The file is replaced atomically (temporary file
    + rename), so a crash never leaves it half-written.

    Raises:
      ValueError: if the file holds a begin marker without its end marker (or the reverse,
        or either twice): the file was edited by hand and must be fixed first.
    """
    path = Path(path)
    begin, end = f"<!-- {section_id}:begin -->", f"<!-- {section_id}:end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}\n"
    text = path.read_text() if path.exists() else ""
    begin_count, end_count = text.count(begin), text.count(end)
    if (begin_count, end_count) == (0, 0):
        separator = (
            "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
        )
        new_text = text + separator + block
    elif (begin_count, end_count) == (1, 1) and text.index(begin) < text.index(end):
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        new_text = head + block + ("\n" + tail if tail else "")
    else:
        raise ValueError(
            f"{path}: section markers for {section_id!r} are unbalanced "
            f"({begin_count} begin, {end_count} end); fix the file by hand"
        )
    files.atomic_write_text(path, new_text)
