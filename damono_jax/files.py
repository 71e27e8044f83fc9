"""Writing files so that a reader never sees half of one: write a hidden sibling, then rename.

A crash or an error during the write leaves the previous file (or none) and no temporary.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Calls `write(temporary)` and renames the result onto `path`.

    The temporary is `.<name>.tmp<suffix>` beside `path`, so writers that pick the format
    from the suffix (PIL, matplotlib, numpy) write the right one.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to `path` atomically."""
    atomic_write(path, lambda temporary: temporary.write_text(text))


def atomic_write_json(path: str | os.PathLike, record: Any) -> None:
    """Writes `record` as indented, key-sorted JSON (with a final newline) atomically."""
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


@contextmanager
def atomic_directory(target: Path, overwrite: bool) -> Iterator[Path]:
    """Yields a temporary sibling of `target`, renamed onto `target` if the block succeeds."""
    target = Path(target).absolute()
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target}: exists and is not a directory")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target}: already exists (pass overwrite=True to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    temporary = target.parent / f".{target.name}.tmp-{token}"
    temporary.mkdir()
    try:
        yield temporary
        if target.exists():
            previous = target.parent / f".{target.name}.old-{token}"
            os.rename(target, previous)
            try:
                os.rename(temporary, target)
            except BaseException:
                os.rename(previous, target)  # put the old directory back
                raise
            shutil.rmtree(previous)
        else:
            os.rename(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
