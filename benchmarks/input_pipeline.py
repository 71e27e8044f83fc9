"""Training input pipeline throughput (examples/s) on synthetic_driving, and its build speed.

    python -m benchmarks.input_pipeline [--data_dir=DIR] [--examples_per_split=256]
        [--batch_size=12] [--num_batches=20] [--rounds=3] [--output=BENCHMARKS.md]

Builds `synthetic_driving/source` and `synthetic_driving/target` (`--examples_per_split`
frames per split, timed: that is the build speed) into `--data_dir` (a temporary directory
by default; an existing build there is reused and not timed), then measures
`input_pipeline.create_train_iterator` with the paper's full model streams (source image,
clean image, depth, labels + target image) at the builder's native 96x320 and resized to
192x640, each with and without augmentation.

One example = one source example plus one target image. A variant's throughput in one round
is `batch_size * num_batches / seconds` over `num_batches` consecutive batches, after the
batches the prefetch buffer already held are drained untimed (tf.data works in background
threads, so batches must be timed back to back, not interleaved with other variants). The
rounds cycle over the variants, so a load spike on a shared machine hits every variant alike;
the table gives the median and the range over rounds. The results replace the
`input_pipeline` section of `--output`.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence

import tensorflow_datasets as tfds

import data_prep  # noqa: F401  (registers the builders)
from benchmarks import timing
from configs import default
from damono_jax import config_utils, input_pipeline

SECTION_ID = "input_pipeline"
DATASETS = ("synthetic_driving/source", "synthetic_driving/target")
VARIANTS = (  # (name, image size, augment)
    ("96x320 augment", (96, 320), "monodepth2"),
    ("96x320 no augment", (96, 320), "none"),
    ("192x640 augment", (192, 640), "monodepth2"),
    ("192x640 no augment", (192, 640), "none"),
)


def build_datasets(data_dir: str, examples_per_split: int) -> dict[str, float | None]:
    """Builds both configs; returns seconds per dataset (None when an existing one is reused)."""
    seconds: dict[str, float | None] = {}
    download_config = tfds.download.DownloadConfig(max_examples_per_split=examples_per_split)
    for name in DATASETS:
        builder = tfds.builder(name, data_dir=data_dir)
        if builder.is_prepared():
            built = builder.info.splits["train"].num_examples
            if built < examples_per_split:
                raise ValueError(
                    f"{builder.data_dir}: holds {built} train examples, fewer than "
                    f"--examples_per_split={examples_per_split}; use another --data_dir"
                )
            seconds[name] = None
            continue
        start = time.perf_counter()
        builder.download_and_prepare(download_config=download_config)
        seconds[name] = time.perf_counter() - start
    return seconds


def make_config(data_dir: str, image_size: tuple[int, int], augment: str, batch_size: int):
    """The default config on synthetic_driving, full model (both streams)."""
    config = default.get_config()
    config.variant = "full"
    config.data.data_dir = data_dir
    config.data.source = DATASETS[0]
    config.data.target = DATASETS[1]
    config.data.image_size = image_size
    config.data.augment = augment
    config.data.shuffle_buffer = 256
    config.batch_size = batch_size
    return config


def measure(data_dir: str, batch_size: int, num_batches: int, rounds: int,
            variants: Sequence[tuple[str, tuple[int, int], bool]]) -> dict[str, list[float]]:
    """examples/s of every variant in every round."""
    iterators = {}
    for name, size, augment in variants:
        config = make_config(data_dir, size, augment, batch_size)
        iterator = input_pipeline.create_train_iterator(
            config.data, batch_size=config.batch_size, seed=config.seed,
            use_target_images=config_utils.uses_target_images(config),
        )
        iterators[name] = (iterator, config.data.prefetch)
        next(iterators[name][0])  # traces the functions and fills the shuffle buffer
    rates: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for _ in range(rounds):
        for name, (iterator, prefetch) in iterators.items():
            for _ in range(prefetch):  # drain what was prefetched while we were away
                next(iterator)
            start = time.perf_counter()
            for batch in itertools.islice(iterator, num_batches):
                del batch
            rates[name].append(batch_size * num_batches / (time.perf_counter() - start))
    return rates


def report(args: argparse.Namespace, build_seconds: dict[str, float | None],
           rates: dict[str, list[float]], load_before: tuple[float, ...],
           load_after: tuple[float, ...]) -> str:
    """The markdown section: machine, command, build speed and throughput tables."""
    machine = timing.machine_description()
    lines = ["## Input pipeline (synthetic_driving)", ""]
    lines += [f"- {key}: {value}" for key, value in machine.items() if value]
    lines.append(
        "- load average (1/5/15 min) before: "
        + " / ".join(f"{v:.2f}" for v in load_before)
        + ", after: " + " / ".join(f"{v:.2f}" for v in load_after)
    )
    command = " ".join(["python -m benchmarks.input_pipeline", *args.argv])
    lines.append(f"- command: `{command}`")
    lines += ["", "Build (`download_and_prepare`, 3 splits of "
              f"{args.examples_per_split} frames at 96x320, one process):", ""]
    rows = []
    for name, seconds in build_seconds.items():
        if seconds is None:
            rows.append([name, "reused", "-"])
        else:
            rows.append([name, f"{seconds:.1f}", f"{3 * args.examples_per_split / seconds:.0f}"])
    lines.append(timing.markdown_table(["dataset", "seconds", "frames/s"], rows))
    lines += ["", f"Training stream (`create_train_iterator`, variant full, batch "
              f"{args.batch_size}, {args.num_batches} batches x {args.rounds} rounds; one example "
              "= source image + clean image + depth + labels + target image):", ""]
    rows = [
        [name, f"{statistics.median(values):.0f}", f"{min(values):.0f}-{max(values):.0f}"]
        for name, values in rates.items()
    ]
    lines.append(timing.markdown_table(["variant", "examples/s (median)", "range"], rows))
    if args.note:
        lines += ["", args.note]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default="", help="TFDS data_dir (default: a temp dir)")
    parser.add_argument("--examples_per_split", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=12)
    parser.add_argument("--num_batches", type=int, default=20, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default="BENCHMARKS.md", help="'' to only print")
    parser.add_argument("--note", default="", help="a line on the conditions, e.g. machine load")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    for flag in ("examples_per_split", "batch_size", "num_batches", "rounds"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="input_pipeline_bench_") as temp_dir:
        data_dir = args.data_dir or temp_dir
        build_seconds = build_datasets(data_dir, args.examples_per_split)
        for name, seconds in build_seconds.items():
            status = "reused" if seconds is None else f"built in {seconds:.1f} s"
            print(f"{name}: {status}", flush=True)
        rates = measure(data_dir, args.batch_size, args.num_batches, args.rounds, VARIANTS)
    section = report(args, build_seconds, rates, load_before, os.getloadavg())
    print(section)
    if args.output:
        timing.write_markdown_section(args.output, SECTION_ID, section)
        print(f"wrote section {SECTION_ID!r} of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
