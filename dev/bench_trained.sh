#!/usr/bin/env bash
# The full `detcore bench` with trained weights for the deployment-formats rows (docs/benchmarks.md).
# Trains each bench model's smoke checkpoint through the CLI where it is missing (about 19 min on a
# 2-core VM; SOLOv2 capped at 12 min, the RetinaNet example at 10), then runs the bench (about 7 min).
#   bash dev/bench_trained.sh [extra bench options, e.g. --out work_dirs/bench-trained]
set -euo pipefail
cd "$(dirname "$0")/.."
D=${DETCORE:-.venv/bin/detcore}
weights=()
for spec in efficientdet-d0:0 fcos:0 solov2:12 retinanet:10; do
  model=${spec%%:*} cap=${spec##*:}
  ckpt=work_dirs/trained/$model/checkpoints/last.pt
  if [ ! -f "$ckpt" ]; then
    echo "[bench_trained $(date +%H:%M:%S)] training $model (smoke config, cap ${cap} min; 0: none)"
    "$D" run --model "$model" --task train --work-dir "work_dirs/trained/$model" --no-progress \
      --set "train.max_minutes=$cap"
  fi
  weights+=(--weights "$model=$ckpt")
done
echo "[bench_trained $(date +%H:%M:%S)] detcore bench ${weights[*]} $*"
"$D" bench "${weights[@]}" "$@"
