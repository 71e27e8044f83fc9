r"""How separable the two domains are in each encoder feature of a trained model.

```
python -m damono_jax.tools.domain_probe --runs=NAME=EXPORT_DIR,... --data_dir=DATA \
    [--source=synthetic_driving/source] [--target=synthetic_driving/target] \
    [--output=docs/ablation_synthetic.md]
```

For every export and every encoder level (0 = conv1 ... 4 = bottleneck, inference-mode
BatchNorm as deployed), each image's feature map is averaged over space and a logistic
regression (standardised features, L2 1e-3, 500 Adam steps; `fit_probe`) is trained to tell
source from target on the `val` splits and scored on the `test` splits. 0.5 is chance: the
domains look the same to a linear classifier of pooled features; 1.0 means they are
perfectly separable. The table replaces the `probe` section of `--output`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from damono_jax.inference import model as inference_model
from damono_jax.models.resnet import ResNet18Encoder
from damono_jax.tools import markdown

FLAGS = flags.FLAGS
SECTION_ID = "probe"
LEVELS = ("conv1", "layer1", "layer2", "layer3", "layer4 (bottleneck)")
BATCH_SIZE = 16


@functools.partial(jax.jit, static_argnums=0)
def _pooled_features(encoder: ResNet18Encoder, variables: dict, images: jax.Array) -> list:
    return [jnp.mean(f, axis=(1, 2)) for f in encoder.apply(variables, images, train=False)]


def pooled_features(variables: Mapping, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per level, the (N, C) spatial means of the encoder features of all `batches`."""
    encoder = ResNet18Encoder()
    encoder_variables = {"params": variables["params"]["encoder"],
                         "batch_stats": variables["batch_stats"]["encoder"]}
    per_batch = [jax.device_get(_pooled_features(encoder, encoder_variables, jnp.asarray(b)))
                 for b in batches]
    return [np.concatenate([b[level] for b in per_batch]) for level in range(len(LEVELS))]


def fit_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
              test_y: np.ndarray, steps: int = 500) -> float:
    """Test accuracy of a logistic regression trained on (train_x, train_y), labels 0/1."""
    return probe_scores(train_x, train_y, test_x, test_y, steps)[0]


def probe_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray, steps: int = 500) -> tuple[float, float]:
    """(accuracy, mean log-loss in nats) on the test set of a logistic regression trained on
    (train_x, train_y), labels 0/1. Chance is 0.5 and ln 2; the log-loss keeps moving when
    the accuracy is stuck at 1.0."""
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
    x = jnp.asarray((train_x - mean) / std, jnp.float32)
    y = jnp.asarray(train_y, jnp.float32)
    params = {"w": jnp.zeros(x.shape[1]), "b": jnp.zeros(())}
    optimizer = optax.adam(1e-2)

    def loss(p):
        logits = x @ p["w"] + p["b"]
        return optax.sigmoid_binary_cross_entropy(logits, y).mean() + 1e-3 * jnp.sum(p["w"]**2)

    @jax.jit
    def step(p, state):
        grads = jax.grad(loss)(p)
        updates, state = optimizer.update(grads, state)
        return optax.apply_updates(p, updates), state

    state = optimizer.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    logits = ((test_x - mean) / std) @ np.asarray(params["w"]) + float(params["b"])
    accuracy = float(np.mean((logits > 0) == (test_y > 0.5)))
    log_loss = float(np.mean(optax.sigmoid_binary_cross_entropy(
        jnp.asarray(logits, jnp.float32), jnp.asarray(test_y, jnp.float32))))
    return accuracy, log_loss


def export_features(export_dir: str, data_dir: str, source: str, target: str
                    ) -> dict[tuple[str, str], list[np.ndarray]]:
    """Per (domain, split) ("source"/"target", "val"/"test"), the per-level pooled encoder
    features of an export, frames in split order."""
    from damono_jax import input_pipeline

    model = inference_model.load_export(export_dir)
    return {
        (domain, split): pooled_features(model.variables, list(
            input_pipeline.create_image_batches(data_dir, dataset, split, model.input_size,
                                                BATCH_SIZE)))
        for domain, dataset in (("source", source), ("target", target))
        for split in ("val", "test")
    }


def probe_export(export_dir: str, data_dir: str, source: str, target: str) -> list[float]:
    """Per level, the probe's test accuracy for one export."""
    features = export_features(export_dir, data_dir, source, target)
    accuracies = []
    for level in range(len(LEVELS)):
        splits = {}
        for split in ("val", "test"):
            source_x, target_x = (features[(d, split)][level] for d in ("source", "target"))
            splits[split] = (np.concatenate([source_x, target_x]),
                             np.r_[np.ones(len(source_x)), np.zeros(len(target_x))])
        accuracies.append(fit_probe(*splits["val"], *splits["test"]))
    return accuracies


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    runs = []
    for item in FLAGS.runs:
        name, separator, path = item.partition("=")
        if not separator or not name or not path:
            raise app.UsageError(f"--runs: {item!r} is not NAME=EXPORT_DIR")
        runs.append((name, path))
    rows = [[name, *(f"{acc:.2f}" for acc in probe_export(path, FLAGS.data_dir, FLAGS.source,
                                                            FLAGS.target))]
            for name, path in runs]
    command = "python -m damono_jax.tools.domain_probe " + " ".join(
        arg for arg in sys.argv[1:] if not arg.startswith("--output"))
    body = "\n".join([
        "### Domain probe: linear separability of source and target per encoder level",
        "",
        f"- command: `{command}`",
        "- a logistic regression on spatially averaged features, trained on the val splits "
        "(200 + 200 images), scored on the test splits (200 + 200); 0.50 = chance "
        "(aligned), 1.00 = perfectly separable",
        "",
        markdown.markdown_table(("model", *LEVELS), rows),
    ])
    print(body)
    if FLAGS.output:
        markdown.write_markdown_section(FLAGS.output, SECTION_ID, body)


def define_flags() -> None:
    """Defines this CLI's absl flags (only when run as a program)."""
    flags.DEFINE_list("runs", None, "NAME=EXPORT_DIR pairs.", required=True)
    flags.DEFINE_string("data_dir", None, "TFDS data_dir of both domains.", required=True)
    flags.DEFINE_string("source", "synthetic_driving/source", "Source TFDS dataset.")
    flags.DEFINE_string("target", "synthetic_driving/target", "Target TFDS dataset.")
    flags.DEFINE_string("output", "", "Markdown file whose 'probe' section is replaced.")


if __name__ == "__main__":
    from damono_jax import cli

    define_flags()
    cli.run(main)
