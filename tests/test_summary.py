"""The parameter report prints counts that match the models' parameter trees."""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from damono_jax.models import DAMonodepth, DepthNet
from damono_jax.tools import summary

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _default_config():
    """configs/default.py's get_config(), loaded by path (configs/ is not a package)."""
    path = REPO_ROOT / "configs" / "default.py"
    spec = importlib.util.spec_from_file_location("default_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _tree_count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _param_tree_counts(num_classes: int = 19) -> dict[str, int]:
    """Counts straight from DAMonodepth's and DepthNet's parameter trees (at 192x640)."""
    images = jax.ShapeDtypeStruct((1, 192, 640, 3), jnp.float32)
    model = DAMonodepth(num_classes=num_classes)
    params = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, x, grl_scale=jnp.float32(0)), images
    )["params"]
    counts = {part: _tree_count(subtree) for part, subtree in params.items()}
    counts["total"] = _tree_count(params)
    counts["inference"] = _tree_count(
        jax.eval_shape(lambda x: DepthNet().init(jax.random.key(0), x), images)["params"]
    )
    return counts


def _parse_table(text: str) -> dict[str, int]:
    rows = {}
    for line in text.splitlines()[1:]:
        match = re.match(r"^(.*?)\s{2,}([\d,]+)\s+[\d.]+M$", line)
        assert match, f"unparsable line {line!r}"
        rows[match.group(1).strip()] = int(match.group(2).replace(",", ""))
    return rows


def test_cli_prints_counts_of_the_parameter_trees():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    ), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-m", "damono_jax.tools.summary", "--config=configs/default.py"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    printed = _parse_table(result.stdout)
    expected = _param_tree_counts()
    for part in summary.PARTS:
        assert printed[part] == expected[part], part
    assert printed["total (training, variant 'full')"] == expected["total"]
    assert printed["DepthNet (inference: encoder + shared + depth)"] == expected["inference"]
    assert printed["paper Table 5 (DA-Monodepth)"] == 21_500_000
    # DepthNet is exactly encoder + shared block + depth decoder.
    assert expected["inference"] == (
        expected["encoder"] + expected["shared_block"] + expected["depth_decoder"]
    )
    # torchvision ResNet-18 without fc (11,689,512 - 513,000) and Monodepth2's depth decoder.
    assert expected["encoder"] == 11_176_512
    assert expected["shared_block"] + expected["depth_decoder"] == 3_152_724


def test_counts_follow_variant_and_classes():
    config = _default_config()
    config.variant = "seg"
    config.model.num_classes = 7
    counts = summary.parameter_counts(config)
    expected = _param_tree_counts(num_classes=7)
    assert list(counts) == [
        "encoder", "shared_block", "depth_decoder", "semantic_decoder", "total", "inference"
    ]
    for part in ("encoder", "shared_block", "depth_decoder", "semantic_decoder"):
        assert counts[part] == expected[part]
    assert counts["total"] == expected["total"] - expected["domain_classifier"]
    # Semantic decoder = depth decoder's blocks + 7-channel instead of 1-channel heads.
    head_inputs = 16 + 32 + 64 + 128
    assert counts["semantic_decoder"] - counts["depth_decoder"] == 6 * (9 * head_inputs + 4)
    table = summary.format_table(counts, config.variant)
    assert "total (training, variant 'seg')" in table
    assert _parse_table(table)["semantic_decoder"] == counts["semantic_decoder"]


def test_invalid_config_names_the_key():
    """The command validates its config at the entry, as every entry point does."""
    result = subprocess.run(
        [sys.executable, "-m", "damono_jax.tools.summary", "--config=configs/default.py",
         "--config.model.upsample_mode=cubic"],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), capture_output=True,
        text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "config.model.upsample_mode: unknown value 'cubic'" in result.stderr
