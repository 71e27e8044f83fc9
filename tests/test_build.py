"""`python -m data_prep.build` / `build_dataset`: arguments, summary, failure cleanup, CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_prep.build import BuildSummary, SplitSummary, build_dataset, parse_name
from data_prep.common import DataError
from tests.fixtures import kitti as kitti_fixture

REPO_ROOT = Path(__file__).resolve().parents[1]
DRIVE = "2011_09_26/2011_09_26_drive_0002_sync"


class BuildProbe(tfds.core.GeneratorBasedBuilder):
    """A builder without manual download that fails on request (registered as build_probe)."""

    VERSION = tfds.core.Version("1.0.0")
    fail_after: int | None = None

    def _info(self) -> tfds.core.DatasetInfo:
        # DatasetInfo directly: dataset_info_from_configs needs a package directory.
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.FeaturesDict({"value": np.int64})
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(7), "test": self._generate_examples(3)}

    def _generate_examples(self, count):
        for index in range(count):
            if self.fail_after is not None and index == self.fail_after:
                raise DataError("probe/file.png", "broken on purpose")
            yield index, {"value": index}


@pytest.fixture
def failing_probe(monkeypatch):
    monkeypatch.setattr(BuildProbe, "fail_after", 4)


def test_parse_name():
    assert parse_name("kitti_eigen") == ("kitti_eigen", None)
    assert parse_name("kitti_eigen/stereo") == ("kitti_eigen", "stereo")
    assert parse_name("vkitti", "v2") == ("vkitti", "v2")
    assert parse_name("vkitti/v2", "v2") == ("vkitti", "v2")
    with pytest.raises(ValueError, match="names config 'v1' but --config='v2'"):
        parse_name("vkitti/v1", "v2")
    for bad in ("", "a/b/c", "/v1", "vkitti/"):
        with pytest.raises(ValueError, match="expected NAME or NAME/CONFIG"):
            parse_name(bad)


def test_builder_without_manual_dir_builds_and_summary_counts(tmp_path):
    summary = build_dataset("build_probe", tmp_path / "out", max_examples_per_split=5)
    assert summary.name == "build_probe" and summary.config is None and not summary.reused
    assert {name: split.num_examples for name, split in summary.splits.items()} == {
        "train": 5, "test": 3}
    assert summary.num_examples == 8 and all(s.num_shards == 1 for s in summary.splits.values())
    on_disk = sum(path.stat().st_size for path in Path(summary.dataset_dir).glob("*.tfrecord*"))
    assert summary.num_bytes == on_disk > 0
    assert sorted(os.listdir(tmp_path / "out")) == ["build_probe"]  # no empty downloads/
    loaded = tfds.builder("build_probe", data_dir=tmp_path / "out")
    assert sorted(int(x["value"]) for x in tfds.as_numpy(loaded.as_dataset(split="train"))) == [
        0, 1, 2, 3, 4]
    again = build_dataset("build_probe", tmp_path / "out", max_examples_per_split=5)
    assert again.reused and again.splits == summary.splits


def test_a_trial_build_is_recorded_and_not_reused_by_a_full_build(tmp_path):
    trial = build_dataset("build_probe", tmp_path / "out", max_examples_per_split=5)
    record = json.loads((Path(trial.dataset_dir) / "damono_build.json").read_text())
    assert record["max_examples_per_split"] == 5
    full = build_dataset("build_probe", tmp_path / "out")
    assert not full.reused and full.splits["train"].num_examples == 7
    assert json.loads((Path(full.dataset_dir) / "damono_build.json").read_text())[
        "max_examples_per_split"] is None
    assert sorted(os.listdir(Path(full.dataset_dir).parent)) == ["1.0.0"]  # trial gone
    served = build_dataset("build_probe", tmp_path / "out", max_examples_per_split=5)
    assert served.reused and served.splits["train"].num_examples == 7  # a full one serves


def test_a_failed_rebuild_of_a_trial_puts_the_trial_back(tmp_path, monkeypatch):
    trial = build_dataset("build_probe", tmp_path / "out", max_examples_per_split=5)
    before = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "out").rglob("*"))
    monkeypatch.setattr(BuildProbe, "fail_after", 6)
    with pytest.raises(DataError, match="broken on purpose"):
        build_dataset("build_probe", tmp_path / "out")
    assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "out").rglob("*")) == before
    assert tfds.builder("build_probe", data_dir=tmp_path / "out").info.splits[
        "train"].num_examples == trial.splits["train"].num_examples


def test_summary_table_text():
    summary = BuildSummary(
        name="kitti_eigen", config="left", version="1.0.0", dataset_dir="/d/kitti_eigen/left/1.0.0",
        splits={"train": SplitSummary(22600, 64, 12_345_678), "test": SplitSummary(697, 2, 9_876)},
        seconds=12.34,
    )
    assert str(summary).splitlines() == [
        "kitti_eigen/left 1.0.0: built in 12.3 s -> /d/kitti_eigen/left/1.0.0",
        "split                   examples  shards           bytes",
        "test                         697       2           9,876",
        "train                     22,600      64      12,345,678",
        "total                     23,297      66      12,355,554",
    ]


def test_failure_removes_everything_it_created_and_keeps_what_was_there(tmp_path, failing_probe):
    out = tmp_path / "out"
    (out / "build_probe" / "0.9.0").mkdir(parents=True)
    (out / "build_probe" / "0.9.0" / "old.txt").write_text("old")
    (out / "other_dataset").mkdir()
    (out / "notes.txt").write_text("mine")
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    with pytest.raises(DataError, match=r"^probe/file.png: broken on purpose$"):
        build_dataset("build_probe", out)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before


def test_failure_into_missing_data_dir_removes_the_created_parents(tmp_path, failing_probe):
    with pytest.raises(DataError, match="broken on purpose"):
        build_dataset("build_probe", tmp_path / "new" / "deeper" / "out")
    assert os.listdir(tmp_path) == []


def test_argument_errors(tmp_path):
    with pytest.raises(DataError, match=r"^--manual_dir: kitti_eigen needs its source files in a "
                                        r"manual_dir:\nDownload the KITTI raw archives"):
        build_dataset("kitti_eigen", tmp_path / "out")
    with pytest.raises(DataError, match=rf"^{tmp_path / 'nowhere'}: manual_dir not found; "
                                        r"kitti_eigen expects:\nDownload"):
        build_dataset("kitti_eigen", tmp_path / "out", manual_dir=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=rf"^{tmp_path / 'empty'}: manual_dir is empty"):
        build_dataset("kitti_eigen", tmp_path / "out", manual_dir=tmp_path / "empty")
    with pytest.raises(ValueError, match=r"unknown dataset 'kitti_eigne'; data_prep registers: "
                                         r".*kitti_eigen"):
        build_dataset("kitti_eigne", tmp_path / "out")
    with pytest.raises(ValueError, match="max_examples_per_split must be >= 1, got 0"):
        build_dataset("build_probe", tmp_path / "out", max_examples_per_split=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="--data_dir exists and is not a directory"):
        build_dataset("build_probe", tmp_path / "file")
    assert sorted(os.listdir(tmp_path)) == ["empty", "file"]


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "data_prep.build", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def test_cli_builds_then_fails_cleanly(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    fixture = kitti_fixture.write_kitti_raw(
        raw, [f"{DRIVE} 3 l"], split_lists={"test": [f"{DRIVE} 3 l"]}
    )
    result = _run_cli("kitti_eigen/custom", f"--manual_dir={raw}", f"--data_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()  # TFDS's own messages come first
    assert lines[-4].startswith("kitti_eigen/custom 1.0.0: built in ")
    assert lines[-4].endswith(f" s -> {out / 'kitti_eigen' / 'custom' / '1.0.0'}")
    shard_bytes = sum(p.stat().st_size for p in out.rglob("kitti_eigen-test.tfrecord*"))
    assert lines[-2].split() == ["test", "1", "1", f"{shard_bytes:,}"]
    assert lines[-1].split() == ["total", "1", "1", f"{shard_bytes:,}"]
    assert "Generating test examples" in result.stderr  # TFDS's tqdm progress bar
    (example,) = tfds.as_numpy(
        tfds.builder("kitti_eigen/custom", data_dir=out).as_dataset(split="test")
    )
    np.testing.assert_array_equal(example["depth"], fixture.frames[f"{DRIVE} 0000000003 l"]
                                  .expected_depth)

    # Rebuild into the same data_dir (version dir deleted; the name and config dirs stay)
    # from a velodyne scan with a torn last point.
    shutil.rmtree(out / "kitti_eigen" / "custom" / "1.0.0")
    velodyne = raw / DRIVE / "velodyne_points" / "data" / "0000000003.bin"
    velodyne.write_bytes(velodyne.read_bytes()[:-6])
    before = sorted(str(p) for p in out.rglob("*"))
    assert str(out / "kitti_eigen" / "custom") in before
    result = _run_cli("kitti_eigen", "--config=custom", f"--manual_dir={raw}",
                      f"--data_dir={out}", "--max_examples_per_split=1")
    size = velodyne.stat().st_size
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {velodyne}: size {size} bytes is not a multiple of 16 (4 float32 per point); "
        "truncated?"
    )
    assert sorted(str(p) for p in out.rglob("*")) == before


def test_a_full_disk_ends_the_build_in_one_line_and_leaves_nothing(tmp_path):
    """100 KiB: less than the synthetic source's three splits of 8 examples (about 160 KB)."""
    from tests.helpers import small_filesystem

    with small_filesystem(tmp_path / "disk", 100 << 10) as disk:
        out = disk / "tfds"
        result = _run_cli("synthetic_driving/source", f"--data_dir={out}",
                          "--max_examples_per_split=8")
        assert result.returncode == 1, result.stderr[-3000:]
        assert result.stderr.strip().splitlines()[-1] == (
            f"error: {out}: cannot write synthetic_driving/source: no space left on device")
        assert "Traceback" not in result.stderr
        assert list(disk.iterdir()) == []


def test_cli_without_name_prints_usage():
    result = _run_cli("--data_dir=/tmp/unused")
    assert result.returncode == 2
    assert "usage: python -m data_prep.build NAME" in result.stderr


def test_a_second_build_of_the_same_dataset_stops_naming_the_holder(tmp_path):
    from damono_jax import locks

    out = tmp_path / "out"
    with locks.hold(out / ".build_probe.build.lock", "build of this dataset"):
        with pytest.raises(locks.LockHeldError,
                           match=rf"another build of this dataset holds "
                                 rf"{out / '.build_probe.build.lock'} \(pid {os.getpid()} on "):
            build_dataset("build_probe", out)
        assert sorted(os.listdir(out)) == [".build_probe.build.lock"]
    assert os.listdir(out) == []  # the lock file goes with its holder


def test_a_failing_build_never_deletes_what_another_build_wrote(tmp_path, monkeypatch):
    out = tmp_path / "out"
    other = out / "synthetic_driving" / "source" / "1.0.0" / "shard.tfrecord"

    def generate(self, count):  # another build writes its dataset while this one runs
        other.parent.mkdir(parents=True, exist_ok=True)
        other.write_text("another build's shard")
        yield 0, {"value": 0}
        raise DataError("probe/file.png", "broken on purpose")

    monkeypatch.setattr(BuildProbe, "_generate_examples", generate)
    with pytest.raises(DataError, match="broken on purpose"):
        build_dataset("build_probe", out)
    assert other.read_text() == "another build's shard"
    assert sorted(os.listdir(out)) == ["synthetic_driving"]


def test_leftovers_of_a_killed_build_are_removed_by_the_next_build(tmp_path):
    leftover = tmp_path / "out" / "build_probe" / "incomplete.K1LL3D_1.0.0"
    (leftover / "build_probe-train.tfrecord-00000-of-00001").parent.mkdir(parents=True)
    (leftover / "build_probe-train.tfrecord-00000-of-00001").write_text("half")
    summary = build_dataset("build_probe", tmp_path / "out")
    assert not summary.reused and not leftover.exists()
    assert sorted(os.listdir(tmp_path / "out" / "build_probe")) == ["1.0.0"]


def test_sigterm_during_a_build_cleans_up_like_a_failure(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "data_prep.build", "synthetic_driving/source",
         f"--data_dir={out}"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    config_dir = out / "synthetic_driving" / "source"
    deadline = time.monotonic() + 240
    while not (config_dir.is_dir() and any(p.name.startswith("incomplete.")
                                           for p in config_dir.iterdir())):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == (
        f"error: build of synthetic_driving/source stopped by SIGTERM; {out} holds no partial "
        "dataset"
    )
    assert os.listdir(out) == []
