"""What keeps one build from harming `--data_dir`: a lock, scoped cleanup, leftovers, signals.

`BuildGuard(data_dir, name, config)` is used as a context manager around one build:

- it holds `data_dir/.<name>[.<config>].build.lock` (`damono_jax.locks`), so a second build
  of the same dataset stops with "another build holds ..." while builds of other datasets
  go on;
- on entry it removes what a killed build of this dataset left behind (TFDS's `incomplete.*`
  folders and files under the dataset's own folder);
- on any exception, SIGTERM included (turned into `BuildInterrupted`), it removes only what
  appeared under the dataset's own folders meanwhile, and the folders it created (`data_dir`
  and its parents, `data_dir/<name>`, `downloads/`) once they are empty: never another
  dataset, nor what another build wrote at the same time.

`read_record` / `write_record` keep `damono_build.json` beside a built version: how it was
built (`max_examples_per_split`), so a trial build is never taken for a full one.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

from absl import logging

from damono_jax import files, locks

BUILD_RECORD = "damono_build.json"
INCOMPLETE_PREFIX = "incomplete."  # TFDS: <config dir>/incomplete.XXXXXX_<version>/
INCOMPLETE_SUFFIX = ".incomplete"  # and files written as <name>.incomplete<random>


class BuildInterrupted(BaseException):
    """SIGTERM arrived during a build (a BaseException, like KeyboardInterrupt)."""


def _missing_chain(path: Path) -> list[Path]:
    """The folders from `path` up that do not exist yet, outermost first."""
    missing = []
    while not path.exists():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    return list(reversed(missing))


def _snapshot(root: Path) -> set[Path]:
    """Every path under `root` (not following symlinks); empty if `root` is missing."""
    paths = set()
    for directory, subdirectories, filenames in os.walk(root):
        for entry in subdirectories + filenames:
            paths.add(Path(directory) / entry)
    return paths


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _remove_new_paths(root: Path, before: set[Path]) -> None:
    """Removes everything under `root` that is not in `before`."""
    for directory, subdirectories, filenames in os.walk(root):
        for entry in list(subdirectories):
            path = Path(directory) / entry
            if path not in before:
                _remove(path)
                subdirectories.remove(entry)
        for entry in filenames:
            path = Path(directory) / entry
            if path not in before:
                path.unlink(missing_ok=True)


def _remove_if_empty(paths: list[Path]) -> None:
    """`rmdir` of each path that exists and is empty, innermost first."""
    for path in sorted(paths, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(FileNotFoundError, OSError):
            path.rmdir()


class BuildGuard:
    """Lock, leftovers and failure cleanup of one build (see the module docstring)."""

    def __init__(self, data_dir: str | os.PathLike, name: str, config: str | None):
        self.data_dir = Path(data_dir).absolute()
        # TFDS's folder of this dataset: data_dir/name/config/version, or data_dir/name/version.
        self.dataset_dir = self.data_dir / name / config if config else self.data_dir / name
        # TFDS also writes data_dir/name/.config/metadata.json (the builder configs).
        self._scopes = [self.dataset_dir, self.data_dir / name / ".config"]
        label = name if not config else f"{name}.{config}"
        self.lock_path = self.data_dir / f".{label}.build.lock"
        self._created = _missing_chain(self.data_dir)
        for path in (self.data_dir / name, *self._scopes, self.data_dir / "downloads",
                     self.data_dir / "downloads" / "extracted"):
            if not path.exists() and path not in self._created:
                self._created.append(path)
        self._before: dict[Path, set[Path]] = {}
        self._lock: contextlib.AbstractContextManager | None = None
        self._previous_handler: Any = None

    def __enter__(self) -> BuildGuard:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = locks.hold(self.lock_path, "build of this dataset")
        try:
            self._lock.__enter__()
        except BaseException:
            self._lock = None
            _remove_if_empty(self._created)
            raise
        self._remove_leftovers()
        self._before = {scope: _snapshot(scope) for scope in self._scopes}
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, _raise_interrupted)
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        try:
            if self._previous_handler is not None:
                signal.signal(signal.SIGTERM, self._previous_handler)
            if exc_type is not None:
                for scope, before in self._before.items():
                    _remove_new_paths(scope, before)
        finally:
            if self._lock is not None:
                self._lock.__exit__(None, None, None)
            _remove_if_empty(self._created)  # data_dir itself too, if this build made it
        return False

    def _remove_leftovers(self) -> None:
        """What a build of this dataset killed with SIGKILL left: TFDS's incomplete paths."""
        if not self.dataset_dir.is_dir():
            return
        for path in self.dataset_dir.iterdir():
            if path.name.startswith(INCOMPLETE_PREFIX) or INCOMPLETE_SUFFIX in path.name:
                logging.warning("removing %s, left by an earlier build that did not finish",
                                path)
                _remove(path)


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise BuildInterrupted(signal.Signals(signum).name)


def read_record(version_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The `damono_build.json` of a built version, or None (built before records, or not here)."""
    path = Path(version_dir) / BUILD_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def write_record(version_dir: str | os.PathLike, *, max_examples_per_split: int | None,
                 manual_dir: str | None) -> None:
    """Records how the version in `version_dir` was built."""
    files.atomic_write_json(Path(version_dir) / BUILD_RECORD, {
        "max_examples_per_split": max_examples_per_split,
        "manual_dir": manual_dir,
        "built": datetime.datetime.now().isoformat(timespec="seconds"),
    })
