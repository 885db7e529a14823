#!/usr/bin/env bash
# The DLKD study (issue 13; docs/results.md, "The DLKD study"): does distillation help on the
# synthetic benchmark, and with which setting? Four sweeps over $SEEDS seeds, every setting
# chosen on the validation split and reported on test (`dis2 sweep --select-on val`):
#
#   1. weights-terms-warmup: one teacher per seed; dis2 (lambda_kd 5, both KD terms, the
#      experiment's warm-up) against its variants: KD weight 0.5 / 1 / 2 (0 is dis2-no-kd),
#      feature terms only / logit term only, warm-up 0 / 3 / 6 epochs; the unimodal floor.
#   2. teacher-longer: the same students from a teacher trained twice as long (--teacher-set).
#   3. wider: teacher and students of base width 16 instead of 8 (their own unimodal floor).
#   4. unimodal-longer: the control for sweep 2, the unimodal model trained as long as its teacher.
#
# Sweeps 2 and 3 also train the one setting sweep 1 chose on validation (as `dis2@chosen`).
# Resumable: run it again and every sweep continues where it stopped. Tables: $OUT/*/results.md
# (and .csv, .json, differences.csv, miou.png); $OUT/study.md collects them.
#
# Usage: scripts/dlkd-study.sh            (or `make dlkd-study`)
#        SEEDS=1 EPOCHS=1 SCENARIOS=dsm OUT=runs/dlkd-study-short scripts/dlkd-study.sh   (a short run)
set -euo pipefail

BIN=${BIN:-target/release/dis2}
CONFIG=${CONFIG:-experiments/synthetic.yaml}
OUT=${OUT:-runs/dlkd-study}
SEEDS=${SEEDS:-3}
EPOCHS=${EPOCHS:-12}
SCENARIOS=${SCENARIOS:-dsm,sar,optical}
DEVICE=${DEVICE:-auto}
# Shards of each sweep run side by side (scripts/sweep-local.sh; JOBS, THREADS).
export JOBS=${JOBS:-1} BIN
# Further sweep options for every sweep, e.g. EXTRA="--set data.sampling.samples_per_epoch=64".
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"

# The variants of sweep 1: name -> override.
declare -A VARIANT=(
  [kd0.5]="train.lambda_kd=0.5"
  [kd1]="train.lambda_kd=1"
  [kd2]="train.lambda_kd=2"
  [features]="train.kd_terms=[features]"
  [logits]="train.kd_terms=[logits]"
  [warmup0]="train.kd_warmup_epochs=0"
  [warmup3]="train.kd_warmup_epochs=3"
  [warmup6]="train.kd_warmup_epochs=6"
)
ORDER=(kd0.5 kd1 kd2 features logits warmup0 warmup3 warmup6)

# Every sweep's options but the config and the training length. Sweep 4 gives its own length
# rather than a second train.epochs after the common one: a sweep folder records every --set, so
# that would be another sweep.
shared=(--seeds "$SEEDS" --scenarios "$SCENARIOS" --split test --select-on val --device "$DEVICE"
        "${EXTRA_ARGS[@]}")
common=(--config "$CONFIG" --set "train.epochs=$EPOCHS" "${shared[@]}")
started=$(date +%s)

variants=()
for name in "${ORDER[@]}"; do
  variants+=(--variant "$name:${VARIANT[$name]}")
done
echo "== 1/4 KD weight, KD terms, warm-up ($OUT/weights-terms-warmup)"
sweep() { bash "$(dirname "$0")/sweep-local.sh" "$@"; }
sweep "$OUT/weights-terms-warmup" "${common[@]}" --methods unimodal,dis2,dis2-no-kd "${variants[@]}"

# The one setting chosen on validation over every scenario (results.json: selection.one_setting).
chosen=$(grep -o '"one_setting": "[^"]*"' "$OUT/weights-terms-warmup/results.json" \
  | sed 's/.*"dis2@\{0,1\}\([^"]*\)"$/\1/' || true)
extra=()
if [[ -n "$chosen" && "$chosen" != "dis2" && -n "${VARIANT[$chosen]:-}" ]]; then
  echo "   chosen on validation: dis2@$chosen (${VARIANT[$chosen]})"
  extra=(--variant "chosen:${VARIANT[$chosen]}")
else
  echo "   chosen on validation: dis2 itself (no variant did better)"
fi

echo "== 2/4 a teacher trained twice as long ($OUT/teacher-longer)"
sweep "$OUT/teacher-longer" "${common[@]}" --methods teacher-fill,dis2,dis2-no-kd "${extra[@]}" \
  --teacher-set "train.epochs=$((2 * EPOCHS))"

echo "== 3/4 a wider network, base width 16 ($OUT/wider)"
sweep "$OUT/wider" "${common[@]}" --methods teacher-fill,unimodal,dis2,dis2-no-kd "${extra[@]}" \
  --set model.base_width=16

echo "== 4/4 the unimodal model trained as long as sweep 2's teacher ($OUT/unimodal-longer)"
sweep "$OUT/unimodal-longer" --config "$CONFIG" --set "train.epochs=$((2 * EPOCHS))" "${shared[@]}" \
  --methods unimodal

{
  echo "# DLKD study: $SEEDS seed(s), $EPOCHS-epoch runs, scenarios $SCENARIOS"
  for part in weights-terms-warmup teacher-longer wider unimodal-longer; do
    echo
    echo "## $part"
    echo
    cat "$OUT/$part/results.md"
  done
} > "$OUT/study.md"
echo "study done in $(( ($(date +%s) - started) / 60 )) min: $OUT/study.md"
