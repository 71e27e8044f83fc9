"""Every command-line module imports beside the others (tests and tools import several)."""

from __future__ import annotations

import subprocess
import sys

CLI_MODULES = (
    "damono_jax.main",
    "damono_jax.evaluate",
    "damono_jax.predict",
    "damono_jax.tools.summary",
    "damono_jax.tools.demo",
    "damono_jax.tools.ablation",
    "damono_jax.tools.domain_probe",
    "damono_jax.adabn",
    "data_prep.build",
)


def test_cli_modules_import_together_without_flag_clashes() -> None:
    # A fresh interpreter: pytest's own process has imported some of them already.
    code = "import importlib\n" + "".join(
        f"importlib.import_module({name!r})\n" for name in CLI_MODULES
    ) + "from absl import flags\nprint(sorted(n for n in ('config', 'output', 'data_dir') " \
        "if n in flags.FLAGS))\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    # Only damono_jax.main defines flags at import time (its --config and --output).
    assert result.stdout.strip().splitlines()[-1] == "['config', 'output']"
