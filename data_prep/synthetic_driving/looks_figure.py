"""One frame of the synthetic driving world in every look, side by side, as one PNG.

    python -m data_prep.synthetic_driving.looks_figure --output=docs/figures/synthetic_looks.png

docs/datasets.md and docs/adaptation_family.md show the result: the same scene as `source`,
`target` and each one-factor target (`appearance.LOOKS`).
"""

from __future__ import annotations

import os

from absl import app, flags

from data_prep.synthetic_driving import render, world

FLAGS = flags.FLAGS
# The frame shown: fixed before any model was trained on the family.
SPLIT, INDEX = "test", 0


def draw_looks(path: str, seed: int = 0, split: str = SPLIT, index: int = INDEX,
               height: int = 96, width: int = 320) -> str:
    """Writes frame `index` of `split` in every look (2 columns) to the PNG `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from damono_jax import files

    looks = render.DOMAINS
    columns = 2
    rows = -(-len(looks) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 1.55 * rows))
    for axis, look in zip(axes.flat, looks, strict=True):
        axis.imshow(render.render_example(look, seed, split, index, height, width)["image"])
        axis.set_title(f"synthetic_driving/{look}", fontsize=8)
        axis.set_axis_off()
    figure.suptitle(f"{render.example_name(split, index)} (seed {seed}), {height}x{width}: "
                    "one scene, every look", fontsize=9)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    files.atomic_write(path, lambda temporary: figure.savefig(temporary, dpi=100))
    plt.close(figure)
    return path


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    world.Camera.kitti_like(FLAGS.height, FLAGS.width)  # checks the size first
    print(draw_looks(FLAGS.output, FLAGS.seed, FLAGS.split, FLAGS.index, FLAGS.height,
                     FLAGS.width))


if __name__ == "__main__":
    flags.DEFINE_string("output", "docs/figures/synthetic_looks.png", "PNG to write.")
    flags.DEFINE_integer("seed", 0, "Dataset seed (the builder's is 0).")
    flags.DEFINE_enum("split", SPLIT, list(world.SPLIT_CODES), "Split of the frame.")
    flags.DEFINE_integer("index", INDEX, "Index of the frame in its split.")
    flags.DEFINE_integer("height", 96, "Image height (the builder's is 96).")
    flags.DEFINE_integer("width", 320, "Image width (the builder's is 320).")
    app.run(main)
