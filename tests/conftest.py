"""One persistent compilation cache for the whole suite (damono_jax/compile_cache.py).

Every pytest-xdist worker and every command a test starts (`python -m damono_jax...`) reads and
writes the same folder, so a program is compiled once per suite run, and a second run of the
suite loads what the first compiled. The folder is `$DAMONO_JAX_COMPILATION_CACHE` when set
(`off` turns it off), else `jax_cache_tests` beside the commands' default cache, so the tests'
programs do not crowd a user's own. Tests that check the cache itself choose their own folder.
"""

from __future__ import annotations

import os

from damono_jax import compile_cache


def pytest_configure(config) -> None:
    del config
    value = os.environ.get(compile_cache.ENV_VAR) or compile_cache.default_dir() + "_tests"
    os.environ[compile_cache.ENV_VAR] = value  # for the commands the tests start
    compile_cache.enable(value)
