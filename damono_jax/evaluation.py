"""KITTI depth evaluation with every protocol choice explicit (Monodepth2 / DESC conventions).

The protocol of `evaluate` is the one of Monodepth2's `evaluate_depth.py` and DESC's `test.py`:

1. the predicted *scaled disparity* (`1 / depth`, what `geometry.disp_to_depth` returns first)
   is resized bilinearly to the ground-truth size (OpenCV `INTER_LINEAR` semantics: half-pixel
   centres, edge clamping, no antialiasing) and then inverted to depth;
2. the valid mask is `min < gt < max` (strict) for the chosen cap, intersected with the Garg
   crop (Monodepth2's float constants, truncated with `astype(int32)`);
3. the depth is multiplied by a fixed factor or by the per-image ratio
   `median(gt) / median(pred)` over the masked pixels, then clamped to `[min, max]`;
4. the seven metrics are computed per image and averaged over images.

Caps: `80` is Monodepth2's `1e-3 < gt < 80`; `50` is the DESC/T2Net `1 < gt < 50` convention
behind the paper's "cap = 50m" rows; `None` is Monodepth2's `eigen_benchmark` mask `gt > 0`
(predictions still clamped to `[1e-3, 80]`, as Monodepth2 does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
# Column titles of the paper's Table 1, in METRIC_NAMES order.
METRIC_TITLES = ("Abs Rel", "Sq Rel", "RMSE", "RMSE log", "d<1.25", "d<1.25^2", "d<1.25^3")

# cap -> (min_depth, max_depth) of the GT mask and of the prediction clamp.
CAP_RANGES: dict[int, tuple[float, float]] = {80: (1e-3, 80.0), 50: (1.0, 50.0)}
# Monodepth2 clamps predictions to [MIN_DEPTH, MAX_DEPTH] even when the mask has no cap.
UNCAPPED_CLAMP = (1e-3, 80.0)
CROPS = ("garg", "none")
# The paper's Table 1 reports both caps.
PAPER_CAPS = (80, 50)


def default_protocol(dataset: str, split: str) -> tuple[tuple[int | None, ...], str]:
    """`(caps, crop)` when the caller does not choose, for training-time validation and
    `damono_jax.evaluate` alike: both caps, with the Garg crop on KITTI (it is KITTI's crop,
    meaningless elsewhere), and Monodepth2's `gt > 0` without crop on `eigen_benchmark`."""
    if split == "eigen_benchmark":
        return (None,), "none"
    return PAPER_CAPS, "garg" if dataset.split("/")[0] == "kitti_eigen" else "none"
# Monodepth2's Garg/Eigen crop fractions (rows top, bottom, cols left, right), used in
# float64 and truncated, exactly as `evaluate_depth.py` does.
GARG_CROP_FRACTIONS = np.array([0.40810811, 0.99189189, 0.03594771, 0.96405229], np.float64)


def garg_crop_bounds(height: int, width: int) -> tuple[int, int, int, int]:
    """Returns `(top, bottom, left, right)` of the Garg crop for a GT of `height x width`.

    The slice is `[top:bottom, left:right]`; e.g. 370x1224 gives rows 151:366, cols 43:1180.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"garg_crop_bounds: image size must be positive, got {height}x{width}")
    sizes = np.array([height, height, width, width], np.float64)
    top, bottom, left, right = (GARG_CROP_FRACTIONS * sizes).astype(np.int32)
    return int(top), int(bottom), int(left), int(right)


def _check_cap(cap: int | None) -> None:
    if cap is not None and cap not in CAP_RANGES:
        raise ValueError(f"cap: expected one of {sorted(CAP_RANGES)} or None, got {cap!r}")


def _check_crop(crop: str) -> None:
    if crop not in CROPS:
        raise ValueError(f"crop: expected one of {CROPS}, got {crop!r}")


def _check_scaling(scaling: str | float) -> None:
    expected = f"scaling: expected 'median', 'none' or a positive number, got {scaling!r}"
    if isinstance(scaling, str):
        if scaling not in ("median", "none"):
            raise ValueError(expected)
        return
    if isinstance(scaling, bool) or not isinstance(scaling, int | float):
        raise ValueError(expected)
    if not math.isfinite(scaling) or scaling <= 0:
        raise ValueError(f"scaling: a fixed factor must be finite and > 0, got {scaling!r}")


def clamp_range(cap: int | None) -> tuple[float, float]:
    """The `[min, max]` depth range predictions are clamped to under `cap`."""
    _check_cap(cap)
    return UNCAPPED_CLAMP if cap is None else CAP_RANGES[cap]


def evaluation_mask(gt: np.ndarray, *, cap: int | None = 80, crop: str = "garg") -> np.ndarray:
    """Boolean mask of the GT pixels that are scored: the cap range (strict) and the crop."""
    _check_cap(cap)
    _check_crop(crop)
    gt = np.asarray(gt)
    if gt.ndim != 2:
        raise ValueError(f"evaluation_mask: gt must be 2-D (H, W), got shape {gt.shape}")
    if cap is None:
        mask = gt > 0
    else:
        min_depth, max_depth = CAP_RANGES[cap]
        mask = (gt > min_depth) & (gt < max_depth)
    if crop == "garg":
        top, bottom, left, right = garg_crop_bounds(*gt.shape)
        crop_mask = np.zeros(gt.shape, dtype=bool)
        crop_mask[top:bottom, left:right] = True
        mask &= crop_mask
    return mask


def compute_errors(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Monodepth2's seven depth metrics between matching 1-D arrays of valid depths (metres).

    `abs_rel = mean(|gt - pred| / gt)`, `sq_rel = mean((gt - pred)^2 / gt)`, `rmse`,
    `rmse_log` (natural log) and `a_k = mean(max(gt/pred, pred/gt) < 1.25^k)`.
    """
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if gt.shape != pred.shape:
        raise ValueError(f"compute_errors: gt shape {gt.shape} != pred shape {pred.shape}")
    if gt.size == 0:
        raise ValueError("compute_errors: no valid pixels to score")
    if not (np.all(gt > 0) and np.all(pred > 0)):
        raise ValueError("compute_errors: gt and pred must be > 0 (mask invalid pixels first)")
    thresh = np.maximum(gt / pred, pred / gt)
    diff = gt - pred
    return {
        "abs_rel": float(np.mean(np.abs(diff) / gt)),
        "sq_rel": float(np.mean(diff**2 / gt)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
        "a1": float(np.mean(thresh < 1.25)),
        "a2": float(np.mean(thresh < 1.25**2)),
        "a3": float(np.mean(thresh < 1.25**3)),
    }


def resize_bilinear(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resizes a 2-D map like `cv2.resize(..., INTER_LINEAR)`: half-pixel centres, no antialias.

    Uses `jax.image.resize(method="linear", antialias=False)`, which equals torch's
    `interpolate(bilinear, align_corners=False)` and OpenCV's `INTER_LINEAR` on float maps.
    """
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"resize_bilinear: expected a 2-D map, got shape {array.shape}")
    if array.shape == (height, width):
        return array.copy()
    resized = jax.image.resize(array, (height, width), method="linear", antialias=False)
    return np.asarray(resized)


def protocol_fingerprint(
    *, cap: int | None, crop: str, scaling: str | float, gt_source: str, num_images: int
) -> str:
    """One line naming every protocol choice of an evaluation."""
    if cap is None:
        low, high = UNCAPPED_CLAMP
        cap_text = f"cap=none (gt>0, pred clamped to [{low:g}, {high:g}] m)"
    else:
        low, high = CAP_RANGES[cap]
        cap_text = f"cap={cap}m ({low:g}<gt<{high:g}, pred clamped to [{low:g}, {high:g}] m)"
    crop_text = "crop=garg (Monodepth2 constants)" if crop == "garg" else "crop=none"
    if scaling == "median":
        scaling_text = "scaling=per-image median"
    elif scaling == "none":
        scaling_text = "scaling=none (metric)"
    else:
        scaling_text = f"scaling=fixed x{float(scaling):g}"
    return (
        f"protocol: {cap_text} | {crop_text} | {scaling_text} | gt={gt_source} | "
        f"images={num_images} | disparity resized bilinearly to GT size, metrics averaged "
        "per image"
    )


def _as_2d_array(value: Any, name: str, index: int) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"{name}[{index}]: expected a 2-D (H, W) map, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name}[{index}]: expected a float array, got dtype {array.dtype}")
    return array


def _score_image(
    gt: np.ndarray,
    pred_depth: np.ndarray,
    *,
    where: str,
    cap: int | None,
    crop: str,
    scaling: str | float,
) -> tuple[dict[str, float], float | None]:
    """Metrics of one image (GT and depth at the same size) and its median ratio (or None).

    `where` names the image in errors, e.g. `gt_depths[3] (frame test/0042)`."""
    mask = evaluation_mask(gt, cap=cap, crop=crop)
    if not mask.any():
        raise ValueError(
            f"{where}: no valid ground-truth pixels under cap={cap}, crop={crop}"
        )
    gt_valid = gt[mask].astype(np.float64)
    pred_valid = pred_depth[mask]
    ratio = None
    if scaling == "median":
        ratio = float(np.median(gt_valid) / np.median(pred_valid))
        pred_valid = pred_valid * ratio
    elif scaling != "none":
        pred_valid = pred_valid * float(scaling)
    clamp_min, clamp_max = clamp_range(cap)
    pred_valid = np.clip(pred_valid, clamp_min, clamp_max)
    return compute_errors(gt_valid, pred_valid), ratio


def _summarize(
    per_image: list[dict[str, float]],
    ratios: list[float],
    *,
    cap: int | None,
    crop: str,
    scaling: str | float,
    gt_source: str,
) -> dict[str, Any]:
    if not per_image:
        raise ValueError("evaluate: no images to evaluate")
    results: dict[str, Any] = {
        name: float(np.mean([errors[name] for errors in per_image])) for name in METRIC_NAMES
    }
    results["num_images"] = len(per_image)
    if ratios:
        ratio_array = np.asarray(ratios)
        median_ratio = float(np.median(ratio_array))
        results["ratio_median"] = median_ratio
        results["ratio_std"] = float(np.std(ratio_array / median_ratio))
    else:
        results["ratio_median"] = None
        results["ratio_std"] = None
    results["per_image"] = list(per_image)
    clamp_min, clamp_max = clamp_range(cap)
    results["protocol"] = {
        "cap": cap,
        "min_depth": None if cap is None else CAP_RANGES[cap][0],
        "max_depth": None if cap is None else CAP_RANGES[cap][1],
        "clamp": [clamp_min, clamp_max],
        "crop": crop,
        "scaling": scaling,
        "gt_source": gt_source,
        "num_images": len(per_image),
    }
    results["fingerprint"] = protocol_fingerprint(
        cap=cap, crop=crop, scaling=scaling, gt_source=gt_source, num_images=len(per_image)
    )
    return results


class Evaluator:
    """Streaming evaluation under one or more caps (resizes each prediction once).

    `add(gt, pred_disp)` per image, then `results()` -> `{cap: evaluate-style dict}`. Memory
    holds only per-image metrics, so a whole split never has to be kept in memory.
    """

    def __init__(
        self,
        *,
        caps: Sequence[int | None] = (80, 50),
        crop: str = "garg",
        scaling: str | float = "median",
        gt_source: str = "unspecified",
    ):
        if not caps or len(set(caps)) != len(caps):
            raise ValueError(f"caps: expected distinct caps, got {tuple(caps)!r}")
        for cap in caps:
            _check_cap(cap)
        _check_crop(crop)
        _check_scaling(scaling)
        self.caps = tuple(caps)
        self.crop = crop
        self.scaling = scaling
        self.gt_source = gt_source
        self.names: list[str] = []
        self._per_image: dict[int | None, list[dict[str, float]]] = {c: [] for c in self.caps}
        self._ratios: dict[int | None, list[float]] = {c: [] for c in self.caps}

    def add(self, gt_depth: np.ndarray, pred_disp: np.ndarray, name: str | None = None) -> None:
        """Scores one image: GT depth (metres, 0 invalid) and predicted scaled disparity."""
        index = len(self.names)
        gt = _as_2d_array(gt_depth, "gt_depths", index)
        disp = _as_2d_array(pred_disp, "pred_disps", index)
        if not np.all(np.isfinite(disp)) or not np.all(disp > 0):
            raise ValueError(
                f"pred_disps[{index}]: disparities must be finite and > 0 (scaled disparity "
                "1/depth, not a raw network output that can be 0)"
            )
        pred_depth = 1.0 / resize_bilinear(disp, *gt.shape).astype(np.float64)
        where = f"gt_depths[{index}]" + ("" if name is None else f" (frame {name})")
        scored = {
            cap: _score_image(
                gt, pred_depth, where=where, cap=cap, crop=self.crop, scaling=self.scaling
            )
            for cap in self.caps
        }
        for cap, (errors, ratio) in scored.items():
            self._per_image[cap].append(errors)
            if ratio is not None:
                self._ratios[cap].append(ratio)
        self.names.append(str(index) if name is None else name)

    def results(self) -> dict[int | None, dict[str, Any]]:
        """`{cap: results}` with the same keys as `evaluate` returns."""
        return {
            cap: _summarize(
                self._per_image[cap],
                self._ratios[cap],
                cap=cap,
                crop=self.crop,
                scaling=self.scaling,
                gt_source=self.gt_source,
            )
            for cap in self.caps
        }


def evaluate(
    gt_depths: Sequence[np.ndarray] | np.ndarray,
    pred_disps: Sequence[np.ndarray] | np.ndarray,
    *,
    cap: int | None = 80,
    crop: str = "garg",
    scaling: str | float = "median",
    gt_source: str = "unspecified",
) -> dict[str, Any]:
    """Scores predicted scaled disparities against GT depth maps with an explicit protocol.

    Args:
      gt_depths: per-image GT depth maps in metres (0 = invalid), any sizes; a list or an
        (N, H, W) array.
      pred_disps: per-image *scaled* disparities (1 / metres, as Monodepth2 stores them), any
        sizes; each is resized bilinearly to its GT size before inversion.
      cap: 80 (`1e-3 < gt < 80`), 50 (`1 < gt < 50`) or None (`gt > 0`, Monodepth2's
        eigen_benchmark mask).
      crop: "garg" or "none".
      scaling: "median" (per image), "none" (metric) or a fixed positive factor.
      gt_source: a short description of the GT for the fingerprint (e.g. "kitti_eigen/test").

    Returns:
      A dict with the seven metrics (means of per-image values), `num_images`,
      `ratio_median` and `ratio_std` (std of ratios / their median; None unless scaling is
      "median"), `per_image` (list of metric dicts), `protocol` (the choices) and
      `fingerprint` (one line).
    """
    evaluator = Evaluator(caps=(cap,), crop=crop, scaling=scaling, gt_source=gt_source)
    if len(gt_depths) != len(pred_disps):
        raise ValueError(
            f"evaluate: {len(gt_depths)} GT maps but {len(pred_disps)} predicted disparities"
        )
    for gt, disp in zip(gt_depths, pred_disps, strict=True):
        evaluator.add(gt, disp)
    return evaluator.results()[cap]
