"""Entry point: `python -m damono_jax.main --config=configs/vkitti.py --workdir=W [--mode=...]`.

Modes: `train` (default; resumes from `W/checkpoints`), `eval` (newest checkpoint on the
config's eval split, `evaluation.evaluate`), `export` (newest checkpoint -> `W/export`,
`train.latest_checkpoint`), `predict` (`prediction.run.predict_images` of `W/export` on
`--input`, written to `--output`; exports first if `W/export` does not exist).

User errors end in one `error:` line (`damono_jax.cli`); `W/log.txt` keeps every log line,
the libraries' INFO lines included, which the console shows only with `--verbose`.
"""

import os

import jax
from absl import app, flags, logging
from clu import platform
from ml_collections import config_flags

from damono_jax import cli, compile_cache, config_utils
from damono_jax.train import latest_checkpoint

LOG_FILE = "log.txt"

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs and exports.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "export", "predict"], "What to run.")
config_flags.DEFINE_config_file(
    "config", None, "Training configuration file, e.g. configs/vkitti.py:full.",
    lock_config=True,
)
flags.DEFINE_string("input", None, "--mode=predict: image file, folder or glob.")
flags.DEFINE_string("output", None, "--mode=predict: output folder.")
flags.mark_flags_as_required(["config", "workdir"])


def _check_paths() -> None:
    """--workdir, --input and --output, before anything is read or written."""
    cli.require_folder_or_absent(FLAGS.workdir, "--workdir")
    if FLAGS.mode != "train" and not os.path.isdir(FLAGS.workdir):
        raise cli.UsageError(f"--workdir={FLAGS.workdir}: no such folder (train first with "
                             "--mode=train)")
    if FLAGS.mode == "predict":
        if not FLAGS.input or not FLAGS.output:
            raise app.UsageError("--mode=predict needs --input=IMAGES and --output=DIR")
        from damono_jax.prediction import inputs as prediction_inputs

        prediction_inputs.list_inputs(FLAGS.input)  # raises naming --input when it matches nothing
        cli.require_folder_or_absent(FLAGS.output, "--output")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    _check_paths()
    # Imported here, after `cli` has quieted TensorFlow's C++ logs (clu's writers import TF).
    from damono_jax import datasets
    from damono_jax.train import loop

    # TensorFlow only feeds data: keep it off the GPUs, JAX owns their memory.
    datasets.hide_gpus_from_tf()
    config = FLAGS.config
    if config.distributed.initialize:
        compile_cache.disable_for_multi_process()
        # Cross-process collectives of the CPU backend (a no-op for GPU/TPU computations).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=config.distributed.coordinator_address,
            num_processes=config.distributed.num_processes,
            process_id=config.distributed.process_id,
        )
    num_devices = jax.device_count() if FLAGS.mode == "train" else None
    config_utils.check(config, mode=FLAGS.mode, num_devices=num_devices)
    if FLAGS.mode == "train":
        from damono_jax.train import warm_start

        warm_start.check_init_from(config)  # reads it: before the model or the workdir
    if FLAGS.mode in ("train", "eval"):
        from damono_jax import input_pipeline

        input_pipeline.check_datasets(config.data, mode=FLAGS.mode,
                                      use_target_images=config_utils.uses_target_images(config))
    os.makedirs(FLAGS.workdir, exist_ok=True)
    cli.add_log_file(os.path.join(FLAGS.workdir, LOG_FILE))
    logging.info("JAX process %d / %d, local devices %s", jax.process_index(),
                 jax.process_count(), jax.local_devices())
    platform.work_unit().set_task_status(
        f"process_index: {jax.process_index()}, process_count: {jax.process_count()}"
    )
    platform.work_unit().create_artifact(platform.ArtifactType.DIRECTORY, FLAGS.workdir, "workdir")

    if FLAGS.mode == "train":
        loop.train_checked(config, FLAGS.workdir)  # checked above
    elif FLAGS.mode == "eval":
        latest_checkpoint.evaluate_checkpoint(config, FLAGS.workdir)
    elif FLAGS.mode == "export":
        latest_checkpoint.export_checkpoint(config, FLAGS.workdir)
    else:
        from damono_jax.prediction import run as prediction

        export_dir = os.path.join(FLAGS.workdir, "export")
        if not os.path.isdir(export_dir):
            export_dir = latest_checkpoint.export_checkpoint(config, FLAGS.workdir)
        prediction.predict_images(export_dir, FLAGS.input, FLAGS.output)


if __name__ == "__main__":
    cli.run(main)
