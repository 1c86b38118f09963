#!/usr/bin/env bash
# The full `detcore bench` with trained weights for the deployment-formats rows (docs/benchmarks.md).
# Trains each bench model's smoke checkpoint through the CLI where it is missing (its config's own
# schedule and time cap; about 20 min for the four on a 2-core VM), then runs the bench (about 7 min).
#   bash dev/bench_trained.sh [extra bench options, e.g. --out work_dirs/bench-trained]
set -euo pipefail
cd "$(dirname "$0")/.."
D=${DETCORE:-.venv/bin/detcore}
weights=()
for model in efficientdet-d0 fcos solov2 retinanet; do
  ckpt=work_dirs/trained/$model/checkpoints/last.pt
  if [ ! -f "$ckpt" ]; then
    echo "[bench_trained $(date +%H:%M:%S)] training $model (smoke config)"
    "$D" run --model "$model" --task train --work-dir "work_dirs/trained/$model" --no-progress
  fi
  weights+=(--weights "$model=$ckpt")
done
echo "[bench_trained $(date +%H:%M:%S)] detcore bench ${weights[*]} $*"
"$D" bench "${weights[@]}" "$@"
