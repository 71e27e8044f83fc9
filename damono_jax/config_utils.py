"""Config validation and the paper's ablation variants (Tables 3/4).

`check(config)` raises `ValueError` naming the offending key, e.g.
`config.data.image_size: (190, 640) is not a multiple of 32`. `parse_variant` turns the
`seg` of a `--config=configs/vkitti.py:seg` argument into the matching row of the ablation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import ml_collections

from damono_jax.labels import IGNORE_LABEL
from damono_jax.models.conv import WEIGHT_GRADIENTS
from damono_jax.models.da_monodepth import (
    ALIGN_LEVELS,
    BOTTLENECK_LEVEL,
    DOMAIN_CONDITIONINGS,
    DTYPES,
    INPUT_SIZE_MULTIPLE,
    SHARED_BLOCK_GRAD_MODES,
    VARIANTS,
)
from damono_jax.models.decoders import UPSAMPLE_MODES

CONV_WEIGHT_GRADIENTS = ("auto", *WEIGHT_GRADIENTS)
GRL_SCHEDULES = ("dann", "constant")
AUGMENTATIONS = ("none", "monodepth2", "strong")
MODES_NEEDING_DATA = ("train", "eval")


def parse_variant(arg: str | None, default: str = "full") -> str:
    """The variant named by a config-file argument (`file.py:baseline`); `default` if empty."""
    variant = (arg or "").strip() or default
    if variant not in VARIANTS:
        raise ValueError(
            f"config argument: unknown variant {variant!r}; use one of {', '.join(VARIANTS)}"
        )
    return variant


def uses_target_images(config: Any) -> bool:
    """Whether training reads the target stream: the domain classifier or FDA needs it."""
    return config.variant == "full" or float(config.data.get("fda_beta", 0.0)) > 0.0


def variant_flags(variant: str) -> dict[str, bool]:
    """`use_semantic` and `use_domain_classifier` for a variant name."""
    if variant not in VARIANTS:
        raise ValueError(
            f"config.variant: unknown variant {variant!r}; use one of {', '.join(VARIANTS)}"
        )
    return dict(VARIANTS[variant])


def _fail(key: str, message: str) -> None:
    raise ValueError(f"config.{key}: {message}")


def _check_positive_int(config: Any, key: str, allow_minus_one: bool = False) -> None:
    value = _get(config, key)
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(key, f"{value!r} is not an integer")
    if allow_minus_one and value == -1:
        return
    if value <= 0:
        _fail(key, f"{value!r} must be positive" + (" (or -1)" if allow_minus_one else ""))


def _check_number(
    config: Any,
    key: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_minimum: bool = False,
    allow_none: bool = False,
) -> None:
    value = _get(config, key)
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        _fail(key, f"{value!r} is not a finite number")
    if minimum is not None:
        if strict_minimum and value <= minimum:
            _fail(key, f"{value!r} must be > {minimum}")
        if not strict_minimum and value < minimum:
            _fail(key, f"{value!r} must be >= {minimum}")
    if maximum is not None and value > maximum:
        _fail(key, f"{value!r} must be <= {maximum}")


def _check_choice(config: Any, key: str, choices: Iterable[str]) -> None:
    value = _get(config, key)
    choices = tuple(choices)
    if value not in choices:
        _fail(key, f"unknown value {value!r}; use one of {', '.join(choices)}")


def _get(config: Any, key: str) -> Any:
    node = config
    for part in key.split("."):
        if part not in node:
            _fail(key, "is missing from the config (see configs/default.py)")
        node = node[part]
    return node


def _check_dataset(config: Any, key: str) -> None:
    value = _get(config, key)
    if not isinstance(value, str) or not value:
        _fail(key, f"{value!r} is not a dataset name")
    from data_prep.build import registered_configs  # TFDS: only where a dataset is named

    known = registered_configs()
    name, _, builder_config = value.partition("/")
    if name not in known:
        _fail(key, f"unknown dataset {value!r}; known datasets: {', '.join(known)}")
    configs = known[name]
    if configs is None and builder_config:
        _fail(key, f"dataset {name!r} has no config {builder_config!r}; write just {name!r}")
    if configs is not None and builder_config not in configs:
        options = ", ".join(f"{name}/{c}" if c else name for c in configs)
        _fail(key, f"dataset {value!r} needs one of the configs {options}")


def check(config: Any, *, mode: str = "train", num_devices: int | None = None) -> None:
    """Raises `ValueError` naming the key of the first invalid value in `config`.

    `mode` is main.py's `--mode`: data locations are required for "train" and "eval" only.
    `num_devices`, when given, must divide `config.batch_size` (the global batch).
    """
    _check_choice(config, "variant", VARIANTS)

    # ---- data
    image_size = _get(config, "data.image_size")
    if (
        not isinstance(image_size, tuple | list)
        or len(image_size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in image_size)
    ):
        _fail("data.image_size", f"{image_size!r} is not a (height, width) pair of integers")
    if any(v <= 0 or v % INPUT_SIZE_MULTIPLE for v in image_size):
        _fail("data.image_size",
              f"{tuple(image_size)!r} is not a multiple of {INPUT_SIZE_MULTIPLE}")
    for key in ("data.source", "data.eval"):
        _check_dataset(config, key)
    fda_beta = _get(config, "data.fda_beta")
    if not isinstance(fda_beta, int | float) or isinstance(fda_beta, bool) or not (
        0.0 <= fda_beta < 0.5
    ):
        _fail("data.fda_beta", f"{fda_beta!r} is not a number in [0, 0.5)")
    if uses_target_images(config):
        _check_dataset(config, "data.target")
    for key in ("data.source_split", "data.target_split", "data.eval_split"):
        value = _get(config, key)
        if not isinstance(value, str) or not value:
            _fail(key, f"{value!r} is not a split name")
    if mode in MODES_NEEDING_DATA:
        data_dir = _get(config, "data.data_dir")
        if not data_dir:
            _fail(
                "data.data_dir",
                "is not set; pass --config.data.data_dir=DIR (the TFDS data_dir that "
                "`python -m data_prep.build` wrote)",
            )
    _check_choice(config, "data.augment", AUGMENTATIONS)
    _check_number(config, "data.max_depth", minimum=0.0, strict_minimum=True)
    _check_positive_int(config, "data.shuffle_buffer")
    num_parallel_calls = _get(config, "data.num_parallel_calls")
    if not isinstance(num_parallel_calls, int) or (
        num_parallel_calls != -1 and num_parallel_calls <= 0
    ):
        _fail("data.num_parallel_calls", f"{num_parallel_calls!r} must be positive or -1")
    _check_positive_int(config, "data.prefetch", allow_minus_one=True)

    # ---- model
    _check_positive_int(config, "model.num_classes")
    if config.model.num_classes >= IGNORE_LABEL:
        _fail("model.num_classes",
              f"{config.model.num_classes} collides with ignore label {IGNORE_LABEL}")
    _check_choice(config, "model.upsample_mode", UPSAMPLE_MODES)
    _check_choice(config, "model.shared_block_grad", SHARED_BLOCK_GRAD_MODES)
    for key in ("model.discriminator_features", "model.output_discriminator_features"):
        widths = _get(config, key)
        if (
            not isinstance(widths, tuple | list)
            or not widths
            or not all(isinstance(v, int) and v > 0 for v in widths)
        ):
            _fail(key, f"{widths!r} is not a tuple of positive ints")
    for key in ("model.domain_specific_bn", "model.discriminator_spectral_norm",
                "model.output_alignment"):
        if not isinstance(_get(config, key), bool):
            _fail(key, "must be True or False")
    levels = _get(config, "model.align_levels")
    # Output-space alignment alone needs no feature classifier: () is allowed with it.
    if (
        not isinstance(levels, tuple | list)
        or (not levels and not config.model.output_alignment)
        or len(set(levels)) != len(levels)
        or not all(isinstance(v, int) and v in ALIGN_LEVELS for v in levels)
    ):
        _fail("model.align_levels", f"{levels!r} is not a tuple of distinct levels from "
              f"{ALIGN_LEVELS} (empty only with model.output_alignment)")
    _check_choice(config, "model.domain_conditioning", DOMAIN_CONDITIONINGS)
    _check_positive_int(config, "model.cdan_features")
    if config.model.domain_conditioning == "cdan":
        if tuple(levels) != (BOTTLENECK_LEVEL,):
            _fail("model.domain_conditioning",
                  f"'cdan' conditions the bottleneck classifier only; model.align_levels is "
                  f"{tuple(levels)!r}, use ({BOTTLENECK_LEVEL},)")
        if not variant_flags(config.variant)["use_semantic"]:
            _fail("model.domain_conditioning",
                  f"'cdan' needs the semantic decoder; variant {config.variant!r} has none")
    if not isinstance(_get(config, "model.encoder_init"), str):
        _fail("model.encoder_init", "must be 'scratch' or a path")
    _check_number(config, "model.min_depth", minimum=0.0, strict_minimum=True)
    _check_number(config, "model.max_depth", minimum=0.0, strict_minimum=True)
    if config.model.min_depth >= config.model.max_depth:
        _fail(
            "model.min_depth",
            f"{config.model.min_depth} must be below config.model.max_depth "
            f"({config.model.max_depth})",
        )

    # ---- loss
    for key in ("loss.depth_weight", "loss.seg_weight", "loss.adv_weight",
                "loss.output_adv_weight", "loss.smoothness_weight"):
        _check_number(config, key, minimum=0.0)
    _check_number(config, "loss.l1_weight", minimum=0.0, maximum=1.0)

    # ---- GRL
    _check_choice(config, "grl.schedule", GRL_SCHEDULES)
    _check_number(config, "grl.gamma", minimum=0.0, strict_minimum=True)
    _check_number(config, "grl.max_scale", minimum=0.0)
    warmup = _get(config, "grl.warmup_fraction")
    if isinstance(warmup, bool) or not isinstance(warmup, int | float) or not 0 <= warmup < 1:
        _fail("grl.warmup_fraction", f"{warmup!r} is not a number in [0, 1)")
    _check_positive_int(config, "grl.collapse_patience")

    # ---- optimiser
    _check_number(config, "optim.learning_rate", minimum=0.0, strict_minimum=True)
    _check_number(config, "optim.b1", minimum=0.0, maximum=1.0)
    _check_number(config, "optim.b2", minimum=0.0, maximum=1.0)
    _check_number(config, "optim.decay_at_fraction", minimum=0.0, maximum=1.0,
                  strict_minimum=True)
    _check_number(config, "optim.decay_factor", minimum=0.0, maximum=1.0)
    _check_number(config, "optim.discriminator_learning_rate", minimum=0.0,
                  strict_minimum=True, allow_none=True)
    _check_number(config, "optim.grad_clip_norm", minimum=0.0, strict_minimum=True,
                  allow_none=True)
    if not isinstance(_get(config, "optim.discriminator_lr_decay"), bool):
        _fail("optim.discriminator_lr_decay", "must be True or False")

    # ---- training loop
    for key in ("batch_size", "num_train_steps", "log_every_steps", "image_log_every_steps",
                "eval_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
        _check_positive_int(config, key)
    _check_positive_int(config, "num_eval_examples", allow_minus_one=True)
    _check_choice(config, "dtype", DTYPES)
    _check_choice(config, "conv_weight_gradient", CONV_WEIGHT_GRADIENTS)
    if not isinstance(_get(config, "init_from"), str):
        _fail("init_from", "must be '' (none) or a path")
    if config.init_from and not os.path.exists(config.init_from):
        _fail("init_from", f"{config.init_from}: no such file or folder")
    if not isinstance(config.get("init_from_allow_mismatch", False), bool):
        _fail("init_from_allow_mismatch", "must be True or False")
    seed = _get(config, "seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        _fail("seed", f"{seed!r} is not a non-negative integer")
    if num_devices is not None and config.batch_size % num_devices:
        _fail(
            "batch_size",
            f"{config.batch_size} is not divisible by the {num_devices} devices; the global "
            "batch is split evenly over devices",
        )

    # ---- multi-host (None lets jax.distributed.initialize() detect the cluster)
    if _get(config, "distributed.initialize"):
        num_processes = _get(config, "distributed.num_processes")
        process_id = _get(config, "distributed.process_id")
        if num_processes is not None and num_processes <= 0:
            _fail("distributed.num_processes", f"{num_processes!r} must be positive")
        if process_id is not None and (
            process_id < 0 or (num_processes is not None and process_id >= num_processes)
        ):
            _fail("distributed.process_id", f"{process_id!r} is outside [0, num_processes)")


def flatten_for_hparams(config: ml_collections.ConfigDict | Mapping[str, Any]) -> dict[str, Any]:
    """Flat `{"optim.learning_rate": 1e-4, ...}` with scalar values, for `write_hparams`."""
    flat: dict[str, Any] = {}

    def visit(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping | ml_collections.ConfigDict):
            items = node.items()
            for key, value in items:
                visit(f"{prefix}.{key}" if prefix else str(key), value)
        elif isinstance(node, bool | int | float | str):
            flat[prefix] = node
        else:
            flat[prefix] = str(node)

    visit("", config)
    return flat
