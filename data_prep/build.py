"""One command that builds any of the project's TFDS datasets.

    python -m data_prep.build NAME --manual_dir=SRC --data_dir=OUT [--config=C]
        [--max_examples_per_split=N]

NAME is a builder registered by `data_prep` (`kitti_eigen`, `vkitti`, `cityscapes_depth`,
`synthetic_driving`), optionally with its config as `NAME/CONFIG`. `--manual_dir` is required
only by builders that declare `MANUAL_DOWNLOAD_INSTRUCTIONS`.

The build either completes or leaves `--data_dir` as it found it: on any failure, SIGTERM and
Ctrl-C included, what it created is removed (`build_guard`: only this dataset's own files,
never another build's), the error is printed as one `error:` line and the command exits with
status 1 (2 for bad arguments). A second build of the same dataset into the same
`--data_dir` stops at once naming the one that runs; what a killed build left is removed by
the next. A trial build (`--max_examples_per_split`) is recorded as such and rebuilt, not
reused, by a build that asks for more. The same logic is `build_dataset(...)` from Python.

We call `DatasetBuilder.download_and_prepare` from Python instead of wrapping the `tfds build`
CLI because that CLI cannot start without apache-beam (datasets.md §5.2, gotcha 1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import tensorflow_datasets as tfds
from absl import logging

import data_prep  # noqa: F401  (registers every builder)
from damono_jax import errors, files
from data_prep import build_guard
from data_prep.common import DataError


@dataclasses.dataclass(frozen=True)
class SplitSummary:
    """What TFDS wrote for one split (`num_bytes`: size of its shard files)."""

    num_examples: int
    num_shards: int
    num_bytes: int


@dataclasses.dataclass(frozen=True)
class BuildSummary:
    """Outcome of one `build_dataset` call; `str()` is the table the CLI prints."""

    name: str
    config: str | None
    version: str
    dataset_dir: str
    splits: dict[str, SplitSummary]
    seconds: float
    reused: bool = False  # True when the dataset already existed and nothing was written

    @property
    def num_examples(self) -> int:
        """Examples over all splits."""
        return sum(split.num_examples for split in self.splits.values())

    @property
    def num_bytes(self) -> int:
        """Bytes of all shards over all splits."""
        return sum(split.num_bytes for split in self.splits.values())

    def __str__(self) -> str:
        full_name = self.name if self.config is None else f"{self.name}/{self.config}"
        status = "reused existing dataset" if self.reused else "built"
        lines = [
            f"{full_name} {self.version}: {status} in {self.seconds:.1f} s -> {self.dataset_dir}",
            f"{'split':<20}{'examples':>12}{'shards':>8}{'bytes':>16}",
        ]
        for split_name, split in sorted(self.splits.items()):
            lines.append(
                f"{split_name:<20}{split.num_examples:>12,}{split.num_shards:>8}"
                f"{split.num_bytes:>16,}"
            )
        total_shards = sum(split.num_shards for split in self.splits.values())
        lines.append(
            f"{'total':<20}{self.num_examples:>12,}{total_shards:>8}{self.num_bytes:>16,}"
        )
        return "\n".join(lines)


def parse_name(name: str, config: str | None = None) -> tuple[str, str | None]:
    """Splits "name/config" and checks it against an explicit `config`."""
    if not name or name.count("/") > 1:
        raise ValueError(f"dataset name {name!r}: expected NAME or NAME/CONFIG")
    base, _, name_config = name.partition("/")
    if not base or (name_config == "" and "/" in name):
        raise ValueError(f"dataset name {name!r}: expected NAME or NAME/CONFIG")
    if name_config and config and name_config != config:
        raise ValueError(
            f"dataset name {name!r} names config {name_config!r} but --config={config!r}"
        )
    return base, (name_config or config or None)


def _summarise(builder: tfds.core.DatasetBuilder, seconds: float, reused: bool) -> BuildSummary:
    splits = {
        split_name: SplitSummary(
            num_examples=int(info.num_examples),
            num_shards=int(info.num_shards),
            # Shard files on disk (TFDS's own num_bytes leaves out the TFRecord framing).
            num_bytes=sum(os.path.getsize(os.fspath(path)) for path in info.filepaths),
        )
        for split_name, info in builder.info.splits.items()
    }
    return BuildSummary(
        name=builder.name,
        config=builder.builder_config.name if builder.builder_config else None,
        version=str(builder.version),
        dataset_dir=os.fspath(builder.data_dir),
        splits=splits,
        seconds=seconds,
        reused=reused,
    )


def registered_builder_names() -> list[str]:
    """Names of the TFDS builders defined in the `data_prep` package."""
    names = set()
    pending = [tfds.core.DatasetBuilder]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith("data_prep.") and getattr(cls, "name", None):
            names.add(cls.name)
    return sorted(names)


def registered_configs() -> dict[str, tuple[str, ...] | None]:
    """`name -> config names` of the `data_prep` builders (None: the builder has no configs).

    "" is among the names when the builder has a default config (the bare name selects it).
    """
    configs: dict[str, tuple[str, ...] | None] = {}
    for name in registered_builder_names():
        builder_cls = tfds.builder_cls(name)
        names = tuple(config.name for config in builder_cls.BUILDER_CONFIGS)
        if not names:
            configs[name] = None
            continue
        configs[name] = (("",) if builder_cls.DEFAULT_BUILDER_CONFIG_NAME else ()) + names
    return configs


def build_dataset(
    name: str,
    data_dir: str | os.PathLike,
    manual_dir: str | os.PathLike | None = None,
    config: str | None = None,
    max_examples_per_split: int | None = None,
) -> BuildSummary:
    """Builds dataset `name` ("name" or "name/config") into `data_dir`.

    Raises `DataError` for bad input files (naming the file and the problem) and `ValueError`
    for bad arguments. On any exception nothing created under `data_dir` is left behind.
    An already built dataset is reused (the summary says so), as TFDS does.
    """
    base_name, config_name = parse_name(name, config)
    if max_examples_per_split is not None and max_examples_per_split < 1:
        raise ValueError(f"max_examples_per_split must be >= 1, got {max_examples_per_split}")
    data_dir = os.path.abspath(os.fspath(data_dir))
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise DataError(data_dir, "--data_dir exists and is not a directory")

    try:
        builder_cls = tfds.builder_cls(base_name)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise ValueError(
            f"unknown dataset {base_name!r}; data_prep registers: "
            + ", ".join(registered_builder_names())
        ) from error
    instructions = getattr(builder_cls, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
    if instructions:
        if manual_dir is None:
            raise DataError(
                "--manual_dir",
                f"{base_name} needs its source files in a manual_dir:\n{instructions.strip()}",
            )
        manual_dir = os.path.abspath(os.fspath(manual_dir))
        if not os.path.isdir(manual_dir):
            raise DataError(
                manual_dir,
                f"manual_dir not found; {base_name} expects:\n{instructions.strip()}",
            )
        if not os.listdir(manual_dir):
            raise DataError(
                manual_dir,
                f"manual_dir is empty; {base_name} expects:\n{instructions.strip()}",
            )
    elif manual_dir is not None:
        manual_dir = os.path.abspath(os.fspath(manual_dir))

    download_config = tfds.download.DownloadConfig(
        manual_dir=manual_dir,
        max_examples_per_split=max_examples_per_split,
    )
    start = time.perf_counter()
    full_name = base_name if config_name is None else f"{base_name}/{config_name}"
    with files.naming_a_full_disk(data_dir, full_name), build_guard.BuildGuard(
            data_dir, base_name, config_name):
        builder = tfds.builder(base_name, config=config_name, data_dir=data_dir)
        with _replacing_a_different_trial(builder, max_examples_per_split) as replaced:
            if replaced:
                builder = tfds.builder(base_name, config=config_name, data_dir=data_dir)
            reused = builder.is_prepared()
            builder.download_and_prepare(download_config=download_config)
            if not reused:
                build_guard.write_record(builder.data_dir,
                                         max_examples_per_split=max_examples_per_split,
                                         manual_dir=manual_dir)
    return _summarise(builder, time.perf_counter() - start, reused)


@contextlib.contextmanager
def _replacing_a_different_trial(builder: tfds.core.DatasetBuilder,
                                 max_examples_per_split: int | None) -> Iterator[bool]:
    """Moves aside a trial build that this request must not reuse; yields whether it did.

    A built version recorded with another `max_examples_per_split` than the one asked for is
    rebuilt, except that a full build serves a trial request. The moved-aside version is put
    back if the block fails and deleted once it succeeds.
    """
    version_dir = Path(os.fspath(builder.data_dir))
    record = build_guard.read_record(version_dir) if builder.is_prepared() else None
    recorded = None if record is None else record.get("max_examples_per_split")
    if recorded is None or recorded == max_examples_per_split:
        yield False
        return
    logging.warning("%s holds a trial build (--max_examples_per_split=%s); building it again "
                    "with --max_examples_per_split=%s", version_dir, recorded,
                    max_examples_per_split)
    aside = version_dir.with_name(f"{build_guard.INCOMPLETE_PREFIX}trial_{version_dir.name}")
    os.rename(version_dir, aside)
    try:
        yield True
    except BaseException:
        shutil.rmtree(version_dir, ignore_errors=True)
        os.rename(aside, version_dir)
        raise
    shutil.rmtree(aside)


def find_data_error(error: BaseException) -> BaseException:
    """Returns the `DataError` in `error`'s cause/context chain, else `error` itself."""
    return next((link for link in errors.chain(error) if isinstance(link, DataError)), error)


def main(argv: Sequence[str]) -> None:
    """absl entry point (`damono_jax.cli.run`); see the module docstring."""
    from absl import flags

    from damono_jax import cli

    if len(argv) != 2:
        raise cli.UsageError(
            "usage: python -m data_prep.build NAME --data_dir=OUT [--manual_dir=SRC] "
            "[--config=C] [--max_examples_per_split=N]"
        )
    flag_values = flags.FLAGS
    try:
        summary = build_dataset(
            argv[1],
            data_dir=flag_values.data_dir,
            manual_dir=flag_values.manual_dir,
            config=flag_values.config,
            max_examples_per_split=flag_values.max_examples_per_split,
        )
    except (build_guard.BuildInterrupted, KeyboardInterrupt) as stop:
        signal_name, status = (str(stop), 143) if str(stop) else ("Ctrl-C", 130)
        cli.fail(f"build of {argv[1]} stopped by {signal_name}; {flag_values.data_dir} holds "
                 "no partial dataset", status)
    except Exception as error:
        reported = find_data_error(error)
        if isinstance(reported, DataError):
            print(f"build of {argv[1]} failed; {flag_values.data_dir} holds no partial "
                  "dataset.", file=sys.stderr)
            raise reported from error
        if isinstance(error, ValueError):  # bad arguments: the name, a config, a number
            raise cli.UsageError(str(error)) from error
        raise
    print(summary)


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("data_dir", None, "TFDS data_dir to write the dataset into.")
    flags.DEFINE_string("manual_dir", None, "Directory holding the extracted source files.")
    flags.DEFINE_string("config", None, "Builder config (also accepted as NAME/CONFIG).")
    flags.DEFINE_integer(
        "max_examples_per_split", None, "Stop each split after this many examples."
    )
    flags.mark_flag_as_required("data_dir")


if __name__ == "__main__":
    from damono_jax import cli

    _define_flags()
    cli.run(main, compiles=False)
