#!/usr/bin/env bash
# The GPU path measured in one script, CPU and GPU figures side by side (under 8 minutes with one GPU):
#   1. the smoke workflow (tests/smoke.yaml) end to end, device cpu and cuda: wall time and its mIoU;
#   2. the single-class training throughput (benchmarks/throughput.py, 128 px), cpu and cuda;
#   3. paper_cost.py's measured mode: the paper's networks' images/s per stage, cpu and cuda.
# Without CUDA it says so in one line ("no CUDA: ...") and measures the CPU side only.
#
#   bash benchmarks/gpu_check.sh [OUT]        (OUT: results/benchmarks/gpu_check)
#   GPU_CHECK_QUICK=1 bash benchmarks/gpu_check.sh OUT   (the smallest sizes: what the test runs)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(mkdir -p "${1:-results/benchmarks/gpu_check}" && cd "${1:-results/benchmarks/gpu_check}" && pwd)
export OMP_WAIT_POLICY=PASSIVE
if [[ "${GPU_CHECK_QUICK:-0}" == 1 ]]; then
  # the smallest sizes, and the smoke run to its score only (the report's figures are drawing, not the device)
  IMAGES=8 EPOCHS=2 SCORE_ONLY=1
  PAPER="--images 4 --epochs 1 --multiclass-steps 1 --multiclass-batch 2 --multiclass-crop 129 --label-batch 2 --calls 1"
else
  IMAGES=64 EPOCHS=4 PAPER="" SCORE_ONLY=0
fi

if python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  DEVICES="cpu cuda"
  python -c "import torch; print('CUDA:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
else
  DEVICES="cpu"
  echo "no CUDA: torch sees no GPU here; measuring the CPU side only (run this on a GPU machine for its figures)"
fi

for dev in $DEVICES; do
  target=all  # the default target: every output and the report's figures
  [[ $SCORE_ONLY == 1 ]] && target="$OUT/smoke_$dev/voc_miou.txt"
  start=$(date +%s.%N)
  snakemake "$target" --cores 2 --quiet all -s Snakefile --directory . --configfile config.yaml tests/smoke.yaml \
    --config "results=$OUT/smoke_$dev" "device=$dev" > "$OUT/smoke_$dev.log" 2>&1 \
    || { echo "smoke workflow on $dev failed: see $OUT/smoke_$dev.log"; exit 1; }
  end=$(date +%s.%N)
  python - "$dev" "$start" "$end" "$OUT/smoke_$dev/voc_miou.txt" <<'PY'
import json, sys
dev, t0, t1, miou = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), open(sys.argv[4]).read().strip()
print(json.dumps({"figure": "smoke_workflow_seconds", "device": dev, "value": round(t1 - t0, 1), "miou": miou}))
PY
  python benchmarks/throughput.py --images "$IMAGES" --epochs "$EPOCHS" --baseline-epochs 1 --resolutions 128 \
    --device "$dev" | grep -v '^$' | sed "s/^{/{\"run\": \"throughput_$dev\", /"
  # shellcheck disable=SC2086
  python benchmarks/paper_cost.py --device "$dev" $PAPER | grep '"figure"' | grep 'images_per_s' \
    | sed "s/^{/{\"run\": \"paper_cost_$dev\", /"
done
echo "gpu_check: done on $DEVICES; logs and runs in $OUT"
