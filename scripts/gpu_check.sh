#!/usr/bin/env bash
# The GPU check: train specs/gpu_check.yaml (125M grown into 360M, bf16, torch.compile) on one lent
# H100 or H200, then print per stage tokens/s, MFU, predicted against actual time, and the loss before and
# after growth, and each stage's peak reserved memory against the plan's. Prepared here, run on the device machine from the repository root:
#
#   scripts/fetch_gpu_wheels.sh                 # here, once: the missing wheels into .whl/
#   device run (carry .whl):  bash scripts/gpu_check.sh
#
# Everything it writes goes under ${OUT:-/tmp/familyc-gpu-check}. Nothing is downloaded there.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/familyc-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, \
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
  python3 -c "import torchtitan, datasets, torchdata, tyro, tomli, jsonschema, familyc; print('imports ok')"
} 2>&1 | tee "$OUT/environment.txt"

start=$(date +%s)
python3 -m familyc plan specs/gpu_check.yaml -o "$OUT/gpu_check.plan.json" | tee "$OUT/plan.txt"
python3 -m familyc apply "$OUT/gpu_check.plan.json" --yes --run-dir "$OUT/run" --nproc-per-node 1 2>&1 | tee "$OUT/apply.log"
python3 -m familyc report "$OUT/run" --format json -o "$OUT/report" --heldout-tokens 65536 > "$OUT/report.json"
echo "wall: $(( $(date +%s) - start )) s" | tee -a "$OUT/apply.log"
python3 - "$OUT/report.json" "$OUT/gpu_check.plan.json" "$OUT/run" <<'PY'
import json, sys
from pathlib import Path
r = json.load(open(sys.argv[1]))
plan = {s["id"]: s for s in json.load(open(sys.argv[2]))["steps"]}
print(f"GPU check ({r['accelerator']}):")
for step_id, s in plan.items():  # the card's peak against the plan's (the rehearsal's: BENCHMARKS.md "Rehearsal")
    metrics = Path(sys.argv[3]) / "steps" / step_id / "metrics.jsonl"
    if s["kind"] == "train" and metrics.exists():
        peaks = [json.loads(line).get("memory_gib") for line in metrics.read_text().splitlines()]
        peak = max((p for p in peaks if p is not None), default=None)
        print(f"  {step_id}: peak reserved {peak} GiB on the card, planned {s['memory']['total'] / 2**30:.2f} GiB")
for s in r["steps"]:
    if s["kind"] == "train":
        mfu = f"{100 * s['mfu']:.1f}%" if s["mfu"] is not None else "n/a"
        print(f"  {s['id']}: {s['actual_tokens_per_second'] or 0:,.0f} tok/s, MFU {mfu}, time predicted "
              f"{s['predicted_seconds']:.0f} s / actual {s['actual_seconds'] or 0:.0f} s "
              f"(training loop {s['train_seconds'] or 0:.0f} s), loss {s['first_loss']} -> {s['final_loss']}")
for g in r["growth"]:
    print(f"  {g['id']}: held-out loss before {g['loss_before']}, after {g['loss_after']} "
          f"(first training loss {g['first_train_loss']})")
PY
