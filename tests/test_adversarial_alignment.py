"""Does the project's adversarial game align features when alignment is easy?

The set-up (registered in docs/adaptation_family.md before it ran): a tiny encoder (two
3x3 convs + ReLU) learns a per-pixel regression on a source domain, while the project's
gradient reversal layer, PatchGAN domain classifier, DANN lambda schedule (gamma 10), the
paper's adversarial weight 0.1 and the project's optimiser (`train.state.create_optimizer`)
play the game against a target domain that differs by a fixed colour transform: the blue
channel halved and raised by 1. Alignment is easy: a feature that ignores the blue channel
serves the task and is the same in both domains. A fresh linear probe
(`tools.domain_probe.fit_probe`) on the spatially averaged features measures alignment.

What it found (docs/adaptation_family.md, "The functional test"; seeds 0, 1, 2 on an
AVX2-only EPYC): the game lowers the target's task error (by 34%, 41% and 18% against
lambda = 0), but it does not align the features: the probe still separates the domains
(0.985, 1.000, 1.000), and the classifier's own held-out accuracy at the end is 0.65 at seed
0 but back at 0.99-1.00 at seeds 1 and 2. The test runs seed 0. The registered expectation
(probe at most 0.65) is kept as a strict xfail, so that a game that starts to align shows
up as a failure to look at.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from damono_jax import losses, schedules
from damono_jax.models import DOMAIN_CLASSIFIER
from damono_jax.models.discriminator import PatchDiscriminator
from damono_jax.models.grl import gradient_reversal
from damono_jax.tools.domain_probe import fit_probe
from damono_jax.train.state import OptimizerSettings, create_optimizer

SIZE, WIDTH, BATCH, STEPS = 8, 8, 32, 1000
LEARNING_RATE = 1e-3
ADV_WEIGHT = 0.1  # the paper's lambda_adv (configs/default.py)
CLASSIFIER_FEATURES = (64, 32)  # the project's (256, 128), narrowed to keep the test fast
# The target's colour transform: per channel, x * GAIN + OFFSET.
GAIN = np.array([1.0, 1.0, 0.5], np.float32)
OFFSET = np.array([0.0, 0.0, 1.0], np.float32)
PROBE_IMAGES = 200  # per domain, for the probe's training set and again for its test set


def domain_images(rng: np.random.Generator, count: int, target: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(images, task maps): a random pattern in every channel plus noise; the task is the
    pattern. The target is the same distribution through the colour transform."""
    pattern = rng.standard_normal((count, SIZE, SIZE, 1)).astype(np.float32)
    images = np.repeat(pattern, 3, -1)
    images += 0.5 * rng.standard_normal(images.shape).astype(np.float32)
    return (images * GAIN + OFFSET if target else images), pattern


class TinyAdaptationNet(nn.Module):
    """Encoder, task head and the project's classifier behind the project's GRL."""

    @nn.compact
    def __call__(self, source, target, grl_scale):
        encoder = nn.Sequential([nn.Conv(WIDTH, (3, 3)), nn.relu, nn.Conv(WIDTH, (3, 3)),
                                 nn.relu], name="encoder")
        source_features, target_features = encoder(source), encoder(target)
        prediction = nn.Conv(1, (1, 1), name="head")(source_features)
        classifier = PatchDiscriminator(features=CLASSIFIER_FEATURES, name=DOMAIN_CLASSIFIER)
        return {
            "prediction": prediction,
            "source_logits": classifier(gradient_reversal(source_features, grl_scale)),
            "target_logits": classifier(gradient_reversal(target_features, grl_scale)),
            "source_features": source_features,
        }


def play(max_scale: float, seed: int = 0) -> dict[str, float]:
    """Trains with the GRL's DANN ramp up to `max_scale` (0: no game); returns the probe's
    held-out accuracy before and after, the classifier's held-out accuracies and the task
    error on both domains."""
    net = TinyAdaptationNet()
    rng = np.random.default_rng(seed)
    source, _ = domain_images(rng, BATCH, False)
    params = net.init(jax.random.key(seed), source, source, 0.0)["params"]
    tx = create_optimizer(OptimizerSettings(
        learning_rate=LEARNING_RATE, num_train_steps=STEPS, decay_at_fraction=0.75,
        decay_factor=0.1, b1=0.9, b2=0.999, discriminator_learning_rate=None,
        discriminator_lr_decay=True, grad_clip_norm=None))
    grl = schedules.grl_schedule("dann", num_train_steps=STEPS, gamma=10.0,
                                 max_scale=max_scale)

    @jax.jit
    def step(params, opt_state, source, pattern, target, step_number):
        def loss_fn(params):
            out = net.apply({"params": params}, source, target, grl(step_number))
            task = jnp.mean((out["prediction"] - pattern) ** 2)
            return task + ADV_WEIGHT * losses.adversarial_loss(out["source_logits"],
                                                               out["target_logits"])

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    @jax.jit
    def evaluate(params, source, target):
        return net.apply({"params": params}, source, target, 0.0)

    held_out = np.random.default_rng(1000 + seed)
    probe_sets = [domain_images(held_out, PROBE_IMAGES, domain)[0]
                  for domain in (False, True, False, True)]
    test_source, test_source_pattern = domain_images(held_out, PROBE_IMAGES, False)
    test_target, test_target_pattern = domain_images(held_out, PROBE_IMAGES, True)

    def probe(params) -> float:
        def pooled(images):
            return np.asarray(evaluate(params, images, images)["source_features"].mean((1, 2)))

        labels = np.r_[np.ones(PROBE_IMAGES), np.zeros(PROBE_IMAGES)]
        train = np.concatenate([pooled(probe_sets[0]), pooled(probe_sets[1])])
        test = np.concatenate([pooled(probe_sets[2]), pooled(probe_sets[3])])
        return fit_probe(train, labels, test, labels)

    result = {"probe_before": probe(params)}
    opt_state = tx.init(params)
    for step_number in range(STEPS):
        source, pattern = domain_images(rng, BATCH, False)
        target, _ = domain_images(rng, BATCH, True)
        params, opt_state = step(params, opt_state, source, pattern, target, step_number)
    out = evaluate(params, test_source, test_target)
    accuracy = losses.domain_accuracy(out["source_logits"], out["target_logits"])
    on_target = evaluate(params, test_target, test_target)["prediction"]
    result.update(
        probe_after=probe(params),
        classifier_source=float(accuracy[0]), classifier_target=float(accuracy[1]),
        task_source=float(jnp.mean((out["prediction"] - test_source_pattern) ** 2)),
        task_target=float(jnp.mean((on_target - test_target_pattern) ** 2)),
    )
    return result


@pytest.fixture(scope="module")
def games() -> dict[str, dict[str, float]]:
    results = {"game": play(1.0), "no_game": play(0.0)}
    for name, result in results.items():
        print(name, {key: round(value, 4) for key, value in result.items()})
    return results


def test_without_the_game_the_domains_stay_separable(games):
    no_game = games["no_game"]
    assert no_game["probe_before"] > 0.95  # a fresh encoder already tells them apart
    assert no_game["probe_after"] > 0.9
    assert min(no_game["classifier_source"], no_game["classifier_target"]) > 0.9


def test_the_game_helps_the_target_task(games):
    game, no_game = games["game"], games["no_game"]
    # The target's task error falls by a tenth or more (seed 0: by a third, 0.143 against
    # 0.216; the least of 3 seeds: 18%), while the source's stays close (0.097 against 0.088).
    assert game["task_target"] < 0.9 * no_game["task_target"]
    assert game["task_source"] < 1.5 * no_game["task_source"]


@pytest.mark.xfail(strict=True, reason="round 3's finding: the game fools its classifier but "
                   "a fresh linear probe still separates the pooled features "
                   "(docs/adaptation_family.md)")
def test_the_game_aligns_the_features_for_a_fresh_probe(games):
    assert games["game"]["probe_after"] <= 0.65
