"""The user-facing error classes, on the lowest layer so that every module can raise them
and `damono_jax.cli` can classify them by type without importing the modules that raise
them (cli importing predict made an import cycle, and under `python -m damono_jax.predict`
the class cli checked was not the one `__main__` raised).

Each message is one line naming the file, flag or key at fault; `cli` prints it after
`error: ` and exits with status 1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator


def chain(error: BaseException | None) -> Iterator[BaseException]:
    """`error`, then the errors it was raised from or during, newest first."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


class DataError(ValueError):
    """A problem with an input file, reported with the file's path."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DiskFullError(DataError):
    """A write failed because its file system is full: names what was being written, and
    (in `after`) what is left of it."""

    def __init__(self, path: str | os.PathLike, what: str, after: str = ""):
        super().__init__(path, f"cannot write {what}: no space left on device{after}")


class PredictError(ValueError):
    """A bad input or flag for prediction."""


class ExportError(ValueError):
    """An export directory is missing, incomplete or inconsistent."""


class CheckpointError(RuntimeError):
    """A checkpoint exists but does not restore (its message is one line naming it)."""


class LockHeldError(RuntimeError):
    """Another live process holds the lock; the message names it."""


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or Inf; training stopped without saving that state."""
