#!/usr/bin/env bash
# The GPU check in one command (BENCHMARKS.md, "GPU check"): on the GPU machine
#   bash benchmarks/gpu/run.sh --out=$OUT
# with the carried wheels of `make gpu-wheels` in .whl/, or on any machine
#   bash benchmarks/gpu/run.sh --out=DIR --dry_run
# Installs only what .whl/ holds (no index, no dependencies), then runs benchmarks/gpu_bench.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  site=$(mktemp -d /tmp/damono_site.XXXXXX)
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PYTHON" -m benchmarks.gpu_bench "$@"
