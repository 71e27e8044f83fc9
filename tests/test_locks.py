"""damono_jax.locks: one holder at a time, named in the error; a dead holder holds nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from damono_jax import locks

_HOLD_FOREVER = (
    "import sys, time; from damono_jax import locks\n"
    "with locks.hold(sys.argv[1], 'trainer'):\n"
    "    print('held', flush=True); time.sleep(600)\n"
)


def test_second_holder_is_refused_naming_the_first_and_a_killed_holder_frees_it(tmp_path):
    path = tmp_path / "w" / ".train.lock.process0"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_FOREVER, str(path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(locks.LockHeldError,
                           match=rf"^another trainer holds {path} \(pid {holder.pid} on "
                                 rf".* since .*: -c {path}\)$"):
            with locks.hold(path, "trainer"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert path.exists()  # a SIGKILLed holder leaves its file, but not its lock
    with locks.hold(path, "trainer"):
        assert f'"pid": {os.getpid()}' in path.read_text()
    assert not path.exists()


def test_release_removes_the_file_and_the_lock_can_be_taken_again(tmp_path):
    path = tmp_path / "lock"
    for _ in range(2):
        started = time.monotonic()
        with locks.hold(path, "build"):
            assert path.exists()
        assert not path.exists() and time.monotonic() - started < 5
