"""What the training loop logs and warns about: the averaged metrics and two collapse monitors."""

import math

import flax
from absl import logging
from clu import metrics

from damono_jax import config_utils, losses

# Within this distance of ln 2 the adversarial loss counts as "classifier at chance".
ADV_LOSS_COLLAPSE_TOLERANCE = 0.01
# The classifier counts as "winning" at this mean domain accuracy.
DOMAIN_ACCURACY_COLLAPSE = 0.99
# Below this mean per-image std of the scale-0 sigmoid disparity the depth output is constant.
DEPTH_COLLAPSE_STD = 1e-5


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
    """Per-step training metrics (`step.STEP_METRICS`), averaged over each logging interval.

    `metrics.Std` is deliberately absent: it fails on jax 0.10 (clu 0.0.12 `jnp.clip(a_min=)`).
    """

    loss: metrics.Average.from_output("loss")
    depth_loss: metrics.Average.from_output("depth_loss")
    seg_loss: metrics.Average.from_output("seg_loss")
    adv_loss: metrics.Average.from_output("adv_loss")
    adv_output_loss: metrics.Average.from_output("adv_output_loss")
    domain_acc_source: metrics.Average.from_output("domain_acc_source")
    domain_acc_target: metrics.Average.from_output("domain_acc_target")
    disp_std: metrics.Average.from_output("disp_std")
    grl_scale: metrics.LastValue.from_output("grl_scale")
    learning_rate: metrics.LastValue.from_output("learning_rate")


def variant_metric_names(variant: str, output_alignment: bool = False) -> tuple[str, ...]:
    """The metric names that mean something for a variant (others are always 0); the
    output-space classifier's loss only with `output_alignment`."""
    flags = config_utils.variant_flags(variant)
    names = ["loss", "depth_loss", "disp_std", "learning_rate"]
    if flags["use_semantic"]:
        names.append("seg_loss")
    if flags["use_domain_classifier"]:
        names += ["adv_loss", "domain_acc_source", "domain_acc_target", "grl_scale"]
        if output_alignment:
            names.append("adv_output_loss")
    return tuple(names)


class CollapseMonitor:
    """Warns when the domain classifier sits in one of the two known collapse modes.

    Modes: mean domain accuracy >= 0.99 (the classifier wins, the GRL does nothing useful), or
    the adversarial loss within 0.01 of ln 2 (the classifier is at chance from the start, e.g.
    a GRL scale that is too large). Checked at every logged step on the interval's averages;
    a warning is issued when a mode holds for `patience_steps` steps, i.e. for
    `ceil(patience_steps / log_every_steps)` consecutive logged steps, and once per streak.
    """

    def __init__(self, patience_steps: int, log_every_steps: int):
        self.required_logs = max(1, math.ceil(patience_steps / log_every_steps))
        self._streaks = {"accuracy": 0, "chance": 0}
        self.warnings: list[str] = []

    def update(self, step: int, adv_loss: float, acc_source: float, acc_target: float) -> None:
        """Feeds one logged step's averages; logs (and records) a warning on collapse."""
        accuracy = 0.5 * (acc_source + acc_target)
        conditions = {
            "accuracy": accuracy >= DOMAIN_ACCURACY_COLLAPSE,
            "chance": abs(adv_loss - losses.LN2) <= ADV_LOSS_COLLAPSE_TOLERANCE,
        }
        for mode, holds in conditions.items():
            self._streaks[mode] = self._streaks[mode] + 1 if holds else 0
            if self._streaks[mode] == self.required_logs:
                if mode == "accuracy":
                    message = (
                        f"step {step}: GRL collapse: domain classifier accuracy {accuracy:.3f} "
                        f">= {DOMAIN_ACCURACY_COLLAPSE} (source {acc_source:.3f}, target "
                        f"{acc_target:.3f}) for {self.required_logs} logged steps; the encoder "
                        "is not aligning the domains (try a larger config.grl.max_scale or a "
                        "smaller config.optim.discriminator_learning_rate)"
                    )
                else:
                    message = (
                        f"step {step}: GRL collapse: adversarial loss {adv_loss:.4f} stays at "
                        f"ln 2 = {losses.LN2:.4f} for {self.required_logs} logged steps; the "
                        "domain classifier is at chance (try a smaller config.grl.max_scale or "
                        "a larger config.optim.discriminator_learning_rate)"
                    )
                logging.warning(message)
                self.warnings.append(message)


class DepthCollapseMonitor:
    """Warns when the depth output is constant (every image, every pixel the same disparity).

    The known cause is a sigmoid saturated at 0 or 1: supervised targets squeezed near 0 by a
    too small `config.model.min_depth` (0.1 m collapsed in 40 steps on synthetic_driving) or
    a too large learning rate. Once saturated the gradient vanishes and training cannot
    recover, so the warning comes after `patience_steps` and names what to change.
    """

    def __init__(self, patience_steps: int, log_every_steps: int):
        self.required_logs = max(1, math.ceil(patience_steps / log_every_steps))
        self._streak = 0
        self.warnings: list[str] = []

    def update(self, step: int, disp_std: float, min_depth: float, learning_rate: float) -> None:
        """Feeds one logged step's mean disparity spread; logs (and records) a warning."""
        self._streak = self._streak + 1 if disp_std < DEPTH_COLLAPSE_STD else 0
        if self._streak == self.required_logs:
            message = (
                f"step {step}: depth collapse: the disparity output is constant (mean per-image "
                f"std {disp_std:.2e} < {DEPTH_COLLAPSE_STD:g}) for {self.required_logs} logged "
                "steps; its sigmoid is saturated and cannot recover. Restart with a larger "
                f"config.model.min_depth (now {min_depth:g} m; the supervised targets must not "
                f"sit near sigmoid 0) or a smaller config.optim.learning_rate (now "
                f"{learning_rate:g})"
            )
            logging.warning(message)
            self.warnings.append(message)
