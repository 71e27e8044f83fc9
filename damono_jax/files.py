"""Writing files so that a reader never sees half of one: write a hidden sibling, then rename.

A crash or an error during the write leaves the previous file (or none) and no temporary.
A full file system ends the write in `DiskFullError`, naming the file (`naming_a_full_disk`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from damono_jax.errors import DiskFullError, chain

# How the libraries that write for the project say "ENOSPC" in a message: TensorFlow's file
# system ("...; No space left on device") and TensorStore ("[os_error_code='28']").
_DISK_FULL_TEXT = ("No space left on device", f"os_error_code='{errno.ENOSPC}'")


def says_disk_full(text: str) -> bool:
    """Whether a library's message says that a write found its file system full."""
    return any(phrase in text for phrase in _DISK_FULL_TEXT)


def is_disk_full(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from, says the file system is full."""
    return any(isinstance(link, DiskFullError)
               or (isinstance(link, OSError) and link.errno == errno.ENOSPC)
               or says_disk_full(str(link)) for link in chain(error))


@contextmanager
def naming_a_full_disk(path: str | os.PathLike, what: str, after: str = "") -> Iterator[None]:
    """Turns a full file system inside the block into `DiskFullError(path, what, after)`.

    When the first write that failed already named itself (a `DiskFullError` the error was
    raised from or during, e.g. a flush on the way out that failed too), that one is raised.
    """
    try:
        yield
    except Exception as error:
        if not is_disk_full(error):
            raise
        named = next((link for link in chain(error) if isinstance(link, DiskFullError)), None)
        if named is error:
            raise
        if named is not None:
            raise named  # noqa: B904 (its cause is the library's error; `error` came after)
        raise DiskFullError(path, what, after) from error


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
    except BaseException as error:
        # Some writers report a full disk only as a short write (numpy: "4000 requested and
        # 2016 written"): the file system with no block left says what happened.
        full = is_disk_full(error) or (isinstance(error, OSError) and _no_block_left(path))
        temporary.unlink(missing_ok=True)
        if full:
            raise DiskFullError(path, "it") from error
        raise


def _no_block_left(path: Path) -> bool:
    """Whether the file system that holds `path`'s folder has no free block."""
    try:
        return os.statvfs(path.parent).f_bavail == 0
    except OSError:
        return False


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
