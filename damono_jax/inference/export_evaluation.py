"""An export scored on a TFDS split with the paper's protocol: `evaluate_export`.

The protocol (caps, crop, scaling) is `evaluation`'s, the printed table and CSV rows
`evaluation_report`'s; the command line is `damono_jax.evaluate`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from damono_jax import cli, evaluation, evaluation_report, files
from damono_jax.inference import batching
from damono_jax.inference import model as inference_model


def gt_description(dataset: str, split: str) -> str:
    """A short description of the ground truth for the protocol fingerprint."""
    name = dataset.split("/")[0]
    if name == "kitti_eigen" and split == "eigen_benchmark":
        return f"{dataset}/{split} (KITTI annotated depth png/256)"
    if name == "kitti_eigen":
        return f"{dataset}/{split} (LiDAR, Monodepth2 export_gt_depth, vel_depth=True)"
    return f"{dataset}/{split}"


def _cap_key(cap: int | None) -> str:
    return "none" if cap is None else str(cap)


def method_name(metadata: dict[str, Any]) -> str:
    """Row title of the table, e.g. `DA-Monodepth full @ 37700`."""
    variant = metadata.get("variant", "model")
    return f"DA-Monodepth {variant} @ {metadata['step']}"


def evaluate_export(
    export_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    split: str = "test",
    dataset: str = "kitti_eigen",
    max_examples: int | None = None,
    caps: Sequence[int | None] | None = None,
    crop: str | None = None,
    scaling: str | float = "median",
    *,
    output_dir: str | os.PathLike | None = None,
    batch_size: int = 8,
    progress: bool = True,
    print_table: bool = True,
) -> dict[str, Any]:
    """Runs an exported model on `dataset`/`split` and scores it under every cap.

    Args:
      export_dir: an export written by `damono_jax.export.save_export`.
      data_dir: the TFDS data_dir the dataset was built into.
      split: "test" (697 Eigen frames), "eigen_benchmark" (652), "val", ...
      dataset: TFDS name, e.g. "kitti_eigen" or "synthetic_driving/target".
      max_examples: evaluate only the first N examples (None = all).
      caps: caps to report; None = the dataset's and split's default
        (`evaluation.default_protocol`).
      crop: "garg" or "none"; None = the split's default.
      scaling: "median", "none" or a fixed factor.
      output_dir: where results.json / results.csv go; None = `export_dir/eval_<dataset>_<split>`.
      batch_size: images per network call (the last batch is padded: one compilation).
      progress: show a progress bar.
      print_table: print the Table 1 layout to stdout.

    Returns:
      `{"results": {cap_key: evaluation dict without per_image}, "table": str,
      "output_dir": str, ...}`; cap keys are "80", "50" or "none".
    """
    from damono_jax import datasets, input_pipeline  # TF and TFDS: only when evaluating

    if output_dir is not None:
        cli.require_folder_or_absent(output_dir, "--output")
    default_caps, default_crop = evaluation.default_protocol(dataset, split)
    caps = tuple(default_caps if caps is None else caps)
    crop = default_crop if crop is None else crop
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    model = inference_model.load_export(export_dir)
    gt_source = gt_description(dataset, split)
    evaluator = evaluation.Evaluator(caps=caps, crop=crop, scaling=scaling, gt_source=gt_source)
    builder = datasets.load_builder(os.fspath(data_dir), dataset, "--dataset")
    if split not in builder.info.splits:
        raise ValueError(
            f"--split={split}: dataset {dataset!r} has no such split; it has "
            f"{sorted(builder.info.splits.keys())}"
        )
    total = builder.info.splits[split].num_examples
    if max_examples is not None and max_examples > 0:
        total = min(total, max_examples)
    examples = input_pipeline.create_eval_dataset(
        os.fspath(data_dir), dataset, split, model.input_size, max_examples, key="--dataset"
    )

    bar = tqdm(total=total, desc=f"eval {dataset}/{split}", unit="img", disable=not progress)
    for batch in batching.batches(examples, batch_size):
        images = batching.stack_padded([example["image"] for example in batch], batch_size)
        scaled_disparity = model.predict_scaled_disparity(images)
        for index, example in enumerate(batch):
            evaluator.add(example["depth"], scaled_disparity[index], example.get("name"))
        bar.update(len(batch))
    bar.close()

    results = evaluator.results()
    table = evaluation_report.format_table(results, method_name(model.metadata))
    if print_table:
        print(table)
    output_dir = Path(
        output_dir
        if output_dir is not None
        else Path(export_dir) / f"eval_{dataset.replace('/', '_')}_{split}"
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "export": str(Path(export_dir).absolute()),
        "step": model.metadata["step"],
        "dataset": dataset,
        "split": split,
        "num_images": len(evaluator.names),
        "results": {
            _cap_key(cap): {k: v for k, v in value.items() if k != "per_image"}
            for cap, value in results.items()
        },
        "per_image": [
            {"name": name, **{f"cap_{_cap_key(cap)}": results[cap]["per_image"][i]
                              for cap in results}}
            for i, name in enumerate(evaluator.names)
        ],
    }
    files.atomic_write_text(output_dir / "results.json", json.dumps(record, indent=2) + "\n")
    rows = evaluation_report.results_csv_rows(results)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    files.atomic_write_text(output_dir / "results.csv", buffer.getvalue())
    return {**record, "table": table, "output_dir": str(output_dir)}
