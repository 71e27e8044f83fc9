"""Exclusive locks that a dead process does not keep: `flock` on a file holding who has it.

    with locks.hold(path, "trainer"):  # raises LockHeldError naming the holder
        ...

The kernel releases the lock when its process dies (SIGKILL included); the file is removed
when the holder releases it. After taking the lock the holder checks that the file at `path`
is still the one it locked, so a file removed by a releasing holder is never shared.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from damono_jax.errors import LockHeldError


def _holder_text(path: Path) -> str:
    try:
        holder = json.loads(path.read_text())
        return (f"pid {holder['pid']} on {holder['host']} since {holder['since']}: "
                f"{holder['command']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its name yet"


@contextlib.contextmanager
def hold(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Holds the exclusive lock `path` (created if needed) for the block.

    Raises `LockHeldError` (`another <what> holds <path> (pid ... on ... since ...: command)`)
    at once when a live process holds it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise LockHeldError(f"another {what} holds {path} ({_holder_text(path)})") from None
        try:
            same_file = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(descriptor)  # the previous holder removed it meanwhile: lock the new one
    try:
        record = {
            "pid": os.getpid(), "host": socket.gethostname(),
            "since": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(record).encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(descriptor)
