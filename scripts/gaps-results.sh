#!/usr/bin/env bash
# The gaps benchmark's models (docs/results.md, "Routes per pixel on the gaps benchmark"): per
# seed a teacher, the students of the missing sets that cover most pixels of `dis2 synth --gaps`
# (optical under clouds, SAR beyond swath edges, both, DSM voids), distilled from it and merged
# into one checkpoint that serves every pattern; then the evaluations of the table.
#
#   scripts/gaps-results.sh OUT            # BIN, CONFIG, SEEDS, STUDENTS, JOBS from the environment
#
# Seeds run JOBS at a time, each process on one libtorch thread. A finished run is kept: run it
# again after an interruption and it goes on with what is missing (an unfinished run directory
# is started afresh).
set -euo pipefail
OUT=${1:?usage: scripts/gaps-results.sh OUT}
BIN=${BIN:-target/release/dis2}
CONFIG=${CONFIG:-data/synthetic-gaps/experiment.yaml}
SEEDS=${SEEDS:-"42 43 44"}
STUDENTS=${STUDENTS:-"optical sar optical,sar dsm"}
JOBS=${JOBS:-$(nproc)}
export BIN CONFIG OUT STUDENTS

# One training run into $2 unless it finished ($2/checkpoints/best exists).
train() {
    local what=$1 dir=$2; shift 2
    [ -e "$dir/checkpoints/best" ] && return 0
    rm -rf "$dir"
    "$BIN" --threads 1 "$what" --config "$CONFIG" --out "$dir" --quiet "$@" > "$dir.log" 2>&1 \
        || { echo "failed: $what $dir (see $dir.log)" >&2; return 1; }
}

seed() {
    local s=$1 d=$OUT/s$1
    mkdir -p "$d"
    train train-teacher "$d/teacher" --set "seed=$s"
    local students=()
    for m in $STUDENTS; do
        local name=student-${m//,/+}
        train distill "$d/$name" --set "seed=$s" --teacher "$d/teacher/checkpoints/best" --missing "$m"
        students+=("$d/$name")
    done
    [ -e "$d/all.safetensors" ] || "$BIN" merge-students --out "$d/all" "${students[@]}" > "$d/merge.log"
    echo "seed $s: trained ($d)"
}
export -f train seed

# One evaluation into $OUT/evals/s$SEED/$name unless done; the other arguments go to dis2 eval.
evaluate() {
    local s=$1 name=$2; shift 2
    local out=$OUT/evals/s$s/$name
    [ -e "$out/metrics.json" ] && return 0
    "$BIN" --threads 1 eval --config "$CONFIG" --out "$out" --overlays 0 --quiet "$@" \
        > "$out.log" 2>&1 || { echo "failed: eval $out (see $out.log)" >&2; return 1; }
}

# The composite of seed $1 with every context margin and route blend, on val (where they are
# chosen) and test.
settings() {
    local s=$1 d=$OUT/s$1
    mkdir -p "$OUT/evals/s$s"
    for m in $MARGINS; do
        for b in $BLENDS; do
            local routes=(--context-margin "$m" --route-blend "$b")
            evaluate "$s" "val-composite-m$m-b$b" --checkpoint "$d/all" --split val "${routes[@]}"
            evaluate "$s" "test-composite-m$m-b$b" --checkpoint "$d/all" "${routes[@]}"
        done
    done
}

# The test evaluations of seed $1 with the chosen $ROUTES: each student with its missing set
# dropped from every scene, the teacher alone (teacher-fill wherever an input lacks data) and
# one branch per scene (the output before routes per pixel).
evaluations() {
    local s=$1 d=$OUT/s$1 routes
    read -r -a routes <<< "$ROUTES"
    for m in $STUDENTS; do
        evaluate "$s" "test-drop-${m//,/+}-$TAG" --checkpoint "$d/all" --drop "$m" "${routes[@]}"
    done
    evaluate "$s" "test-teacher-$TAG" --checkpoint "$d/teacher" "${routes[@]}"
    evaluate "$s" test-one-route --checkpoint "$d/all" --one-route
    echo "seed $s: evaluated"
}
MARGINS=${MARGINS:-"0 2 4 8 16"}
BLENDS=${BLENDS:-"0 8 16"}
export MARGINS BLENDS
export -f evaluate settings evaluations

started=$(date +%s)
printf '%s\n' $SEEDS | xargs -P "$JOBS" -I{} bash -c 'seed {}'
echo "trained in $(( ($(date +%s) - started) / 60 )) min"
started=$(date +%s)
printf '%s\n' $SEEDS | xargs -P "$JOBS" -I{} bash -c 'settings {}'
PYTHON=${PYTHON:-python3}
read -r MARGIN BLEND < <("$PYTHON" "$(dirname "$0")/gaps-table.py" --choose "$OUT" $SEEDS)
ROUTES="--context-margin $MARGIN --route-blend $BLEND" TAG="m$MARGIN-b$BLEND"
export ROUTES TAG
echo "chosen on val: context margin $MARGIN px, route blend $BLEND px"
printf '%s\n' $SEEDS | xargs -P "$JOBS" -I{} bash -c 'evaluations {}'
echo "evaluated in $(( ($(date +%s) - started) / 60 )) min"
"$PYTHON" "$(dirname "$0")/gaps-table.py" "$OUT" $SEEDS | tee "$OUT/results.md"
