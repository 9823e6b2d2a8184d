#!/usr/bin/env bash
# One prepared GPU check (a machine with one NVIDIA GPU): correctness first, then the paper-scale step.
#   bash experiments/bench_gpu.sh [OUT]      (tables land in OUT, default outputs/bench/gpu-DATE)
# Commit OUT/*/bench.md under experiments/results/DATE_bench_<card>.md, naming the card.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-outputs/bench/gpu-$(date +%F)}
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} LDAE_CACHE=${LDAE_CACHE:-$OUT/cache} WANDB_MODE=offline
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/card.csv"

# 1. Correctness on the GPU path: the speed switches (bf16 autocast, compile with inductor, fused AdamW,
#    SDPA) run and agree in loss with the plain fp32 step on the same batch and weights (smoke size).
$PY experiments/bench.py scale=smoke trainer.accelerator=gpu bench.steps=3 bench.warmup=2 \
    'bench.variants=[base,compile,checkpointing,no_fused_adamw,bf16,bf16_compile]' hydra.run.dir="$OUT/smoke"
$PY - "$OUT/smoke/bench.json" <<'PYEOF'
import json, sys
rows = {r["variant"]: r for r in json.load(open(sys.argv[1]))["rows"]}
base = rows["base"]["loss"]
for name, r in rows.items():
    tol = 5e-2 if name.startswith("bf16") else 5e-3
    assert abs(r["loss"] - base) <= tol * abs(base), (name, r["loss"], base)
print("correctness: every variant's loss agrees with fp32 base", {k: round(v["loss"], 5) for k, v in rows.items()})
PYEOF

# 2. Paper scale: l-DAE at DiT-L size (24 blocks of 1024, split 12/12), 256 px, 16 px patches = 256 tokens,
#    PCA tokenizer, per-GPU batch 64; fp32+TF32 vs bf16, each with and without compile. (scale=paper itself
#    runs bf16 + compile: the base variant here is reset to fp32+TF32 without compile, DiT's loop as shipped.)
$PY experiments/bench.py scale=paper data=shapes data.num_classes=1000 model.name=DiT-L bench.batch_size=64 \
    trainer.precision=32-true speed.compile=false \
    bench.steps=20 bench.warmup=5 'bench.variants=[base,compile,bf16,bf16_compile]' hydra.run.dir="$OUT/paper"

# 3. The data path alone: ImageNet-sized JPEGs (400 px) -> 256 px center crops, 4/8/16 loader workers.
$PY experiments/bench.py scale=paper data=shapes bench.loader=true bench.loader_images=4096 bench.batch_size=256 \
    bench.loader_source_size=400 'bench.loader_workers=[4,8,16]' hydra.run.dir="$OUT/loader"
cat "$OUT"/smoke/bench.md "$OUT"/paper/bench.md "$OUT"/loader/bench.md > "$OUT/all.md"
echo "tables: $OUT/all.md"
