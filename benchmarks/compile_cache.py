"""What the persistent compilation cache saves: the same commands cold and warm, side by side.

    python -m benchmarks.compile_cache --workdir=/tmp/cache_bench [--demo_dir=demo_output]
        [--repeats=2] [--output=BENCHMARKS.md]

Each command is a new process, as a user runs it (`configs/synthetic.py:full`, its default
64x224 images and batch 4, on a synthetic pair of 8 frames per split), timed from start to
exit:
* `train, first step`: `main` that trains one step and writes its checkpoint;
* `restart, resume`: `main` again in that workdir, with 2 steps: restores step 1, trains one;
* `--mode=eval` and `--mode=export` of that workdir;
* `predict, one image` with that export;
* `second make demo` (only with `--demo_dir`, a finished `make demo` folder): the demo again,
  which reuses its data, training and export, and evaluates and predicts.
The settings are `--compilation_cache=off`; `cold`, an empty cache folder (compiles and
writes); `warm`, the folder the cold run filled (reads). `off` and `warm` are repeated
`--repeats` times, alternating, and the table gives their medians; `cold` runs once, as it is
cold only once. The wall time includes Python's and TensorFlow's imports, which no cache saves.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import timing

SECTION_ID = "compile-cache"
HEADER = ("command", "off s", "cold s", "warm s", "warm / off")
CONFIG = "configs/synthetic.py:full"


def _main(workdir: Path, data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "damono_jax.main", f"--config={CONFIG}",
            f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
            "--config.checkpoint_every_steps=1", "--config.eval_every_steps=1000",
            "--config.image_log_every_steps=1000", "--config.num_eval_examples=8", *args]


def _commands(root: Path, data_dir: Path, image: Path, demo_dir: Path | None
              ) -> list[tuple[str, list[str]]]:
    """The timed commands of one setting, in order (each needs the one before)."""
    workdir = root / "train"
    export = workdir / "export"
    commands = [
        ("train, first step", _main(workdir, data_dir, "--config.num_train_steps=1")),
        ("restart, resume", _main(workdir, data_dir, "--config.num_train_steps=2")),
        ("--mode=eval", _main(workdir, data_dir, "--config.num_train_steps=2", "--mode=eval")),
        ("--mode=export", _main(workdir, data_dir, "--config.num_train_steps=2",
                                "--mode=export")),
        ("predict, one image", [sys.executable, "-m", "damono_jax.predict",
                                f"--export={export}", f"--input={image}",
                                f"--output={root / 'predictions'}"]),
    ]
    if demo_dir is not None:
        commands.append(("second make demo", [sys.executable, "-m", "damono_jax.tools.demo",
                                              f"--config={CONFIG}", f"--workdir={demo_dir}"]))
    return commands


def _run_setting(root: Path, cache: str, data_dir: Path, image: Path,
                 demo_dir: Path | None) -> dict[str, float]:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    env = dict(os.environ, DAMONO_JAX_COMPILATION_CACHE=cache)
    seconds = {}
    for name, command in _commands(root, data_dir, image, demo_dir):
        started = time.perf_counter()
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        seconds[name] = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"{name} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        print(f"  {name}: {seconds[name]:.1f} s", flush=True)
    return seconds


def _prepare(workdir: Path) -> tuple[Path, Path]:
    """The synthetic pair (8 frames per split) and one target test image, untimed."""
    from configs import synthetic
    from damono_jax.tools import demo
    from data_prep import build

    data_dir = workdir / "data"
    for name in ("synthetic_driving/source", "synthetic_driving/target"):
        build.build_dataset(name, str(data_dir), max_examples_per_split=8)
    [image] = demo.write_sample_images(synthetic.get_config("full"), str(data_dir),
                                       str(workdir / "image"), 1)
    return data_dir, Path(image)


def run(workdir: Path, demo_dir: Path | None, repeats: int) -> list[list[str]]:
    data_dir, image = _prepare(workdir)
    cache = workdir / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    times: dict[str, list[dict[str, float]]] = {"off": [], "cold": [], "warm": []}
    order = ["off", "cold"] + ["warm", "off"] * (repeats - 1) + ["warm"]
    for setting in order:
        print(f"{setting}:", flush=True)
        times[setting].append(_run_setting(workdir / "runs", "off" if setting == "off"
                                           else str(cache), data_dir, image, demo_dir))
    rows = []
    for name in times["cold"][0]:
        off = statistics.median(run[name] for run in times["off"])
        warm = statistics.median(run[name] for run in times["warm"])
        rows.append([name, f"{off:.1f}", f"{times['cold'][0][name]:.1f}", f"{warm:.1f}",
                     f"{warm / off:.2f}"])
    return rows


def _vector_isa() -> str:
    """AVX-512 or AVX2 only: the host kinds whose compile times differ about 2x."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "CPU flags unknown"
    return "AVX-512" if " avx512f" in flags else "AVX2 only"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="Scratch folder (replaced).")
    parser.add_argument("--demo_dir", default=None,
                        help="A finished `make demo` folder: also time a second demo.")
    parser.add_argument("--repeats", type=int, default=2, help="Runs of `off` and `warm`.")
    parser.add_argument("--output", default=None, help="Markdown file to update.")
    parser.add_argument("--note", default="", help="A line under the table (the host's load).")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats: must be >= 1, got {args.repeats}")
    demo_dir = Path(args.demo_dir).resolve() if args.demo_dir else None
    if demo_dir is not None and not (demo_dir / "full" / "export").is_dir():
        parser.error(f"--demo_dir={args.demo_dir}: no finished `make demo` there "
                     "(full/export is missing)")
    rows = run(Path(args.workdir).resolve(), demo_dir, args.repeats)
    machine = timing.machine_description()
    command = "python -m benchmarks.compile_cache " + " ".join(
        arg for arg in (argv if argv is not None else sys.argv[1:])
        if not arg.startswith(("--output", "--note")))
    body = "\n".join([
        "## Compilation cache: every command cold and warm (`benchmarks/compile_cache.py`)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine['cpu']} ({_vector_isa()}), {machine['cores usable']} cores; "
        f"jax {machine['jax']}; {machine['date (UTC)']} UTC.",
        "",
        timing.markdown_table(HEADER, rows),
        "",
        "Wall time of each command, start to exit, in a new process. `off`: "
        "`--compilation_cache=off`; `cold`: an empty cache folder, so every program is "
        f"compiled and written; `warm`: that folder filled. off and warm: median of "
        f"{args.repeats}, alternating; cold: one run.",
        *(["", args.note] if args.note else []),
    ])
    print(body)
    if args.output:
        timing.write_markdown_section(args.output, SECTION_ID, body)


if __name__ == "__main__":
    main()
