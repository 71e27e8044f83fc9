"""Default configuration for DA-Monodepth training (paper §4.1, Monodepth2 defaults).

Dataset-specific files (`vkitti.py`, `cityscapes.py`, `synthetic.py`) import this and
override the `data` block. Every key used anywhere in the code is declared here, so a
locked config rejects typos (`--config.optim.learnig_rate=...` is an error).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """Returns the full DA model configuration (the paper's `full` row)."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    # Start from another run's weights (a training workdir, one of its checkpoint folders, or
    # an export): parameters and BatchNorm statistics present in both are loaded, the rest
    # initialised fresh, the optimiser starts anew. A run's own checkpoint still comes first.
    config.init_from = ""
    # A source trained with another model.upsample_mode, classifier widths or image size
    # stops the run (the weights would mean something else) unless this is True; then each
    # difference is logged.
    config.init_from_allow_mismatch = False
    # Which row of the paper's ablation (Tables 3/4) this config trains:
    #   baseline: encoder + depth decoder, source images and depth only;
    #   seg:      + semantic decoder (shared first block), source labels;
    #   full:     + GRL and domain classifier, unlabelled target images.
    config.variant = "full"

    # ---------------------------------------------------------------- data
    config.data = ml_collections.ConfigDict()
    config.data.data_dir = ml_collections.FieldReference(None, field_type=str)  # TFDS data_dir
    # TFDS names ("name" or "name/config") and splits of the three streams.
    config.data.source = "vkitti/v1"
    config.data.source_split = "train"
    config.data.target = "kitti_eigen"
    config.data.target_split = "train"
    config.data.eval = "kitti_eigen"
    config.data.eval_split = "val"
    config.data.image_size = (192, 640)  # (height, width), multiples of 32
    config.data.max_depth = 80.0  # source GT beyond this (metres) is masked out of the losses
    # Augmentation of both training streams: "monodepth2" (flip, p 0.5, and colour jitter,
    # p 0.5, 0.8-1.2 / hue 0.1), "strong" (flip and SimCLR's colour distortion, grayscale and
    # Gaussian blur: damono_jax/preprocessing.py) or "none".
    config.data.augment = "monodepth2"
    config.data.shuffle_buffer = 2048
    config.data.num_parallel_calls = -1  # tf.data.AUTOTUNE
    config.data.prefetch = 2  # batches prefetched to device
    config.data.cache = False  # cache decoded examples in memory (small datasets only)
    # Fourier Domain Adaptation (damono_jax/fda.py, beyond the paper): each source image takes
    # the low-frequency amplitude of a target image, window floor(beta * min(H, W)); 0 = off.
    config.data.fda_beta = 0.0

    # --------------------------------------------------------------- model
    config.model = ml_collections.ConfigDict()
    config.model.num_classes = 19  # Cityscapes train ids; 255 is ignored
    config.model.upsample_mode = "bilinear"  # paper; "nearest" = Monodepth2 weight parity
    config.model.encoder_init = "scratch"  # or a path to a torchvision resnet18 .pth file
    config.model.shared_block_grad = "mean"  # "mean" (paper) or "sum"
    config.model.discriminator_features = (256, 128)  # PatchGAN widths after the input conv
    # Encoder features with a GRL + classifier each: 0 = conv1, 1-4 = layer1-4 (4 = bottleneck,
    # the paper's only one; docs/ablation_synthetic.md measures the others).
    config.model.align_levels = (4,)
    # Source and target BatchNorm statistics kept apart in the encoder (variant full; beyond
    # the paper, which normalises [source; target] as one batch).
    config.model.domain_specific_bn = False
    # Spectral normalisation of every domain classifier's convolutions (Miyato et al. 2018).
    config.model.discriminator_spectral_norm = False
    # Output-space alignment (AdaptSegNet, Tsai et al. 2018; beyond the paper): the decoders
    # also run on the target batch, and a PatchGAN behind a GRL classifies the scale-0
    # disparity (plus the semantic softmax when that decoder exists). Its widths are
    # AdaptSegNet's discriminator's.
    config.model.output_alignment = False
    config.model.output_discriminator_features = (64, 128, 256, 512)
    # What conditions the bottleneck classifier: "none" (the paper) or "cdan" (Long et al.
    # 2018: the randomized multilinear map of the bottleneck and the semantic decoder's
    # softmax, `cdan_features` wide; needs the semantic decoder).
    config.model.domain_conditioning = "none"
    config.model.cdan_features = 1024
    # disp_to_depth range: depth = 1 / (1/max_depth + (1/min_depth - 1/max_depth) * sigmoid).
    # Supervised training needs the GT's sigmoid targets away from 0: with Monodepth2's 0.1 m,
    # 5-80 m maps to sigmoid 0.0003-0.019, SSIM's constants swamp the signal and the output
    # collapsed to sigmoid 0 (depth 100 m everywhere) on synthetic_driving; 1 m maps it to
    # 0.003-0.19 and trains (docs/training.md, "Depth range"). Use 0.1 for Monodepth2 weights.
    config.model.min_depth = 1.0
    config.model.max_depth = 100.0

    # ---------------------------------------------------------------- loss
    config.loss = ml_collections.ConfigDict()
    config.loss.depth_weight = 1.0  # lambda_depth
    config.loss.seg_weight = 0.1  # lambda_seg
    config.loss.adv_weight = 0.1  # lambda_adv
    config.loss.output_adv_weight = 0.001  # output-space alignment (AdaptSegNet's lambda_adv)
    config.loss.l1_weight = 0.15  # lambda_1: (1 - l1) * SSIM + l1 * L1
    config.loss.smoothness_weight = 1e-3  # lambda_2, divided by 2**scale

    # ------------------------------------------------------- GRL schedule
    config.grl = ml_collections.ConfigDict()
    config.grl.schedule = "dann"  # "dann": 2 / (1 + exp(-gamma p)) - 1, or "constant"
    config.grl.gamma = 10.0
    config.grl.max_scale = 1.0
    # The GRL scale is held at 0 for this fraction of training; the schedule runs over the rest.
    config.grl.warmup_fraction = 0.0
    # Steps a collapse must hold before a warning: classifier acc >= 0.99 or loss ~ ln 2 (GRL),
    # or a constant depth output (train.monitors.DepthCollapseMonitor, every variant).
    config.grl.collapse_patience = 200

    # ----------------------------------------------------------- optimiser
    config.optim = ml_collections.ConfigDict()
    config.optim.learning_rate = 1e-4
    config.optim.b1 = 0.9
    config.optim.b2 = 0.999
    config.optim.decay_at_fraction = 0.75  # Monodepth2 step decay x0.1 at 3/4 of training
    config.optim.decay_factor = 0.1
    config.optim.discriminator_learning_rate = ml_collections.FieldReference(None, field_type=float)
    # False: the domain classifiers keep a constant learning rate (their own Adam state).
    config.optim.discriminator_lr_decay = True
    config.optim.grad_clip_norm = ml_collections.FieldReference(None, field_type=float)

    # ------------------------------------------------------------ training
    config.batch_size = 12  # global, split over all devices; source and target each
    config.num_train_steps = 37_700  # 20 epochs of 22,600 target frames at batch 12
    config.dtype = "float32"  # compute dtype; "bfloat16" keeps float32 params
    # Convolution weight gradients: "band" (damono_jax/models/conv.py, faster on CPU), "xla"
    # (XLA's autodiff) or "auto" (band on CPU, xla on GPU/TPU). Same results to float rounding.
    config.conv_weight_gradient = "auto"
    config.log_every_steps = 50
    config.image_log_every_steps = 1000
    config.eval_every_steps = 5000
    config.num_eval_examples = -1  # -1 = whole eval split
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 3

    # ------------------------------------------------------- multi-host
    config.distributed = ml_collections.ConfigDict()
    config.distributed.initialize = False  # call jax.distributed.initialize()
    config.distributed.coordinator_address = ml_collections.FieldReference(None, field_type=str)
    config.distributed.num_processes = ml_collections.FieldReference(None, field_type=int)
    config.distributed.process_id = ml_collections.FieldReference(None, field_type=int)
    return config
