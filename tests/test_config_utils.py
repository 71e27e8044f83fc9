"""damono_jax.config_utils and configs/: every config validates, bad values name the key."""

import pytest

from configs import cityscapes, custom, default, synthetic, vkitti
from damono_jax import config_utils


def valid_config():
    config = vkitti.get_config()
    config.data.data_dir = "/data/tfds"
    return config


@pytest.mark.parametrize("module", [vkitti, cityscapes, synthetic, custom])
@pytest.mark.parametrize("variant", ["baseline", "seg", "full"])
def test_configs_and_variants_validate(module, variant):
    config = module.get_config(variant)
    config.data.data_dir = "/data/tfds"
    assert config.variant == variant
    config_utils.check(config)
    flags = config_utils.variant_flags(variant)
    assert flags["use_semantic"] == (variant != "baseline")
    assert flags["use_domain_classifier"] == (variant == "full")


def test_default_variant_is_full_and_keys_match_default():
    assert vkitti.get_config().variant == "full"
    keys = set(config_utils.flatten_for_hparams(default.get_config()))
    for module in (vkitti, cityscapes, synthetic, custom):
        assert set(config_utils.flatten_for_hparams(module.get_config())) == keys


def test_paper_settings():
    config = vkitti.get_config()
    assert config.data.source == "vkitti/v1" and config.data.target == "kitti_eigen"
    assert config.data.image_size == (192, 640) and config.data.max_depth == 80.0
    assert config.optim.learning_rate == 1e-4 and config.loss.l1_weight == 0.15
    assert cityscapes.get_config().data.source == "cityscapes_depth"
    assert synthetic.get_config().data.image_size == (64, 224)
    assert synthetic.get_config().batch_size == 4
    assert custom.get_config().data.source == "depth_folder/labelled"
    assert custom.get_config().data.target == "depth_folder/unlabelled"


def test_unknown_variant_argument():
    with pytest.raises(ValueError, match=r"unknown variant 'fancy'"):
        vkitti.get_config("fancy")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("data.image_size", (190, 640), r"config\.data\.image_size: \(190, 640\) is not a "
                                        r"multiple of 32"),
        ("data.image_size", (192,), r"config\.data\.image_size: .* not a \(height, width\)"),
        ("data.source", "nyu_depth", r"config\.data\.source: unknown dataset 'nyu_depth'"),
        ("data.source", "vkitti/v3", r"config\.data\.source: dataset 'vkitti/v3' needs one"),
        ("data.target", "kitti_eigen/x", r"config\.data\.target: dataset 'kitti_eigen/x' needs "
                                         r"one of the configs kitti_eigen, kitti_eigen/left"),
        ("data.source", "cityscapes_depth/x", r"config\.data\.source: dataset 'cityscapes_depth' "
                                              r"has no config 'x'"),
        ("data.data_dir", None, r"config\.data\.data_dir: is not set"),
        ("variant", "everything", r"config\.variant: unknown value 'everything'"),
        ("dtype", "float16", r"config\.dtype: unknown value 'float16'"),
        ("loss.l1_weight", 1.5, r"config\.loss\.l1_weight: 1\.5 must be <= 1\.0"),
        ("loss.seg_weight", -0.1, r"config\.loss\.seg_weight: -0\.1 must be >= 0\.0"),
        ("grl.schedule", "linear", r"config\.grl\.schedule: unknown value 'linear'"),
        ("optim.learning_rate", 0.0, r"config\.optim\.learning_rate: 0\.0 must be > 0\.0"),
        ("optim.decay_at_fraction", 1.5, r"config\.optim\.decay_at_fraction: 1\.5 must be"),
        ("num_train_steps", 0, r"config\.num_train_steps: 0 must be positive"),
        ("model.upsample_mode", "cubic", r"config\.model\.upsample_mode: unknown value"),
        ("model.min_depth", 200.0, r"config\.model\.min_depth: 200\.0 must be below"),
        ("data.max_depth", 0.0, r"config\.data\.max_depth: 0\.0 must be > 0\.0"),
        ("data.prefetch", 0, r"config\.data\.prefetch: 0 must be positive \(or -1\)"),
        ("data.shuffle_buffer", 0, r"config\.data\.shuffle_buffer: 0 must be positive"),
        ("seed", -1, r"config\.seed: -1 is not a non-negative integer"),
        ("model.num_classes", 0, r"config\.model\.num_classes: 0 must be positive"),
        ("model.discriminator_features", (), r"config\.model\.discriminator_features"),
        ("model.align_levels", (), r"config\.model\.align_levels: \(\) is not a tuple of "
                                   r"distinct levels .* \(empty only with "
                                   r"model\.output_alignment\)"),
        ("data.augment", "heavy", r"config\.data\.augment: unknown value 'heavy'; use one of "
                                  r"none, monodepth2, strong"),
        ("grl.warmup_fraction", 1.0, r"config\.grl\.warmup_fraction: 1\.0 is not a number in "
                                     r"\[0, 1\)"),
        ("model.domain_conditioning", "dann", r"config\.model\.domain_conditioning: unknown "
                                              r"value 'dann'"),
        ("loss.output_adv_weight", -1.0, r"config\.loss\.output_adv_weight: -1\.0 must be "
                                         r">= 0\.0"),
        ("init_from", "/nonexistent/run", r"config\.init_from: /nonexistent/run: no such file "
                                          r"or folder"),
        ("model.align_levels", (4, 4), r"config\.model\.align_levels"),
        ("model.align_levels", (5,), r"config\.model\.align_levels"),
        ("model.shared_block_grad", "average", r"config\.model\.shared_block_grad: unknown"),
    ],
)
def test_invalid_values_name_the_key(key, value, message):
    config = valid_config()
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
        node = node[parent]
    node[leaf] = value
    with pytest.raises(ValueError, match=message):
        config_utils.check(config)


def test_cdan_needs_the_semantic_decoder_and_the_bottleneck_alone():
    config = valid_config()
    config.model.domain_conditioning = "cdan"
    config_utils.check(config)
    config.model.align_levels = (3, 4)
    with pytest.raises(ValueError, match=r"config\.model\.domain_conditioning: 'cdan' "
                                         r"conditions the bottleneck classifier only; "
                                         r"model\.align_levels is \(3, 4\), use \(4,\)"):
        config_utils.check(config)
    config = vkitti.get_config("baseline")
    config.data.data_dir = "/data/tfds"
    config.model.domain_conditioning = "cdan"
    with pytest.raises(ValueError, match=r"'cdan' needs the semantic decoder; variant "
                                         r"'baseline' has none"):
        config_utils.check(config)


def test_output_alignment_alone_needs_no_feature_classifier():
    config = valid_config()
    config.model.output_alignment = True
    config.model.align_levels = ()
    config_utils.check(config)


def test_data_dir_not_needed_for_export_and_batch_must_split_over_devices():
    config = vkitti.get_config()
    config_utils.check(config, mode="export")
    config.data.data_dir = "/data"
    with pytest.raises(ValueError, match=r"config\.batch_size: 12 is not divisible by the 8"):
        config_utils.check(config, num_devices=8)
    config_utils.check(config, num_devices=4)


def test_target_only_checked_for_full_variant():
    config = vkitti.get_config("seg")
    config.data.data_dir = "/data"
    config.data.target = "unknown_target"
    config_utils.check(config)
    config.variant = "full"
    with pytest.raises(ValueError, match=r"config\.data\.target: unknown dataset"):
        config_utils.check(config)


@pytest.mark.parametrize("target", ["kitti_eigen", "kitti_eigen/left", "kitti_eigen/stereo",
                                    "kitti_eigen/custom"])
def test_kitti_eigen_builder_configs_are_accepted(target):
    config = valid_config()
    config.data.target = target
    config.data.eval = target
    config_utils.check(config)


def test_prefetch_accepts_autotune():
    config = valid_config()
    config.data.prefetch = -1  # tf.data.AUTOTUNE
    config_utils.check(config)
