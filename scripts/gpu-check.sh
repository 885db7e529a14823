#!/usr/bin/env bash
# Checks that need a GPU (none of the test suite does): run on a machine with CUDA after
# `make build`. Each section is independent and says what it checks; the script stops at the first
# failure. (Sections are added by the issues that need them.)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIS2=${DIS2:-$ROOT/target/release/dis2}

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
gpu_check_ddp_torchrun_one_gpu
# ==== end of issue 16 ==========================================================================
