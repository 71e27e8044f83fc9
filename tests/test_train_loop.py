"""damono_jax.train.loop: NaN stops a run, the restart resumes from the last good checkpoint."""

import glob
import os
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from damono_jax import checkpointing, cli, locks
from damono_jax.errors import DiskFullError
from damono_jax.train import loop
from tests.helpers import (
    fast_compilation,  # noqa: F401 (autouse fixture)
    fill_filesystem,
    in_memory_eval,
    in_memory_iterator,
    small_filesystem,
    tiny_config,
    truncate_data_files,
)


def test_nan_stops_the_run_and_the_restart_resumes_from_the_last_good_checkpoint(
    tmp_path
):
    """NaN input at step 5 stops the run naming step and term; checkpoint 4 stays the newest.
    A second trainer on the workdir is refused; with checkpoint 4 then torn, the restart
    moves it aside, resumes from step 2 and completes. (Bit-identity of a resumed run with
    an uninterrupted one is checked end to end in test_main.test_resume_after_sigkill.) The
    baseline variant: stopping, locking and falling back do not depend on the model."""
    config = tiny_config("baseline", num_train_steps=6)
    workdir = str(tmp_path / "run")
    with pytest.raises(loop.NonFiniteLossError, match=r"^step 5: loss term 'depth' is nan"):
        loop.train_and_evaluate(config, workdir, train_iterator_fn=in_memory_iterator(5),
                                 eval_dataset_fn=in_memory_eval)
    with checkpointing.TrainCheckpointer(workdir, keep=3) as checkpointer:
        assert checkpointer.all_steps() == [2, 4]
    # A second trainer on the workdir (here: this test holding its lock) is refused at once.
    lock = os.path.join(workdir, f"{loop.TRAIN_LOCK}0")
    with locks.hold(lock, "trainer"), pytest.raises(
            locks.LockHeldError, match=rf"^another trainer holds {lock} \(pid {os.getpid()}"):
        loop.train_and_evaluate(config, workdir, train_iterator_fn=in_memory_iterator(),
                                eval_dataset_fn=in_memory_eval)
    # The newest checkpoint torn (a truncated file): the restart falls back to step 2.
    truncate_data_files(Path(workdir) / checkpointing.CHECKPOINT_SUBDIR / "4")
    resumed = loop.train_and_evaluate(config, workdir, train_iterator_fn=in_memory_iterator(),
                                       eval_dataset_fn=in_memory_eval)
    assert int(resumed.step) == 6
    with checkpointing.TrainCheckpointer(workdir, keep=3) as checkpointer:
        assert checkpointer.all_steps() == [2, 4, 6]
        restored = checkpointer.restore_latest(checkpointing.abstract_like(resumed))
    assert restored.meta["data_position"] == 6 and restored.meta["step"] == 6
    assert restored.meta["config"]["variant"] == "baseline"
    for a, b in zip(jax.tree.leaves(restored.state), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(resumed.params))
    assert glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
    assert os.listdir(os.path.join(workdir, checkpointing.UNRESTORABLE_SUBDIR)) == ["4"]
    assert not os.path.exists(lock)


# TensorStore's callbacks into the failed save's closed event loop (cli's hook logs them
# in a command; pytest reports them as warnings).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_full_disk_ends_the_run_naming_the_checkpoint_and_the_previous_one_restores(
    tmp_path
):
    """The file system fills after checkpoint 2 (1 MiB left: the summaries fit): the save of
    checkpoint 4 ends the run with a line naming it, "no space left" and the newest complete
    checkpoint; its temporary directory is gone and checkpoint 2 restores."""
    config = tiny_config("baseline", num_train_steps=6)
    with small_filesystem(tmp_path / "disk", 1 << 30) as disk:
        workdir = disk / "run"
        checkpoints = workdir / checkpointing.CHECKPOINT_SUBDIR

        def filling_after_checkpoint_2(config, start_step):
            for step, batch in enumerate(in_memory_iterator()(config, start_step),
                                         start_step + 1):
                if step == 3:
                    while not (checkpoints / "2").is_dir():
                        time.sleep(0.05)
                    fill_filesystem(disk, leave_bytes=1 << 20)
                yield batch

        with pytest.raises(DiskFullError) as raised:
            loop.train_and_evaluate(config, str(workdir),
                                    train_iterator_fn=filling_after_checkpoint_2,
                                    eval_dataset_fn=in_memory_eval)
        assert str(raised.value) == (
            f"{checkpoints}/4: cannot write the checkpoint: no space left on device; the "
            "newest complete checkpoint is step 2")
        assert cli.exit_status(raised.value) == cli.DATA_EXIT
        assert os.listdir(checkpoints) == ["2"]
        restored = checkpointing.read_raw(str(checkpoints))
        assert restored.step == 2 and restored.meta["data_position"] == 2
        assert len(jax.tree.leaves(restored.state["params"])) > 50
