#!/usr/bin/env bash
# The GPU check (docs/model.md, "Precision"): one command on a machine with a CUDA GPU, in a clone
# where `make build` works (the torch venv set up, or reachable to set up). A few minutes once
# built; everything it prints is meant to be pasted into docs/model.md.
#
#   scripts/gpu-check.sh [OUT]        (default OUT: target/gpu-check; kept for a look afterwards)
#
# 1. dis2 info (CUDA, compute capability, what --precision auto picks);
# 2. the demo teacher (experiments/synthetic.yaml) trained for 50 steps on the GPU in fp32, then in
#    bf16, from the same seed: seconds, the losses of both side by side, validation mIoU;
# 3. dis2 predict on a 4096 x 4096 synthetic scene with the fp32-trained teacher: CUDA fp32, CUDA
#    bf16 and CPU fp32, whole job (MP/s);
# 4. class agreement of CUDA fp32 with CPU fp32, and of CUDA bf16 with CUDA fp32.
#
# 5. (issue 16) data-parallel training under torchrun on one GPU (skipped with GPU_CHECK_DEVICE=cpu).
#
# Environment: GPU_CHECK_STEPS (50), GPU_CHECK_SIZE (4096), GPU_CHECK_DEVICE (cuda).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-target/gpu-check}
STEPS=${GPU_CHECK_STEPS:-50}
SIZE=${GPU_CHECK_SIZE:-4096}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
BIN=target/release/dis2
AGREE=target/release/examples/class_agreement
started=$(date +%s)

section() { printf '\n== %s\n' "$*"; }
# Seconds since the epoch with decimals, for timing one command.
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

section "build"
make --no-print-directory build >/dev/null
cargo build --release --locked --example class_agreement 2>&1 | tail -n 1

section "dis2 info --device $DEVICE"
if ! $BIN info --device "$DEVICE"; then
    echo "gpu-check: --device $DEVICE is not available here" >&2
    exit 1
fi

section "synthetic benchmark (40 scenes of 256 x 256) and one ${SIZE} x ${SIZE} scene"
rm -rf "$OUT"
mkdir -p "$OUT"
$BIN synth --out "$OUT/data"
$BIN synth --out "$OUT/big" --scenes 3 --size "$SIZE" --seed 7
data_root="$OUT/data"

section "demo teacher, $STEPS steps on $DEVICE, fp32 then bf16 (same seed)"
for precision in fp32 bf16; do
    t=$(now)
    $BIN train-teacher --config experiments/synthetic.yaml --device "$DEVICE" \
        --precision "$precision" --out "$OUT/teacher-$precision" --quiet \
        --set "data.dataset.synthetic.root=$data_root" \
        --set "train.max_steps=$STEPS" --set "train.val_every=$STEPS" \
        --set train.image_every=0 | grep -E "finished|validation"
    echo "  $precision: $(elapsed "$t") s for $STEPS steps (with start-up and one validation)"
done
echo "  losses (total) every 10 steps, fp32 | bf16:"
paste -d' ' \
    <(grep -o '"total":[0-9.e+-]*' "$OUT/teacher-fp32/metrics.jsonl" | cut -d: -f2) \
    <(grep -o '"total":[0-9.e+-]*' "$OUT/teacher-bf16/metrics.jsonl" | cut -d: -f2) |
    awk 'NR % 10 == 1 || NR == '"$STEPS"' { printf "    step %3d: %s | %s\n", NR, $1, $2 }'

section "dis2 predict, ${SIZE} x ${SIZE}, the fp32 teacher, whole job"
scene="$OUT/big/test"
name=$(basename "$(ls "$scene"/optical/*.tif | head -n 1)")
checkpoint="$OUT/teacher-fp32/checkpoints/last"
predict() { # DEVICE PRECISION
    $BIN predict --checkpoint "$checkpoint" --device "$1" --precision "$2" --quiet \
        --optical "$scene/optical/$name" --dsm "$scene/dsm/$name" --sar "$scene/sar/$name" \
        --out "$OUT/classes-$1-$2.tif"
}
predict "$DEVICE" fp32
predict "$DEVICE" bf16
predict cpu fp32

section "class agreement"
echo "  $DEVICE fp32 vs cpu fp32:"
$AGREE "$OUT/classes-$DEVICE-fp32.tif" "$OUT/classes-cpu-fp32.tif" | tail -n 1
echo "  $DEVICE bf16 vs $DEVICE fp32:"
$AGREE "$OUT/classes-$DEVICE-bf16.tif" "$OUT/classes-$DEVICE-fp32.tif" | tail -n 1


ROOT=$(pwd)
DIS2=${DIS2:-$ROOT/$BIN}
# ==== issue 16: data-parallel training under torchrun, one GPU (N = 1) ===========================
# `torchrun --standalone --nproc-per-node 1 --no-python dis2 train-teacher ... --device cuda`: the
# rank takes cuda:LOCAL_RANK, gradients go through c10d's NCCL backend (when the build has it;
# else through Gloo via host memory: the banner says which), the checkpoint evaluates on the GPU.
# Not yet run on a GPU by its author (none was available): the first run of this section is its
# first test on CUDA. About a minute.
gpu_check_ddp_torchrun_one_gpu() {
    local venv torchrun work
    venv=$(realpath "$ROOT/.libtorch/../../../..")
    torchrun="$venv/bin/torchrun"
    [ -x "$torchrun" ] || { echo "gpu-check ddp: no torchrun at $torchrun" >&2; return 1; }
    work=$(mktemp -d /tmp/dis2-gpu-ddp.XXXXXX)
    "$DIS2" synth --out "$work/bench" --scenes 6 --size 96 --seed 3 >/dev/null
    "$torchrun" --standalone --nproc-per-node 1 --no-python "$DIS2" train-teacher \
        --config "$work/bench/experiment.yaml" --out "$work/run" --device cuda --quiet \
        --set data.sampling.samples_per_epoch=64 --set data.sampling.batch_size=8 \
        --set train.epochs=2 --set train.val_every=4 --set train.val_batches=2 \
        >"$work/stdout" 2>"$work/stderr" || { cat "$work/stderr" >&2; return 1; }
    grep -q "x 1 process (nccl) on Cuda(0)" "$work/stderr" \
        || { echo "gpu-check ddp: expected NCCL on Cuda(0):" >&2; head -n 3 "$work/stderr" >&2; return 1; }
    grep -q 'world_size: 1' "$work/run/checkpoints/last/model.yaml" \
        || { echo "gpu-check ddp: the checkpoint has no world_size 1" >&2; return 1; }
    "$DIS2" eval --checkpoint "$work/run" --split test --device cuda --out "$work/eval" >/dev/null
    echo "gpu-check ddp: torchrun N=1 on cuda:0 with NCCL trained 16 steps and the checkpoint evaluates"
    rm -rf "$work"
}
if [ "$DEVICE" != cpu ]; then
    section "data-parallel training under torchrun, one GPU"
    gpu_check_ddp_torchrun_one_gpu
fi
# ==== end of issue 16 ==========================================================================

section "done in $(( $(date +%s) - started )) s; outputs in $OUT"
