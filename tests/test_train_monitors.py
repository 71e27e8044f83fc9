"""damono_jax.train.monitors: the GRL and depth collapse warnings."""

import math

from damono_jax.train import monitors


def test_collapse_monitor_warns_after_patience():
    monitor = monitors.CollapseMonitor(patience_steps=30, log_every_steps=10)  # 3 logged steps
    monitor.update(10, adv_loss=0.2, acc_source=1.0, acc_target=0.995)
    monitor.update(20, adv_loss=0.2, acc_source=1.0, acc_target=0.995)
    assert monitor.warnings == []
    monitor.update(30, adv_loss=0.2, acc_source=1.0, acc_target=0.995)
    assert len(monitor.warnings) == 1 and "step 30: GRL collapse" in monitor.warnings[0]
    monitor.update(40, adv_loss=0.2, acc_source=1.0, acc_target=1.0)  # same streak: no repeat
    assert len(monitor.warnings) == 1
    for step in (50, 60, 70):
        monitor.update(step, adv_loss=math.log(2) + 0.005, acc_source=0.5, acc_target=0.5)
    assert len(monitor.warnings) == 2 and "ln 2" in monitor.warnings[1]
    monitor.update(80, adv_loss=0.5, acc_source=0.7, acc_target=0.6)
    monitor.update(90, adv_loss=math.log(2), acc_source=0.5, acc_target=0.5)
    assert len(monitor.warnings) == 2  # the streak was broken at step 80


def test_depth_collapse_monitor_warns_after_patience_and_names_the_fix():
    monitor = monitors.DepthCollapseMonitor(patience_steps=20, log_every_steps=10)  # 2 logged steps
    monitor.update(10, disp_std=0.05, min_depth=0.1, learning_rate=3e-4)
    monitor.update(20, disp_std=0.0, min_depth=0.1, learning_rate=3e-4)
    assert monitor.warnings == []
    monitor.update(30, disp_std=2e-6, min_depth=0.1, learning_rate=3e-4)
    assert len(monitor.warnings) == 1
    assert monitor.warnings[0].startswith(
        "step 30: depth collapse: the disparity output is constant"
    )
    assert "config.model.min_depth (now 0.1 m" in monitor.warnings[0]
    assert "config.optim.learning_rate (now 0.0003)" in monitor.warnings[0]
    monitor.update(40, disp_std=0.0, min_depth=0.1, learning_rate=3e-4)  # same streak
    assert len(monitor.warnings) == 1
