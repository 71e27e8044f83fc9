"""Weight import from PyTorch: torchvision's ResNet-18 and Monodepth2's encoder/depth pair.

Files are read with `torch.load(path, map_location="cpu", weights_only=True)` (no pickled
code runs). PyTorch is needed only here and is imported lazily. Every key of the file must be
known and every expected key present with the right shape; otherwise a `ValueError` names
the file and the key.

Layout conversions: conv weights OIHW -> HWIO; BatchNorm `weight`/`bias` -> `scale`/`bias`
(params), `running_mean`/`running_var` -> `mean`/`var` (batch_stats). `num_batches_tracked`
(absent in old files) and torchvision's classifier `fc.weight`/`fc.bias` are dropped.
"""

import functools
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from damono_jax.models.decoders import DECODER_CHANNELS, NUM_SCALES
from damono_jax.models.resnet import ENCODER_CHANNELS, ResNet18Encoder

Variables = dict[str, Any]

_TORCHVISION_IGNORED_KEYS = ("fc.weight", "fc.bias")
_MONODEPTH2_METADATA_KEYS = ("height", "width", "use_stereo")
_MONODEPTH2_ENCODER_PREFIX = "encoder."
# Monodepth2's DepthDecoder registers its ConvBlocks in nn.ModuleList `decoder` in the order
# upconv(4,0), upconv(4,1), upconv(3,0), ..., upconv(0,1) (indices 0..9), then
# dispconv(s) for s = 0..3 (indices 10..13). A ConvBlock's conv is `<i>.conv.conv`, a bare
# Conv3x3 is `<i>.conv` (nianticlabs/monodepth2 networks/depth_decoder.py, layers.py).
_MONODEPTH2_NUM_UPCONVS = 10


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as error:  # torch is a test/extra dependency, not a runtime one
        raise ImportError(
            "reading PyTorch .pth files needs torch: pip install 'damono_jax[test]' or torch"
        ) from error
    return torch


def _read_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Loads a .pth state dict (weights_only) and returns {key: numpy array or metadata}."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such weight file")
    torch = _import_torch()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types (pickle, zip, RuntimeError)
        raise ValueError(f"{path}: cannot be read as a PyTorch state dict: {error}") from error
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict (a mapping), got {type(state).__name__}")
    converted: dict[str, Any] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise ValueError(f"{path}: key {key!r} is not a string")
        if isinstance(value, torch.Tensor):
            converted[key] = value.detach().cpu().numpy()
        else:
            converted[key] = value
    return converted


def _torch_module_name(flax_module_path: tuple[str, ...]) -> str:
    """Maps an encoder module path ('layer2_0', 'downsample_conv') to torchvision's name."""
    parts = []
    for name in flax_module_path:
        if name.startswith("layer"):
            parts.extend(name.split("_"))  # layer2_0 -> layer2.0
        elif name == "downsample_conv":
            parts.extend(["downsample", "0"])
        elif name == "downsample_bn":
            parts.extend(["downsample", "1"])
        else:
            parts.append(name)
    return ".".join(parts)


_ENCODER_LEAF_NAMES = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


@functools.cache
def _encoder_layout() -> dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]]:
    """torchvision key -> (collection, flax path inside the encoder, flax shape)."""
    abstract = jax.eval_shape(
        ResNet18Encoder().init, jax.random.key(0), jnp.zeros((1, 64, 64, 3), jnp.float32)
    )
    layout = {}
    for collection in ("params", "batch_stats"):
        leaves = jax.tree_util.tree_flatten_with_path(abstract[collection])[0]
        for key_path, leaf in leaves:
            path = tuple(entry.key for entry in key_path)
            torch_key = (
                f"{_torch_module_name(path[:-1])}."
                f"{_ENCODER_LEAF_NAMES[(collection, path[-1])]}"
            )
            layout[torch_key] = (collection, path, tuple(leaf.shape))
    return layout


def _to_flax_layout(array: np.ndarray) -> np.ndarray:
    """OIHW conv weight -> HWIO; other arrays unchanged."""
    return np.transpose(array, (2, 3, 1, 0)) if array.ndim == 4 else array


def _torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(flax_shape) == 4:
        height, width, cin, cout = flax_shape
        return (cout, cin, height, width)
    return flax_shape


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def _take_array(
    state: Mapping[str, Any], key: str, flax_shape: tuple[int, ...], path: str, shown_key: str
) -> jax.Array:
    """Checks the dtype and shape of `state[key]` and returns it in flax layout as float32."""
    value = state[key]
    if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
        raise ValueError(f"{path}: key {shown_key!r} is not a floating-point tensor")
    expected = _torch_shape(flax_shape)
    if tuple(value.shape) != expected:
        raise ValueError(
            f"{path}: key {shown_key!r} has shape {tuple(value.shape)}, expected {expected}"
        )
    return jnp.asarray(_to_flax_layout(value).astype(np.float32))


def _check_key_set(
    path: str,
    present: set[str],
    expected: set[str],
    optional: set[str],
    prefix: str = "",
) -> None:
    missing = sorted(expected - present)
    unknown = sorted(present - expected - optional)
    if missing:
        raise ValueError(
            f"{path}: missing key {prefix + missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    if unknown:
        raise ValueError(
            f"{path}: unknown key {prefix + unknown[0]!r}"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
        )


def _convert_encoder(state: Mapping[str, Any], path: str, prefix: str = "") -> Variables:
    """Converts torchvision-named encoder arrays (keys without `prefix`) to flax variables."""
    layout = _encoder_layout()
    optional = set(_TORCHVISION_IGNORED_KEYS) | {
        key for key in state if key.endswith(".num_batches_tracked")
    }
    _check_key_set(path, set(state), set(layout), optional, prefix)
    variables: Variables = {"params": {}, "batch_stats": {}}
    for key, (collection, flax_path, shape) in layout.items():
        _set_path(
            variables[collection], flax_path, _take_array(state, key, shape, path, prefix + key)
        )
    return variables


def load_torchvision_resnet18(path: str | os.PathLike[str]) -> Variables:
    """Reads a torchvision ResNet-18 state dict (e.g. `resnet18-f37072fd.pth`).

    Returns:
      {"params": ..., "batch_stats": ...} for `ResNet18Encoder`, i.e. the subtrees that go
      under `variables["params"]["encoder"]` and `variables["batch_stats"]["encoder"]`.
      float32 jax arrays; `fc.*` and `num_batches_tracked` are dropped.

    Raises:
      FileNotFoundError: no file at `path`.
      ValueError: unreadable file, missing/unknown key or shape mismatch (names the key).
    """
    shown = os.fspath(path)
    state = _read_state_dict(path)
    if state and all(key.startswith(_MONODEPTH2_ENCODER_PREFIX) for key in state):
        raise ValueError(
            f"{shown}: keys start with 'encoder.': this is a Monodepth2 encoder.pth, "
            "use load_monodepth2(encoder_path, depth_path)"
        )
    return _convert_encoder(state, shown)


def _monodepth2_decoder_layout() -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    """Monodepth2 depth.pth key -> (flax param path, flax shape) for DepthNet."""
    layout = {}
    for index in range(_MONODEPTH2_NUM_UPCONVS):
        block = 4 - index // 2
        conv = index % 2
        features = DECODER_CHANNELS[block]
        if conv == 0:
            in_channels = ENCODER_CHANNELS[4] if block == 4 else DECODER_CHANNELS[block + 1]
        else:
            in_channels = features + (ENCODER_CHANNELS[block - 1] if block > 0 else 0)
        module = ("shared_block",) if block == 4 else ("depth_decoder", f"block_{block}")
        prefix = f"decoder.{index}.conv.conv"
        layout[f"{prefix}.weight"] = ((*module, f"conv_{conv}", "kernel"),
                                      (3, 3, in_channels, features))
        layout[f"{prefix}.bias"] = ((*module, f"conv_{conv}", "bias"), (features,))
    for scale in range(NUM_SCALES):
        prefix = f"decoder.{_MONODEPTH2_NUM_UPCONVS + scale}.conv"
        path = ("depth_decoder", f"output_conv_{scale}")
        layout[f"{prefix}.weight"] = ((*path, "kernel"), (3, 3, DECODER_CHANNELS[scale], 1))
        layout[f"{prefix}.bias"] = ((*path, "bias"), (1,))
    return layout


def read_monodepth2_image_size(encoder_path: str | os.PathLike[str]) -> tuple[int, int]:
    """Returns the (height, width) a Monodepth2 model was trained at, from its encoder.pth."""
    shown = os.fspath(encoder_path)
    state = _read_state_dict(encoder_path)
    return _monodepth2_image_size(state, shown)


def _monodepth2_image_size(state: Mapping[str, Any], path: str) -> tuple[int, int]:
    size = []
    for key in ("height", "width"):
        if key not in state:
            raise ValueError(f"{path}: missing key {key!r}")
        value = state[key]
        if isinstance(value, np.ndarray) and value.size == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{path}: key {key!r} is {value!r}, expected a positive int")
        size.append(value)
    return size[0], size[1]


def load_monodepth2(
    encoder_path: str | os.PathLike[str], depth_path: str | os.PathLike[str]
) -> Variables:
    """Reads a Monodepth2 `encoder.pth` + `depth.pth` pair into `DepthNet` variables.

    Use the result with `DepthNet(upsample_mode="nearest")` (Monodepth2 upsamples with
    nearest neighbour). `encoder.pth` holds "encoder.<torchvision key>" plus "height",
    "width" and "use_stereo" (see `read_monodepth2_image_size`); `depth.pth` holds
    "decoder.<i>.conv.conv.{weight,bias}" for the ten ConvBlocks upconv(4,0), upconv(4,1),
    ..., upconv(0,1) and "decoder.<10+s>.conv.{weight,bias}" for dispconv s = 0..3.

    Returns:
      {"params": {"encoder", "shared_block", "depth_decoder"}, "batch_stats": {"encoder"}}.

    Raises:
      FileNotFoundError: a file is missing.
      ValueError: unreadable file, missing/unknown key or shape mismatch (names file and key).
    """
    encoder_shown = os.fspath(encoder_path)
    depth_shown = os.fspath(depth_path)
    encoder_state = _read_state_dict(encoder_path)
    for key in _MONODEPTH2_METADATA_KEYS:
        if key not in encoder_state:
            raise ValueError(f"{encoder_shown}: missing key {key!r}")
    _monodepth2_image_size(encoder_state, encoder_shown)
    unprefixed = sorted(
        key
        for key in encoder_state
        if key not in _MONODEPTH2_METADATA_KEYS and not key.startswith(_MONODEPTH2_ENCODER_PREFIX)
    )
    if unprefixed:
        raise ValueError(
            f"{encoder_shown}: unknown key {unprefixed[0]!r} (Monodepth2 encoder keys start "
            f"with {_MONODEPTH2_ENCODER_PREFIX!r})"
        )
    encoder_arrays = {
        key[len(_MONODEPTH2_ENCODER_PREFIX):]: value
        for key, value in encoder_state.items()
        if key.startswith(_MONODEPTH2_ENCODER_PREFIX)
    }
    encoder = _convert_encoder(encoder_arrays, encoder_shown, _MONODEPTH2_ENCODER_PREFIX)

    depth_state = _read_state_dict(depth_path)
    layout = _monodepth2_decoder_layout()
    _check_key_set(depth_shown, set(depth_state), set(layout), set())
    params: dict[str, Any] = {"encoder": encoder["params"]}
    for key, (flax_path, shape) in layout.items():
        _set_path(params, flax_path, _take_array(depth_state, key, shape, depth_shown, key))
    return {"params": params, "batch_stats": {"encoder": encoder["batch_stats"]}}


def _check_same_structure(
    loaded: Any, current: Any, where: str, source: str
) -> None:
    loaded_leaves = jax.tree_util.tree_flatten_with_path(loaded)[0]
    current_leaves = dict(jax.tree_util.tree_flatten_with_path(current)[0])
    loaded_paths = {path for path, _ in loaded_leaves}
    if loaded_paths != set(current_leaves):
        raise ValueError(
            f"{source}: the encoder in {where} does not have the ResNet-18 layout "
            f"({len(current_leaves)} arrays, the file gives {len(loaded_paths)})"
        )
    for path, value in loaded_leaves:
        if tuple(value.shape) != tuple(current_leaves[path].shape):
            raise ValueError(
                f"{source}: {where}{jax.tree_util.keystr(path)} has shape "
                f"{tuple(current_leaves[path].shape)}, the file gives {tuple(value.shape)}"
            )


def init_encoder_from_config(variables: Mapping[str, Any], model_config: Any) -> Variables:
    """Honours `config.model.encoder_init` on freshly initialised model variables.

    "scratch" returns `variables` unchanged (as a new top-level dict). Any other value is
    the path of a torchvision ResNet-18 state dict: `params["encoder"]` and
    `batch_stats["encoder"]` are replaced by its weights (float32, on the default device;
    shard the result as the rest of the state). The input is not modified.

    Args:
      variables: `{"params": {"encoder": ..., ...}, "batch_stats": {"encoder": ...}}` of
        `DAMonodepth` or `DepthNet`.
      model_config: `config.model`.
    """
    if "encoder_init" not in model_config:
        raise KeyError("config.model.encoder_init is missing")
    encoder_init = model_config["encoder_init"]
    if not isinstance(encoder_init, str) or not encoder_init:
        raise ValueError(
            f"config.model.encoder_init: {encoder_init!r} is not 'scratch' or a file path"
        )
    if encoder_init == "scratch":
        return dict(variables)
    for collection in ("params", "batch_stats"):
        if collection not in variables or "encoder" not in variables[collection]:
            raise KeyError(f"variables[{collection!r}] has no 'encoder' subtree to initialise")
    loaded = load_torchvision_resnet18(encoder_init)
    for collection in ("params", "batch_stats"):
        _check_same_structure(
            loaded[collection],
            variables[collection]["encoder"],
            f"variables[{collection!r}]['encoder']",
            encoder_init,
        )
    result = dict(variables)
    for collection in ("params", "batch_stats"):
        result[collection] = {**variables[collection], "encoder": loaded[collection]}
    return result
