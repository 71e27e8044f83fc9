"""The persistent XLA compilation cache that every command turns on (`cli.run`).

Compiling the model takes most of the time a command needs before its first step. JAX can keep
compiled programs on disk and load them in the next process instead of compiling again
("Persistent compilation cache" in JAX's documentation), so a restart after preemption,
`--mode=eval`, `predict` or a second `make demo` reuse what an earlier process compiled.

Where the cache is, first match wins:
  1. `--compilation_cache=DIR` (every command has the flag);
  2. the environment variable `DAMONO_JAX_COMPILATION_CACHE=DIR`;
  3. JAX's own `JAX_COMPILATION_CACHE_DIR`, when it is set;
  4. `$XDG_CACHE_HOME/damono_jax/jax_cache`, or `~/.cache/damono_jax/jax_cache`.
`off`, as the flag's or the variable's value, turns it off.

Every program is written, however fast it compiled. The folder is bounded (`MAX_BYTES`, least
recently used programs go first), which also makes JAX lock it, so concurrent processes (the
test suite's workers) share it safely. A folder that cannot be created or written costs one
warning line and the run compiles without it; an entry that cannot be read costs JAX's warning
and a compile. Neither fails a run. Runs of several JAX processes compile without it
(`disable_for_multi_process` says why). JAX treats the cache as trusted code: do not point it
at a folder that others can write.

JAX is imported only when the cache is turned on: `cli` imports this module, and commands
that compile nothing (`data_prep.build`) do not pay for JAX.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile

from absl import logging

ENV_VAR = "DAMONO_JAX_COMPILATION_CACHE"
OFF = "off"
MAX_BYTES = 8 << 30
_ENTRY_SUFFIX = "-cache"  # how JAX's file cache names a program's entry


@dataclasses.dataclass
class Counts:
    """Programs read from the cache and programs compiled and written to it, this process."""

    read: int = 0
    written: int = 0


COUNTS = Counts()
_listening = False


def default_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "damono_jax", "jax_cache")


def resolve(value: str | None = None) -> str | None:
    """The cache folder that `value` (the flag, or None when not given) selects; None is off."""
    for candidate in (value, os.environ.get(ENV_VAR)):
        if candidate:
            return None if candidate.strip().lower() == OFF else os.path.abspath(candidate)
    import jax

    return jax.config.jax_compilation_cache_dir or default_dir()


def _unwritable(path: str) -> str | None:
    """Why `path` cannot hold the cache, or None when a file can be written there."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as error:
        return error.strerror or str(error)
    return None


def _count(event: str, **_) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        COUNTS.read += 1
    elif event == "/jax/compilation_cache/cache_misses":  # recorded when an entry is written
        COUNTS.written += 1


def entries(path: str) -> int:
    """How many compiled programs the cache folder `path` holds."""
    try:
        return sum(name.endswith(_ENTRY_SUFFIX) for name in os.listdir(path))
    except OSError:
        return 0


def enable(value: str | None = None) -> str | None:
    """Turns the cache on at the folder `resolve(value)` selects; returns it, or None if off.

    Call it before the first compilation of the process (JAX opens the cache at most once).
    """
    import jax

    global _listening
    path = resolve(value)
    if path is None:
        disable()
        logging.info("compilation cache: off")
        return None
    problem = _unwritable(path)
    if problem is not None:
        disable()
        logging.warning("compilation cache: cannot write %s (%s); compiling without it",
                        path, problem)
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    try:
        import filelock  # noqa: F401  (JAX's bounded cache locks with it)
    except ImportError:
        pass
    else:
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    if not _listening:
        jax.monitoring.register_event_listener(_count)
        _listening = True
    logging.info("compilation cache: %s (%d programs; --compilation_cache=off turns it off)",
                 path, entries(path))
    return path


def disable() -> None:
    """No program is read from or written to any cache (benchmarks that time compilation)."""
    import jax

    jax.config.update("jax_enable_compilation_cache", False)


def disable_for_multi_process() -> None:
    """Off for a run of several JAX processes (`config.distributed.initialize`).

    JAX writes cache entries from process 0 only, and the other processes load them. In this
    project's 2-process CPU test (jax 0.10.2, gloo collectives) process 1, running programs
    that process 0 had compiled in an earlier run, hung in a collective until the shutdown
    barrier failed; the same test passes with every process compiling. Until that is
    understood, multi-process runs compile.
    """
    if COUNTS.read or COUNTS.written:
        logging.warning("compilation cache: turned off for this multi-process run after %d "
                        "programs were read and %d written", COUNTS.read, COUNTS.written)
    else:
        logging.info("compilation cache: off (a multi-process run; compile_cache."
                     "disable_for_multi_process says why)")
    disable()


def summary() -> str:
    return (f"compilation cache: {COUNTS.read} programs read from it, "
            f"{COUNTS.written} compiled and written to it")
