"""What every command-line tool does with user errors and library logs.

    if __name__ == "__main__":
        cli.run(main)          # instead of absl's app.run(main)

A user error ends the tool with one `error: ...` line on stderr, naming the flag, config key,
file or frame, and exit status 2 for a usage error (a flag or config value) or 1 for a data
error (a file, dataset, export, checkpoint or lock); `--verbose` adds the traceback. Usage
errors are `flags.Error`, `app.UsageError`, `UsageError` and `ValueError`s whose message
starts with `config.` or `--` (the project's convention for naming a key or flag); data
errors are the types of `_data_errors()`. Anything else is a bug and keeps its traceback.

Unless `--verbose`, the console shows the project's own progress and results: INFO lines of
Orbax, TFDS, TensorFlow, JAX and etils are dropped there (`add_log_file` keeps everything in
a file), and TensorFlow's C++ INFO lines are off (`TF_CPP_MIN_LOG_LEVEL=1` unless set).

Every command turns on the persistent XLA compilation cache (`compile_cache`; the flag
`--compilation_cache=DIR|off`) before it compiles anything, and logs at its end how many
programs it read from the cache.
"""

from __future__ import annotations

import functools
import logging as std_logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # before anything imports TensorFlow

from absl import app, flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

from damono_jax import compile_cache, files  # noqa: E402

USAGE_EXIT, DATA_EXIT = 2, 1
PROJECT_PACKAGES = ("damono_jax", "data_prep", "configs", "benchmarks")
# Loggers (by the module that logs) whose INFO lines stay off the console unless --verbose.
QUIET_LIBRARIES = ("orbax", "tensorflow_datasets", "tensorflow", "jax", "etils", "absl",
                   "flax", "jax2onnx", "onnx_ir")


class UsageError(ValueError):
    """A bad flag or config value (exit status 2)."""


def require_folder_or_absent(path: str | os.PathLike, flag: str) -> None:
    """A `--flag=path` that will be a folder that this process writes into: `UsageError`
    when a file is in its place, or when it cannot be created or written (before any work)."""
    path = os.fspath(path)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise UsageError(f"{flag}={path}: exists and is not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"{flag}={path}: cannot write into it (permission denied)")
        return
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"{flag}={path}: cannot create it ({parent} is a file)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag}={path}: cannot create it (permission denied)")


def _data_errors() -> tuple[type[BaseException], ...]:
    from damono_jax import errors

    return (errors.DataError, errors.ExportError, errors.PredictError, errors.CheckpointError,
            errors.LockHeldError, errors.NonFiniteLossError,
            FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
            PermissionError)


# ml_collections loads a `--config` file when the flag is first read, and says so this way.
_CONFIG_FILE_MISSING = "Failed loading config file"


def _missing_config_file(error: BaseException) -> str | None:
    """`--config=PATH: cannot read the config file (...)` for ml_collections' lazy load."""
    if isinstance(error, OSError) and isinstance(error.__cause__, OSError):
        error = error.__cause__  # "Configuration is not available because of ..."
    if not isinstance(error, OSError) or not str(error).startswith(_CONFIG_FILE_MISSING):
        return None
    attempted = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
    path = next((line for line in attempted if not line.startswith(("Attempted", "["))),
                "?")
    reason = attempted[-1] if attempted else "not found"
    return f"--config={path}: cannot read the config file ({reason})"


_CONFIG_LOADER = "ml_collections/config_flags/config_flags.py"


def _config_argument(argv: Sequence[str]) -> str:
    """The path of the `--config=PATH[:variant]` argument ("?" without one)."""
    value = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "?")
    return value.split(":", 1)[0]


def config_file_error(error: BaseException, argv: Sequence[str] | None = None) -> str | None:
    """One line for a `--config` file that is missing, does not parse or does not import.

    ml_collections loads the file when the flag is first read (while parsing a
    `--config.*` override, or in `main`): a missing file is its OSError, a file that does not
    parse a SyntaxError raised in its loader, and an error while the file runs (an
    ImportError, ...) has a frame in the file. Returns None for any other error.
    """
    missing = _missing_config_file(error)
    if missing is not None:
        return missing
    if isinstance(error, flags.Error):
        return None  # ml_collections' own message (a bad variant, a bad override)
    frames = traceback.extract_tb(error.__traceback__)
    path = _config_argument(sys.argv if argv is None else argv)
    if isinstance(error, SyntaxError):
        if not any(f.filename.replace(os.sep, "/").endswith(_CONFIG_LOADER) for f in frames):
            return None
        where = f"{error.filename or path}, line {error.lineno}"
        return f"--config={path}: the config file does not parse ({where}: {error.msg})"
    target = os.path.abspath(path)
    lines = [f.lineno for f in frames if os.path.abspath(f.filename) == target]
    if not lines:
        return None
    return (f"--config={path}: the config file fails (line {lines[-1]}): "
            f"{type(error).__name__}: {error}")


def exit_status(error: BaseException) -> int | None:
    """2 for a usage error, 1 for a data error, None for anything else (a bug)."""
    if isinstance(error, flags.Error | app.UsageError | UsageError):
        return USAGE_EXIT
    if config_file_error(error) is not None:
        return USAGE_EXIT
    if isinstance(error, ValueError) and str(error).startswith(("config.", "--")):
        return USAGE_EXIT
    if isinstance(error, _data_errors()) or files.is_disk_full(error):
        return DATA_EXIT
    return None


def _message(error: BaseException) -> str:
    """The error line's text: the error's own, or for a full disk that no write of the
    project named, the file the library names."""
    if isinstance(error, _data_errors()) or not files.is_disk_full(error):
        return config_file_error(error) or str(error)
    filename = getattr(error, "filename", None)
    if filename:
        return f"{filename}: no space left on device"
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"no space left on device ({first[:300]})"


def fail(message: str, status: int) -> NoReturn:
    """Prints `error: message` (one line) on stderr and exits with `status`."""
    _close_progress_bars()
    sys.stdout.flush()
    print("error: " + " ".join(message.split("\n")).strip(), file=sys.stderr)
    sys.stderr.flush()
    raise SystemExit(status)


def _close_progress_bars() -> None:
    """Closes the tqdm bars a library left open (TFDS's, when a build fails), so that their
    last redraw comes before the error line, not after it at exit; a bar's erasure ends
    without a newline, so one follows."""
    tqdm = sys.modules.get("tqdm")
    bars = list(getattr(getattr(tqdm, "tqdm", None), "_instances", ()))
    for bar in bars:
        bar.close()
    if bars:
        print(file=sys.stderr)


def _flag_parse_message(error: Exception, argv: Sequence[str]) -> str:
    """A parse error as one line; ml_collections' unknown-key AttributeError names its flag."""
    text = str(error.args[0]) if error.args else str(error)
    if "Traceback (most recent call last)" in text:
        # ml_collections puts the config module's whole traceback into the flag error: keep
        # the flag and the exception's own last line.
        head = re.sub(r"[\s:]+$", "", text.split("Traceback (most recent call last)")[0]
                      .replace("\\n", " "))
        last = [line for line in text.splitlines() if line.strip()][-1].strip()
        text = f"{head}: {last}"
    text = " ".join(text.replace("\\n", "\n").replace("\\", "").split()).strip("'\" ")
    unknown = re.match(r"'?([A-Za-z0-9_]+)'? Did you mean", text) or re.fullmatch(
        r"'?([A-Za-z0-9_]+)'?", text)
    for argument in argv:
        name = argument.split("=", 1)[0]
        if unknown and name.startswith("--config.") and name.endswith("." + unknown.group(1)):
            hint = text[unknown.end() - len("Did you mean"):] if "Did you mean" in text else ""
            return f"{name}: no such config key" + (f" ({hint})" if hint else "")
    return text


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except Exception as error:
        message = config_file_error(error, argv)
        if message is not None:
            fail(message, USAGE_EXIT)
        if not isinstance(error, flags.Error | AttributeError | KeyError | TypeError
                          | ValueError):
            raise
        fail(_flag_parse_message(error, argv), USAGE_EXIT)


# Library warnings whose cause is in the library, not in the project; dropped from the console
# unless --verbose (the log file keeps them). TFDS's own `Tensor` feature decoder reads its
# deprecated `FeatureConnector.dtype` (tensor_feature.py, `decode_example`), so every read of a
# dataset logs it; the project never reads `.dtype` of a feature.
LIBRARY_WARNINGS = (("tensorflow_datasets", "`FeatureConnector.dtype` is deprecated"),)


class _QuietLibraries(std_logging.Filter):
    """Drops records below WARNING logged from the modules of `QUIET_LIBRARIES`, and the
    warnings of `LIBRARY_WARNINGS`."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        path = record.pathname.replace(os.sep, "/")
        if record.levelno >= std_logging.WARNING:
            if _library_on_a_full_disk(record, path):
                return False
            return not any(f"/{library}/" in path and str(record.msg).startswith(start)
                           for library, start in LIBRARY_WARNINGS)
        return not any(f"/{library}/" in path for library in QUIET_LIBRARIES)


def _library_on_a_full_disk(record: std_logging.LogRecord, path: str) -> bool:
    """A library's account of a write that found its file system full (Orbax logs one
    traceback per writer thread, asyncio one per task): the command ends in one error line
    naming what it was writing (`files.naming_a_full_disk`), and the log file keeps these."""
    if any(f"/{package}/" in path for package in PROJECT_PACKAGES):
        return False
    error = record.exc_info[1] if record.exc_info else None
    return files.is_disk_full(error) or files.says_disk_full(record.getMessage())


def quiet_library_logs() -> None:
    """Keeps the libraries' INFO lines off the console (absl's stderr handler), and the
    unraisable errors of `_closed_event_loop`."""
    absl_logging.get_absl_handler().addFilter(_QuietLibraries())
    sys.unraisablehook = functools.partial(_closed_event_loop, sys.unraisablehook)


def _closed_event_loop(previous: Callable[[Any], None], unraisable: Any) -> None:
    """Logs (instead of printing) a callback into a closed asyncio event loop: when one write
    of an Orbax save fails (a full disk), Orbax closes the save's loop while TensorStore still
    completes the save's other writes, and each completion's callback into that loop is an
    unraisable `RuntimeError('Event loop is closed')` (one traceback per array). The failure
    itself reaches the command as an error; anything else goes to the previous hook."""
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        absl_logging.debug("a callback into a closed event loop (a failed Orbax write)")
        return
    previous(unraisable)


class _LogFile(std_logging.FileHandler):
    """A log file that, when a write to it fails (a full disk), says so once on the console
    and writes no more, instead of printing a "Logging error" traceback per record."""

    stopped = False

    def emit(self, record: std_logging.LogRecord) -> None:
        if not self.stopped:
            super().emit(record)

    def handleError(self, record: std_logging.LogRecord) -> None:  # noqa: N802 (logging's)
        if self.stopped:
            return
        self.stopped = True
        absl_logging.warning("%s: the log file stops here (%s)", self.baseFilename,
                             sys.exc_info()[1])


def add_log_file(path: str | os.PathLike) -> None:
    """Appends every log record (all libraries, INFO and up) to `path`."""
    handler = _LogFile(os.fspath(path))
    handler.setFormatter(std_logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s %(filename)s:%(lineno)d] %(message)s"))
    handler.setLevel(std_logging.INFO)
    absl_logging.get_absl_logger().addHandler(handler)


def run(main: Callable[[list[str]], None], compiles: bool = True) -> NoReturn:
    """`app.run(main)` with one-line user errors, their exit statuses and quiet libraries;
    `compiles`: `main` compiles XLA programs, so it gets the compilation cache."""
    flags.DEFINE_boolean("verbose", False,
                         "Show tracebacks of user errors and the libraries' INFO logs.")
    if compiles:
        flags.DEFINE_string("compilation_cache", None,
                            "Folder of the persistent XLA compilation cache, or 'off' (default: "
                            f"${compile_cache.ENV_VAR}, else {compile_cache.default_dir()}).")

    def wrapped(argv: list[str]) -> None:
        verbose = flags.FLAGS.verbose
        if not verbose:
            quiet_library_logs()
        if compiles:
            compile_cache.enable(flags.FLAGS.compilation_cache)
        try:
            main(argv)
            if compiles:
                absl_logging.info(compile_cache.summary())
        except Exception as error:
            status = exit_status(error)
            if status is None:
                raise
            if verbose:
                traceback.print_exc()
            fail(_message(error), status)

    app.run(wrapped, flags_parser=_parse_flags)
    raise SystemExit(0)
