"""Preemption-safe training checkpoints with an Orbax `CheckpointManager`.

Layout: `WORKDIR/checkpoints/<step>/{state/, meta/}`. `state` is the full `TrainState` (params,
batch stats, optimiser state, step, RNG); `meta` is JSON with the step, the data-stream position
(the number of global batches consumed, which `input_pipeline.create_train_iterator(config,
start_step=...)` skips on resume) and the config. Orbax writes each step into a temporary
directory and renames it only once every file is on disk, so a process killed with SIGKILL at
any moment leaves either a complete checkpoint or a temporary directory that `latest_step()`
ignores; a half-written checkpoint is never restored. A save that fills the file system ends
in `DiskFullError` naming the step, and its temporary directory is removed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers

from damono_jax import files
from damono_jax.errors import CheckpointError, DiskFullError

CHECKPOINT_SUBDIR = "checkpoints"
UNRESTORABLE_SUBDIR = "checkpoints_unrestorable"


@contextlib.contextmanager
def _stderr_to_debug_log() -> Iterator[None]:
    """Sends what is written to file descriptor 2 meanwhile to the debug log."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            if text:
                logging.debug("stderr while restoring:\n%s", text)


@dataclass(frozen=True)
class RestoredCheckpoint:
    """A restored checkpoint: the train state and its JSON metadata."""

    step: int
    state: Any
    meta: dict[str, Any]


class TrainCheckpointer:
    """Saves and restores (state, meta) pairs under `workdir/checkpoints`, keeping the last N.

    Saves are asynchronous (Orbax writes in a background thread while training continues);
    `close()` waits for the last one. Every `save` call writes: the caller decides when.
    """

    def __init__(self, workdir: str, keep: int):
        self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_SUBDIR)
        options = ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.LatestN(keep),
            create=True,
            enable_async_checkpointing=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._in_flight: int | None = None  # the step of the asynchronous save under way
        self._closed = False

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None when there is none."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of all complete checkpoints, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Starts writing `state` and `meta` as checkpoint `step` (asynchronous, atomic).

        The previous save is finished first, so that its failure names its own step.
        """
        self.wait_until_finished()
        with self._naming_a_full_disk(step):
            saved = self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
                ),
                force=True,
            )
        if not saved:
            raise RuntimeError(f"{self.directory}: Orbax refused to save step {step}")
        self._in_flight = step

    def restore(self, step: int, abstract_state: Any) -> RestoredCheckpoint:
        """Restores checkpoint `step` into the shapes, dtypes and shardings of `abstract_state`.

        `abstract_state` is a tree of `jax.ShapeDtypeStruct` with shardings, e.g.
        `jax.tree.map(ocp.utils.to_shape_dtype_struct, freshly_initialised_state)`.
        """
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        return RestoredCheckpoint(step=step, state=restored.state, meta=dict(restored.meta))

    def restore_latest(self, abstract_state: Any, *, fall_back: bool = False
                       ) -> RestoredCheckpoint | None:
        """Restores the newest complete checkpoint, or returns None when there is none.

        A checkpoint that does not restore (a truncated or corrupt file) raises
        `CheckpointError` naming it in one line; with `fall_back` (training) it is moved to
        `WORKDIR/checkpoints_unrestorable/<step>`, the line is logged as a warning and the
        next older checkpoint is tried.
        """
        for step in sorted(self.all_steps(), reverse=True):
            try:
                with _stderr_to_debug_log():  # Orbax prints tracebacks of its reader threads
                    return self.restore(step, abstract_state)
            except Exception as error:  # Orbax and tensorstore raise many types
                line = _does_not_restore(self.directory, step, error)
                if not fall_back:
                    raise CheckpointError(line) from error
                moved = os.path.join(os.path.dirname(self.directory), UNRESTORABLE_SUBDIR,
                                     str(step))
                os.makedirs(os.path.dirname(moved), exist_ok=True)
                shutil.move(os.path.join(self.directory, str(step)), moved)
                self._manager.reload()
                logging.warning("%s; moved it to %s and trying the previous checkpoint",
                                line, moved)
        return None

    def wait_until_finished(self) -> None:
        """Blocks until the asynchronous save in flight (if any) is committed."""
        with self._naming_a_full_disk(self._in_flight):
            self._manager.wait_until_finished()
        self._in_flight = None

    def close(self) -> None:
        """Waits for pending saves and releases the manager's resources (once)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.wait_until_finished()
        finally:
            self._manager.close()

    @contextlib.contextmanager
    def _naming_a_full_disk(self, step: int | None) -> Iterator[None]:
        """A full file system during the save of `step`: its temporary directory is removed
        and `DiskFullError` names the step and the newest complete checkpoint."""
        try:
            yield
        except Exception as error:
            if not files.is_disk_full(error):
                raise
            self._in_flight = None
            for name in os.listdir(self.directory):
                if ".orbax-checkpoint-tmp" in name:
                    shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
            complete = sorted(int(name) for name in os.listdir(self.directory) if name.isdigit())
            after = (f"; the newest complete checkpoint is step {complete[-1]}" if complete
                     else "; no complete checkpoint is left")
            raise DiskFullError(os.path.join(self.directory, str(step)), "the checkpoint",
                                after) from error

    def __enter__(self) -> TrainCheckpointer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# TensorStore names the file it failed on as `local file "PATH"`, after a status code.
_TENSORSTORE_FILE = re.compile(r'local file "([^"]+)"')
_STATUS_CODE = re.compile(r"^([A-Z][A-Z_]+): ")


def _does_not_restore(directory: str, step: int, error: BaseException) -> str:
    """The one line naming a checkpoint that does not restore, and why: the file TensorStore
    could not read when it names one, else the error's first line, without the pybind11
    object reprs (`<bound method ...>`) TensorStore appends."""
    text = str(error).strip()
    files = [name for name in _TENSORSTORE_FILE.findall(text) if not name.endswith("/")]
    if files:
        code = _STATUS_CODE.match(text)
        return (f"{directory}/{step}: checkpoint does not restore: {files[-1]} is truncated or "
                f"corrupt ({code.group(1) if code else type(error).__name__})")
    reason = text.splitlines()[0].split(" <", 1)[0] if text else ""
    if len(reason) > 300:
        reason = reason[:300].rsplit(" ", 1)[0] + " ..."
    return f"{directory}/{step}: checkpoint does not restore ({type(error).__name__}: {reason})"


def read_raw(directory: str, step: int | None = None) -> RestoredCheckpoint:
    """Checkpoint `step` (default: the newest complete one) of `directory` (a
    `WORKDIR/checkpoints` folder) as saved: the state as a nested dict of arrays ("params",
    "batch_stats", "opt_state", "step", "rng"), without knowing the model that wrote it.
    Opens the folder read-only; raises CheckpointError naming it when nothing restores."""
    options = ocp.CheckpointManagerOptions(read_only=True)
    with _stderr_to_debug_log():
        manager = ocp.CheckpointManager(directory, options=options)
    try:
        step = manager.latest_step() if step is None else step
        if step is None or step not in manager.all_steps():
            raise CheckpointError(f"{directory}: no complete checkpoint"
                                  + ("" if step is None else f" at step {step}"))
        try:
            with _stderr_to_debug_log():
                restored = manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
        except Exception as error:  # Orbax and tensorstore raise many types
            raise CheckpointError(_does_not_restore(directory, step, error)) from error
    finally:
        manager.close()
    return RestoredCheckpoint(step=step, state=dict(restored.state), meta=dict(restored.meta))


def abstract_like(state: Any) -> Any:
    """`jax.ShapeDtypeStruct` tree (with shardings) of a concrete state, for `restore`."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
