"""Weight import: parity with a torch.nn.functional ResNet-18 / Monodepth2 forward, errors."""

import math
import pickle

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from damono_jax import pretrained
from damono_jax.models import DAMonodepth, DepthNet, ResNet18Encoder
from tests import helpers

HEIGHT, WIDTH = 64, 128
PARITY_TOLERANCE = 1e-4


# ------------------------------------------------------------- random state dicts


def _random_monodepth2_decoder_state(seed: int = 1) -> dict[str, torch.Tensor]:
    """Monodepth2 depth.pth keys: decoder.<0..9>.conv.conv.* then decoder.<10+s>.conv.*."""
    generator = torch.Generator().manual_seed(seed)
    encoder_channels = (64, 64, 128, 256, 512)
    decoder_channels = (16, 32, 64, 128, 256)
    state: dict[str, torch.Tensor] = {}

    def conv(name, out_channels, in_channels):
        std = math.sqrt(1.0 / (9 * in_channels))
        state[f"{name}.weight"] = torch.randn(out_channels, in_channels, 3, 3, generator=generator)
        state[f"{name}.weight"] *= std
        state[f"{name}.bias"] = torch.randn(out_channels, generator=generator) * 0.1

    index = 0
    for i in range(4, -1, -1):
        in_channels = encoder_channels[4] if i == 4 else decoder_channels[i + 1]
        conv(f"decoder.{index}.conv.conv", decoder_channels[i], in_channels)
        skip = encoder_channels[i - 1] if i > 0 else 0
        conv(f"decoder.{index + 1}.conv.conv", decoder_channels[i], decoder_channels[i] + skip)
        index += 2
    for scale in range(4):
        conv(f"decoder.{10 + scale}.conv", 1, decoder_channels[scale])
    return state


def _monodepth2_encoder_state(resnet_state: dict[str, torch.Tensor]) -> dict:
    state = {f"encoder.{key}": value for key, value in resnet_state.items()}
    state.update({"height": HEIGHT, "width": WIDTH, "use_stereo": False})
    return state


# ------------------------------------------------------- torch.nn.functional reference


def _torch_encoder(state: dict[str, torch.Tensor], images: torch.Tensor) -> list[torch.Tensor]:
    """torchvision ResNet-18 (eval mode) with Monodepth2's input normalisation, 5 features."""

    def batch_norm(x, name):
        return F.batch_norm(
            x,
            state[f"{name}.running_mean"],
            state[f"{name}.running_var"],
            state[f"{name}.weight"],
            state[f"{name}.bias"],
            training=False,
            eps=1e-5,
        )

    x = (images - 0.45) / 0.225
    x = F.relu(batch_norm(F.conv2d(x, state["conv1.weight"], stride=2, padding=3), "bn1"))
    features = [x]
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    for layer in range(1, 5):
        for block in range(2):
            prefix = f"layer{layer}.{block}"
            stride = 2 if layer > 1 and block == 0 else 1
            out = F.conv2d(x, state[f"{prefix}.conv1.weight"], stride=stride, padding=1)
            out = F.relu(batch_norm(out, f"{prefix}.bn1"))
            out = batch_norm(
                F.conv2d(out, state[f"{prefix}.conv2.weight"], padding=1), f"{prefix}.bn2"
            )
            identity = x
            if f"{prefix}.downsample.0.weight" in state:
                identity = F.conv2d(x, state[f"{prefix}.downsample.0.weight"], stride=stride)
                identity = batch_norm(identity, f"{prefix}.downsample.1")
            x = F.relu(out + identity)
        features.append(x)
    return features


def _torch_depth_decoder(
    state: dict[str, torch.Tensor], features: list[torch.Tensor], mode: str
) -> list[torch.Tensor]:
    """Monodepth2 DepthDecoder forward; returns sigmoid disparities at scales 0..3."""

    def conv3x3(x, name):
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(padded, state[f"{name}.weight"], state[f"{name}.bias"])

    outputs: list[torch.Tensor | None] = [None] * 4
    x = features[4]
    for i in range(4, -1, -1):
        index = 2 * (4 - i)
        x = F.elu(conv3x3(x, f"decoder.{index}.conv.conv"))
        if mode == "nearest":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        else:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        if i > 0:
            x = torch.cat([x, features[i - 1]], dim=1)
        x = F.elu(conv3x3(x, f"decoder.{index + 1}.conv.conv"))
        if i < 4:
            outputs[i] = torch.sigmoid(conv3x3(x, f"decoder.{10 + i}.conv"))
    return outputs


def _max_relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|."""
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def _nchw(array: jax.Array) -> np.ndarray:
    return np.transpose(np.asarray(array), (0, 3, 1, 2))


# ----------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("weights")
    resnet_state = helpers.random_resnet18_state()
    decoder_state = _random_monodepth2_decoder_state()
    paths = {
        "resnet18": directory / "resnet18-random.pth",
        "encoder": directory / "encoder.pth",
        "depth": directory / "depth.pth",
    }
    torch.save(resnet_state, paths["resnet18"])
    torch.save(_monodepth2_encoder_state(resnet_state), paths["encoder"])
    torch.save(decoder_state, paths["depth"])
    return {"paths": paths, "resnet": resnet_state, "decoder": decoder_state}


# ------------------------------------------------------------------------- parity


def test_monodepth2_parity_encoder_features_and_disparities(weight_files):
    paths = weight_files["paths"]
    variables = pretrained.load_monodepth2(paths["encoder"], paths["depth"])
    assert set(variables["params"]) == {"encoder", "shared_block", "depth_decoder"}
    assert set(variables["batch_stats"]) == {"encoder"}

    images = np.random.default_rng(0).uniform(0.0, 1.0, (2, HEIGHT, WIDTH, 3)).astype(np.float32)
    is_encoder = lambda module, method_name: isinstance(module, ResNet18Encoder)  # noqa: E731

    @jax.jit
    def forward(variables, images):
        disps_nearest, state = DepthNet(upsample_mode="nearest").apply(
            variables, images, capture_intermediates=is_encoder
        )
        disps_bilinear = DepthNet(upsample_mode="bilinear").apply(variables, images)
        features = state["intermediates"]["encoder"]["__call__"][0]
        return features, disps_nearest, disps_bilinear

    features, disps_nearest, disps_bilinear = forward(variables, jnp.asarray(images))

    with torch.no_grad():
        torch_images = torch.from_numpy(np.transpose(images, (0, 3, 1, 2)).copy())
        torch_features = _torch_encoder(weight_files["resnet"], torch_images)
        torch_nearest = _torch_depth_decoder(weight_files["decoder"], torch_features, "nearest")
        torch_bilinear = _torch_depth_decoder(weight_files["decoder"], torch_features, "bilinear")

    errors = {}
    for index, (ours, theirs) in enumerate(zip(features, torch_features, strict=True)):
        assert _nchw(ours).shape == tuple(theirs.shape)
        errors[f"feature_{index}"] = _max_relative_error(_nchw(ours), theirs.numpy())
    for mode, ours_list, theirs_list in (
        ("nearest", disps_nearest, torch_nearest),
        ("bilinear", disps_bilinear, torch_bilinear),
    ):
        for scale, (ours, theirs) in enumerate(zip(ours_list, theirs_list, strict=True)):
            assert _nchw(ours).shape == tuple(theirs.shape)
            errors[f"disp_{scale}_{mode}"] = _max_relative_error(_nchw(ours), theirs.numpy())
    print("max relative errors vs torch:", {k: f"{v:.2e}" for k, v in errors.items()})
    assert max(errors.values()) <= PARITY_TOLERANCE, errors
    # Nearest and bilinear upsampling genuinely differ, so each parity check is meaningful.
    assert _max_relative_error(np.asarray(disps_bilinear[0]), np.asarray(disps_nearest[0])) > 1e-3


def test_torchvision_loader_matches_monodepth2_encoder(weight_files):
    paths = weight_files["paths"]
    torchvision = pretrained.load_torchvision_resnet18(paths["resnet18"])
    monodepth2 = pretrained.load_monodepth2(paths["encoder"], paths["depth"])
    assert jax.tree.structure(torchvision["params"]) == jax.tree.structure(
        monodepth2["params"]["encoder"]
    )
    for ours, theirs in zip(
        jax.tree.leaves(torchvision), jax.tree.leaves(
            {"params": monodepth2["params"]["encoder"],
             "batch_stats": monodepth2["batch_stats"]["encoder"]}
        ),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    # Layout conversions, checked on single entries.
    state = weight_files["resnet"]
    np.testing.assert_array_equal(
        np.asarray(torchvision["params"]["layer2_0"]["downsample_conv"]["kernel"]),
        state["layer2.0.downsample.0.weight"].numpy().transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        np.asarray(torchvision["batch_stats"]["layer4_1"]["bn2"]["var"]),
        state["layer4.1.bn2.running_var"].numpy(),
    )
    np.testing.assert_array_equal(
        np.asarray(torchvision["params"]["layer3_0"]["downsample_bn"]["scale"]),
        state["layer3.0.downsample.1.weight"].numpy(),
    )
    assert pretrained.read_monodepth2_image_size(paths["encoder"]) == (HEIGHT, WIDTH)


# ------------------------------------------------------------------------- errors


def _save(tmp_path, name, state):
    path = tmp_path / name
    torch.save(state, path)
    return path


def test_torchvision_loader_errors(tmp_path, weight_files):
    state = weight_files["resnet"]
    with pytest.raises(FileNotFoundError, match="nope.pth: no such weight file"):
        pretrained.load_torchvision_resnet18(tmp_path / "nope.pth")

    missing = {k: v for k, v in state.items() if k != "layer3.1.bn2.running_var"}
    path = _save(tmp_path, "missing.pth", missing)
    with pytest.raises(ValueError, match=r"missing.pth: missing key 'layer3.1.bn2.running_var'"):
        pretrained.load_torchvision_resnet18(path)

    path = _save(tmp_path, "unknown.pth", {**state, "layer5.0.conv1.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"unknown.pth: unknown key 'layer5.0.conv1.weight'"):
        pretrained.load_torchvision_resnet18(path)

    path = _save(tmp_path, "shape.pth", {**state, "conv1.weight": torch.zeros(64, 3, 5, 5)})
    with pytest.raises(
        ValueError,
        match=r"shape.pth: key 'conv1.weight' has shape \(64, 3, 5, 5\), expected \(64, 3, 7, 7\)",
    ):
        pretrained.load_torchvision_resnet18(path)

    path = _save(tmp_path, "dtype.pth", {**state, "bn1.weight": torch.ones(64, dtype=torch.long)})
    with pytest.raises(ValueError, match="dtype.pth: key 'bn1.weight' is not a floating-point"):
        pretrained.load_torchvision_resnet18(path)

    path = _save(tmp_path, "list.pth", [1, 2, 3])
    with pytest.raises(ValueError, match="list.pth: expected a state dict"):
        pretrained.load_torchvision_resnet18(path)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth: cannot be read as a PyTorch state dict"):
        pretrained.load_torchvision_resnet18(garbage)

    with pytest.raises(ValueError, match="this is a Monodepth2 encoder.pth"):
        pretrained.load_torchvision_resnet18(
            _save(tmp_path, "md2.pth", {f"encoder.{k}": v for k, v in state.items()})
        )


class _NotATensor:
    """A pickled class instance: torch.load(weights_only=True) must refuse it."""


def test_loader_uses_weights_only(tmp_path, weight_files):
    path = tmp_path / "code.pth"
    with open(path, "wb") as file:
        pickle.dump({"conv1.weight": _NotATensor()}, file, protocol=2)
    with pytest.raises(ValueError, match="code.pth: cannot be read as a PyTorch state dict"):
        pretrained.load_torchvision_resnet18(path)


def test_monodepth2_loader_errors(tmp_path, weight_files):
    paths = weight_files["paths"]
    encoder_state = _monodepth2_encoder_state(weight_files["resnet"])
    decoder_state = weight_files["decoder"]

    no_height = {k: v for k, v in encoder_state.items() if k != "height"}
    path = _save(tmp_path, "enc_height.pth", no_height)
    with pytest.raises(ValueError, match=r"enc_height.pth: missing key 'height'"):
        pretrained.load_monodepth2(path, paths["depth"])

    no_conv = {k: v for k, v in encoder_state.items() if k != "encoder.layer1.0.conv1.weight"}
    path = _save(tmp_path, "enc_missing.pth", no_conv)
    with pytest.raises(
        ValueError, match=r"enc_missing.pth: missing key 'encoder.layer1.0.conv1.weight'"
    ):
        pretrained.load_monodepth2(path, paths["depth"])

    path = _save(tmp_path, "enc_unknown.pth", {**encoder_state, "decoder.0.weight": torch.ones(1)})
    with pytest.raises(ValueError, match=r"enc_unknown.pth: unknown key 'decoder.0.weight'"):
        pretrained.load_monodepth2(path, paths["depth"])

    path = _save(tmp_path, "enc_size.pth", {**encoder_state, "width": "wide"})
    with pytest.raises(ValueError, match=r"enc_size.pth: key 'width' is 'wide'"):
        pretrained.load_monodepth2(path, paths["depth"])

    bad = {**decoder_state, "decoder.10.conv.weight": torch.zeros(1, 32, 3, 3)}
    path = _save(tmp_path, "depth_shape.pth", bad)
    with pytest.raises(
        ValueError,
        match=r"depth_shape.pth: key 'decoder.10.conv.weight' has shape \(1, 32, 3, 3\), "
        r"expected \(1, 16, 3, 3\)",
    ):
        pretrained.load_monodepth2(paths["encoder"], path)

    missing = {k: v for k, v in decoder_state.items() if k != "decoder.13.conv.bias"}
    path = _save(tmp_path, "depth_missing.pth", missing)
    with pytest.raises(ValueError, match=r"depth_missing.pth: missing key 'decoder.13.conv.bias'"):
        pretrained.load_monodepth2(paths["encoder"], path)

    path = _save(tmp_path, "depth_unknown.pth", {**decoder_state, "decoder.14.conv.weight": 0})
    with pytest.raises(ValueError, match=r"depth_unknown.pth: unknown key 'decoder.14.conv"):
        pretrained.load_monodepth2(paths["encoder"], path)

    with pytest.raises(FileNotFoundError, match="absent.pth: no such weight file"):
        pretrained.load_monodepth2(paths["encoder"], tmp_path / "absent.pth")


# ------------------------------------------------------------- config.encoder_init


def _random_da_variables():
    model = DAMonodepth(use_semantic=False, use_domain_classifier=False)
    images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    abstract = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)
    rng = np.random.default_rng(5)
    return jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), jnp.float32), abstract)


def test_init_encoder_from_config(weight_files):
    variables = _random_da_variables()
    config = ml_collections.ConfigDict({"encoder_init": "scratch"})
    unchanged = pretrained.init_encoder_from_config(variables, config)
    assert unchanged is not variables
    assert all(unchanged[key] is variables[key] for key in ("params", "batch_stats"))

    config.encoder_init = str(weight_files["paths"]["resnet18"])
    updated = pretrained.init_encoder_from_config(variables, config)
    loaded = pretrained.load_torchvision_resnet18(config.encoder_init)
    for collection in ("params", "batch_stats"):
        for ours, theirs in zip(
            jax.tree.leaves(updated[collection]["encoder"]),
            jax.tree.leaves(loaded[collection]),
            strict=True,
        ):
            np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    for part in ("shared_block", "depth_decoder"):
        assert updated["params"][part] is variables["params"][part]
    # The input is left untouched.
    assert not np.array_equal(
        np.asarray(variables["params"]["encoder"]["conv1"]["kernel"]),
        np.asarray(updated["params"]["encoder"]["conv1"]["kernel"]),
    )

    config.encoder_init = "/nonexistent/resnet18.pth"
    with pytest.raises(FileNotFoundError, match="/nonexistent/resnet18.pth: no such weight file"):
        pretrained.init_encoder_from_config(variables, config)
    config.encoder_init = ""
    with pytest.raises(ValueError, match="config.model.encoder_init: '' is not 'scratch'"):
        pretrained.init_encoder_from_config(variables, config)
    with pytest.raises(KeyError, match="config.model.encoder_init is missing"):
        pretrained.init_encoder_from_config(variables, ml_collections.ConfigDict())
