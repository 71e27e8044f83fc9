"""damono_jax.evaluation_report: the Table 1 layout and the CSV rows name every choice."""

import numpy as np

from damono_jax import evaluation, evaluation_report
from tests.helpers import random_gt


def test_fingerprint_and_table_name_every_choice():
    rng = np.random.default_rng(5)
    gts = [random_gt(rng, 40, 120)]
    disps = [rng.uniform(0.05, 0.5, size=(32, 96)).astype(np.float32)]
    by_cap = {
        cap: evaluation.evaluate(gts, disps, cap=cap, crop="garg", gt_source="fixture")
        for cap in (80, 50)
    }
    fingerprint = by_cap[50]["fingerprint"]
    for text in ("cap=50m (1<gt<50", "crop=garg", "scaling=per-image median", "gt=fixture",
                 "images=1"):
        assert text in fingerprint
    table = evaluation_report.format_table(by_cap, "DA-Monodepth (ours)")
    lines = table.splitlines()
    assert lines.index("cap = 50m") < lines.index("cap = 80m")
    row = lines[lines.index("cap = 80m") + 1].split()
    assert [float(v) for v in row[-7:]] == [
        round(by_cap[80][name], 3) for name in evaluation.METRIC_NAMES
    ]
    uncapped = evaluation.evaluate(gts, disps, cap=None, crop="none", scaling=2.0)
    assert "cap=none (gt>0" in uncapped["fingerprint"]
    assert "scaling=fixed x2" in uncapped["fingerprint"]
    rows = evaluation_report.results_csv_rows({None: uncapped})
    assert rows[0]["cap"] == "none" and rows[0]["crop"] == "none"
