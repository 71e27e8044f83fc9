#!/usr/bin/env bash
# Before/after speed of two checkouts of this project, alternated A B A B in one run:
#   bash benchmarks/compare_trees.sh OLD_TREE NEW_TREE OUT_DIR [ROUNDS]
# Runs the train-step and inference benchmarks from each tree (PYTHONPATH=<tree>) with this
# checkout's virtualenv; every output goes to OUT_DIR/<benchmark>_<tree name>_<round>.txt.
set -euo pipefail
python=$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python
old=$(cd "$1" && pwd); new=$(cd "$2" && pwd); out=$3; rounds=${4:-2}
mkdir -p "$out"
for round in $(seq "$rounds"); do
  for tree in "$old" "$new"; do
    name=$(basename "$tree")
    echo "round $round $name train_step $(date -u +%H:%M:%S)"
    (cd "$tree" && PYTHONPATH="$tree" "$python" -m benchmarks.train_step --batch_sizes=2 \
      --image_size=96,320) > "$out/train_step_${name}_$round.txt" 2>&1
    echo "round $round $name inference $(date -u +%H:%M:%S)"
    (cd "$tree" && PYTHONPATH="$tree" "$python" -m benchmarks.inference --height=96 \
      --width=320 --batch_sizes=1,8 --output=) > "$out/inference_${name}_$round.txt" 2>&1
  done
done
