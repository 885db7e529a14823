#!/usr/bin/env bash
# One `dis2 sweep` on this machine as $JOBS shards side by side (`--shard i/$JOBS`, each with
# $THREADS libtorch threads), then its tables (`--collect`). The reproduce targets and the DLKD
# study go through it.
#
# Why: the synthetic benchmark's model is small, and two cores share it badly. Measured on the
# 2-core development VM (docs/results.md, "Running the sweeps"): two 1-thread training runs side
# by side finish 1.6 x sooner than the same two one after the other with 2 threads each.
#
# Usage: scripts/sweep-local.sh OUT SWEEP-ARGS...     (every `dis2 sweep` option except --out)
#   JOBS     shards run at once (default 1: the plain sweep, progress bar on the terminal)
#   THREADS  threads per shard (default: the cores divided by JOBS, at least 1)
#   BIN      the dis2 binary (default target/release/dis2)
# With JOBS > 1 each shard appends to OUT/logs/shard-I.log (`tail -f` it to watch). Killed, the
# shards stop; run the same command again and every shard continues where it stopped. The numbers
# depend on THREADS (libtorch's reductions split by thread), not on JOBS: keep THREADS to compare.
set -euo pipefail

if [[ $# -lt 1 || "$1" == -* ]]; then
  echo "usage: $0 OUT SWEEP-ARGS...   (JOBS, THREADS, BIN from the environment)" >&2
  exit 2
fi
out=$1
shift
BIN=${BIN:-target/release/dis2}
JOBS=${JOBS:-1}
if ! [[ "$JOBS" =~ ^[1-9][0-9]*$ ]]; then
  echo "JOBS=$JOBS: expected a whole number of shards, 1 or more" >&2
  exit 2
fi
cores=$(nproc)
THREADS=${THREADS:-$(( cores / JOBS > 0 ? cores / JOBS : 1 ))}

if [[ "$JOBS" -eq 1 ]]; then
  exec "$BIN" --threads "$THREADS" sweep "$@" --out "$out"
fi

mkdir -p "$out/logs"
echo "sweep $out: $JOBS shards of $THREADS thread(s); logs in $out/logs/shard-*.log"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; exit 130' INT TERM
for ((i = 0; i < JOBS; i++)); do
  "$BIN" --threads "$THREADS" sweep "$@" --out "$out" --shard "$i/$JOBS" \
    >> "$out/logs/shard-$i.log" 2>&1 &
  pids+=($!)
done
failed=0
for ((i = 0; i < JOBS; i++)); do
  if ! wait "${pids[$i]}"; then
    echo "shard $i/$JOBS failed; the end of $out/logs/shard-$i.log:" >&2
    tail -n 20 "$out/logs/shard-$i.log" >&2
    failed=1
  fi
done
trap - INT TERM
[[ "$failed" -eq 0 ]] || exit 1
"$BIN" sweep "$@" --out "$out" --collect
