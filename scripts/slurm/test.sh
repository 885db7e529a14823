#!/usr/bin/env bash
# The Slurm batch scripts of scripts/slurm/ on a real Slurm: a one-node cluster (slurm-wlm 22.05
# and munge, scripts/slurm/local-cluster.sh) in a temporary directory, stopped and removed at the
# end whatever happens. On a tiny synthetic benchmark it submits
#   - a 4-task predict array (predict-array.sbatch) over 6 scenes: the predictions must equal,
#     byte for byte, those of one unsharded `dis2 predict --list`;
#   - a 2-task sweep array (sweep-array.sbatch) then `dis2 sweep --collect`: the tables must
#     equal those of one unsharded `dis2 sweep`;
#   - a data-parallel training job of 2 tasks (train-ddp.sbatch, srun), sent the warning signal
#     (USR1 to the batch shell) after its second step: it must stop with a checkpoint, requeue
#     itself and resume; its logs and final checkpoint must equal, byte for byte, those of the
#     same 2 ranks started with torchrun's variables and never stopped.
# Needs root and Debian's slurmctld, slurmd, slurm-client and munge (installed when missing).
# `make test-slurm` runs it; it prints `N passed, M failed` and exits non-zero on a failure.
# DIS2_SLURM_KEEP=1 keeps the temporary directory (jobs' output, cluster logs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIS2=$(realpath "${DIS2:-$ROOT/target/release/dis2}")
export DIS2
log() { printf 'test-slurm: %s\n' "$*" >&2; }
passed=0
failed=0
check() { # NAME COMMAND...: a named check
    local name=$1
    shift
    if "$@"; then
        log "ok: $name"
        passed=$((passed + 1))
    else
        log "FAILED: $name"
        failed=$((failed + 1))
    fi
}

install_slurm() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        log "Slurm and munge are missing; as root: apt-get install slurmctld slurmd slurm-client munge"
        exit 1
    fi
    log "installing slurmctld slurmd slurm-client munge (their services are not started)"
    # A policy-rc.d that refuses (Debian's way) keeps the packages' own services from starting:
    # this test runs its daemons in its own directory only.
    local policy=/usr/sbin/policy-rc.d made=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
    if [ -n "$made" ]; then rm -f "$policy"; fi
}

[ -x "$DIS2" ] || { log "no dis2 binary at $DIS2 (cargo build --release first)"; exit 1; }
install_slurm
work=$(mktemp -d /tmp/dis2-slurm-test.XXXXXX)
cleanup() {
    local status=$?
    "$ROOT/scripts/slurm/local-cluster.sh" stop "$work/cluster" || true
    if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
        log "stopped by an error; the jobs' output:"
        tail -n 5 "$work"/*.out >&2 2>/dev/null || true
    fi
    if [ -n "${DIS2_SLURM_KEEP:-}" ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
eval "$("$ROOT/scripts/slurm/local-cluster.sh" start "$work/cluster")"
cd "$work"

# --- a tiny benchmark, a teacher to predict with -------------------------------------------------
"$DIS2" synth --out bench --scenes 6 --size 96 --seed 21 >/dev/null
short=(--set data.sampling.samples_per_epoch=16 --set data.sampling.batch_size=4
    --set train.epochs=1 --set train.val_batches=1 --set train.kd_warmup_epochs=0)
"$DIS2" --threads 2 train-teacher --config bench/experiment.yaml --out teacher "${short[@]}" \
    --device cpu --quiet >/dev/null

# --- predict array: 4 tasks over 6 scenes ---------------------------------------------------------
scene_list() { # OUT_DIR: every scene of the benchmark, one line each
    find "$work/bench" -path '*/optical/*.tif' | sort | while read -r optical; do
        local base=${optical%/optical/*} name
        name=$(basename "$optical" .tif)
        echo "optical=$optical dsm=$base/dsm/$name.tif sar=$base/sar/$name.tif out=$1/$(basename "$base")-$name.tif"
    done
}
scene_list "$work/pred-array" >array.txt
scene_list "$work/pred-whole" >whole.txt
sbatch --wait --array=0-3 --cpus-per-task=1 --mem=1G --output="$work/predict-%a.out" \
    "$ROOT/scripts/slurm/predict-array.sbatch" teacher/checkpoints/best array.txt --device cpu >/dev/null
"$DIS2" --threads 1 predict --checkpoint teacher/checkpoints/best --list whole.txt --device cpu \
    --quiet >/dev/null
same_predictions() {
    [ "$(ls pred-whole | wc -l)" -eq 6 ] || return 1
    diff -r pred-array pred-whole >/dev/null
}
check "4-task predict array = unsharded predict (6 scenes)" same_predictions
each_task_predicted() { # the 6 scenes over 4 tasks: 2, 2, 1, 1
    local task
    for task in 0 1 2 3; do
        [ "$(grep -c ' px, ' "predict-$task.out")" -eq $((task < 2 ? 2 : 1)) ] || return 1
    done
}
check "each predict task predicted its shard's scenes" each_task_predicted

# --- sweep array: 2 tasks, then --collect -----------------------------------------------------------
grid=(--methods teacher-fill,dis2 --scenarios dsm "${short[@]}" --device cpu)
sbatch --wait --array=0-1 --cpus-per-task=1 --mem=2G --output="$work/sweep-%a.out" \
    "$ROOT/scripts/slurm/sweep-array.sbatch" bench/experiment.yaml sweep-array "${grid[@]}" >/dev/null
"$DIS2" sweep --collect --out sweep-array >/dev/null
"$DIS2" --threads 1 sweep --config bench/experiment.yaml --out sweep-whole "${grid[@]}" \
    >/dev/null 2>&1
check "2-task sweep array + --collect = unsharded sweep (results.csv)" \
    cmp -s sweep-array/results.csv sweep-whole/results.csv
check "the sweep array's tables are complete" grep -q '"cells_missing": 0' sweep-array/results.json

# --- data-parallel training: 2 tasks under srun, preempted once -----------------------------------
# 16 steps (2 an epoch on 2 ranks): the warning signal comes after step 2, long before the end.
train=(train-teacher --config "$work/bench/experiment.yaml" "${short[@]/train.epochs=1/train.epochs=8}"
    --set train.val_every=4 --device cpu)
job=$(sbatch --parsable --nodes=1 --ntasks=2 --ntasks-per-node=2 --cpus-per-task=1 --mem=2G \
    --gpus-per-node=0 --output="$work/train-%j.out" \
    "$ROOT/scripts/slurm/train-ddp.sbatch" "${train[@]}" --out "$work/ddp-slurm")
job_state() { scontrol show job "$job" -o | grep -o 'JobState=[A-Z_]*' | cut -d= -f2; }
steps_logged() { [ "$(cat ddp-slurm/metrics.jsonl 2>/dev/null | wc -l)" -ge "$1" ]; }
deadline=$((SECONDS + 300))
until steps_logged 2 || ((SECONDS > deadline)); do sleep 0.1; done
# What --signal=B:USR1@120 sends before the time limit: USR1 to the batch shell only.
scancel --signal=USR1 --batch "$job"
requeued=""
while ((SECONDS < deadline)); do
    state=$(job_state)
    case $state in
        COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY) break ;;
        # A requeued job waits (BeginTime) before it may start again: no need to here.
        PENDING) scontrol update JobId="$job" StartTime=now 2>/dev/null && requeued=1 ;;
    esac
    sleep 0.5
done
check "the training job stopped on USR1 with a checkpoint" \
    grep -q "stopped: SIGUSR1 received: training stopped after step" "train-$job.out"
check "the stopped job requeued itself and finished" \
    bash -c "[ -n '$requeued' ] && [ '$(job_state)' = COMPLETED ] && grep -q 'Restarts=1' <(scontrol show job $job -o)"
check "the requeued job resumed the run" grep -q "from step [1-9]" "train-$job.out"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
for rank in 0 1; do
    WORLD_SIZE=2 RANK=$rank LOCAL_RANK=$rank MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
        "$DIS2" --threads 1 "${train[@]}" --out "$work/ddp-env" --quiet >/dev/null 2>&1 &
done
wait
check "srun's 2 ranks = torchrun's variables' 2 ranks (metrics.jsonl)" \
    cmp -s ddp-slurm/metrics.jsonl ddp-env/metrics.jsonl
check "srun's 2 ranks = torchrun's variables' 2 ranks (validation.jsonl)" \
    cmp -s ddp-slurm/validation.jsonl ddp-env/validation.jsonl
check "the preempted run's final checkpoint = the uninterrupted run's (weights, optimiser)" \
    bash -c "cmp ddp-slurm/checkpoints/last/model.safetensors ddp-env/checkpoints/last/model.safetensors \
        && cmp ddp-slurm/checkpoints/last/optim.safetensors ddp-env/checkpoints/last/optim.safetensors"
check "the job ran 2 processes" grep -q "x 2 processes" train-*.out

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
