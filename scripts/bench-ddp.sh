#!/usr/bin/env bash
# Data-parallel training on the CPU against one process with the same cores: teacher steps per
# second of experiments/synthetic.yaml (width 8, 64 x 64 crops) at the same global batch, for
#   - 1 rank x 2 threads, batch 2B;
#   - 2 ranks x 1 thread, batch B each (torchrun's variables on loopback).
# Each rate is (S2 - S1) / (t(S2) - t(S1)) from two runs of S1 and S2 steps, which takes start-up
# and the final validation out. ROUNDS rounds alternate the two set-ups. The figures of
# docs/train.md ("Several GPUs and nodes") come from here.
#
#   scripts/bench-ddp.sh [ROUNDS]    (B = 8 unless BATCH is set)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIS2=${DIS2:-$ROOT/target/release/dis2}
ROUNDS=${1:-3}
B=${BATCH:-8}
S1=${S1:-10}
S2=${S2:-50}
work=$(mktemp -d /tmp/dis2-bench-ddp.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$DIS2" synth --out "$work/synthetic" >/dev/null

common=(--config "$work/synthetic/experiment.yaml" --set train.val_every=100000
    --set train.val_batches=1 --set train.image_every=0 --device cpu --quiet)

seconds() { # RUN STEPS: wall time of one run
    local start end
    start=$(date +%s.%N)
    "$@"
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}
one() { # STEPS
    "$DIS2" --threads 2 train-teacher "${common[@]}" --set "train.max_steps=$1" \
        --set "data.sampling.batch_size=$((2 * B))" --out "$work/one-$1" >/dev/null 2>&1
    rm -rf "$work/one-$1"
}
two() { # STEPS
    local port rank
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    for rank in 0 1; do
        WORLD_SIZE=2 RANK=$rank LOCAL_RANK=$rank MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
            "$DIS2" --threads 1 train-teacher "${common[@]}" --set "train.max_steps=$1" \
            --set "data.sampling.batch_size=$B" --out "$work/two-$1" >/dev/null 2>&1 &
    done
    wait
    rm -rf "$work/two-$1"
}
rate() { # SETUP
    local t1 t2
    t1=$(seconds "$1" "$S1")
    t2=$(seconds "$1" "$S2")
    echo "scale=3; ($S2 - $S1) / ($t2 - $t1)" | bc
}
echo "global batch $((2 * B)), steps/s ($S1 and $S2 steps), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= ROUNDS; r++)); do
    printf 'round %d: 1 rank x 2 threads %s steps/s, 2 ranks x 1 thread %s steps/s (load %s)\n' \
        "$r" "$(rate one)" "$(rate two)" "$(cut -d' ' -f1 /proc/loadavg)"
done
