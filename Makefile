# dis2 — every target sets itself up (idempotent): torch venv in a cache outside the clone, GDAL, build.

DIS2_CACHE ?= $(HOME)/.cache/dis2
TORCH_VERSION ?= 2.13.0
DIS2_VENV ?= $(DIS2_CACHE)/torch-$(TORCH_VERSION)

# torch-sys finds libtorch through .libtorch, the link to the venv's torch package that
# scripts/setup.sh makes (.cargo/config.toml), so that make and a plain cargo build the same way;
# a LIBTORCH or LIBTORCH_USE_PYTORCH of the calling shell would send it elsewhere.
export DIS2_VENV TORCH_VERSION
unexport LIBTORCH LIBTORCH_USE_PYTORCH

CARGO ?= cargo
BIN := $(or $(CARGO_TARGET_DIR),target)/release/dis2

.PHONY: setup build test test-slurm demo clean bench-step bench-step-profile reproduce reproduce-quick cflm-width joint-equal-updates reproduce-smoke real-data reproduce-real dlkd-study

setup:
	@bash scripts/setup.sh
	@$(MAKE) --no-print-directory build

build: .libtorch
	$(CARGO) build --release --locked

# Made by the set-up (missing, or dangling once the venv is gone).
.libtorch:
	@bash scripts/setup.sh

test: setup
	$(CARGO) test --release --locked
	$(CARGO) clippy --release --locked --all-targets -- -D warnings
	$(CARGO) fmt --check
	DIS2=$(BIN) bash scripts/slurm/test.sh

# The Slurm batch scripts of scripts/slurm/ on a one-node Slurm started in a temporary directory
# (about 1.5 min; installs Debian's slurm-wlm and munge when missing, as root). Part of `make test`.
test-slurm: build
	DIS2=$(BIN) bash scripts/slurm/test.sh

bench-step: setup
	$(CARGO) bench --locked --bench step

# Where a width-32 training step's time goes, fp32 beside bf16, by kind of op and by op
# (libtorch's profiler; docs/model.md reads it). Under a minute on 2 cores.
bench-step-profile: setup
	DIS2_BENCH_PROFILE=1 $(CARGO) bench --locked --bench step

# The main job end to end on the synthetic benchmark: a teacher on optical + DSM + SAR, then the
# student for a lost DSM, distilled from it. A few minutes on 2 cores; starts afresh each time.
DEMO_RUNS := runs/demo
demo: setup
	$(BIN) info
	$(BIN) synth --out data/synthetic
	rm -rf $(DEMO_RUNS)
	$(BIN) train-teacher --config experiments/synthetic.yaml --out $(DEMO_RUNS)/teacher
	$(BIN) distill --config experiments/synthetic.yaml --teacher $(DEMO_RUNS)/teacher/checkpoints/best \
		--missing dsm --out $(DEMO_RUNS)/student-dsm
	@echo
	@echo "demo done: teacher in $(DEMO_RUNS)/teacher, DSM-missing student in $(DEMO_RUNS)/student-dsm"
	@echo "  checkpoints: $(DEMO_RUNS)/*/checkpoints/{best,last}"
	@echo "  logs:        tensorboard --logdir $(DEMO_RUNS)   (and metrics.jsonl, validation.jsonl)"

# The ablation sweep on the synthetic benchmark: every method (teacher-fill, unimodal,
# modality-dropout, dis2 and its four ablations, dis2-joint: the authors' joint training) x full
# and every missing scenario x $(SEEDS) seeds. Killed, it continues where it stopped. Tables (mean ± sd over seeds, dis2's paired
# differences with 95 % intervals): $(REPRODUCE_OUT)/results.{md,csv,json}, differences.csv;
# chart: miou.png. 2 h 21 min on 2 cores with JOBS=2 (docs/eval.md).
REPRODUCE_CONFIG ?= experiments/synthetic.yaml
REPRODUCE_OUT ?= runs/reproduce
REPRODUCE_QUICK_OUT ?= runs/reproduce-quick
REPRODUCE_SMOKE_OUT ?= runs/reproduce-smoke
SEEDS ?= 3
# The sweeps run as JOBS shards side by side (scripts/sweep-local.sh), each with THREADS threads
# (default: the cores divided by JOBS). Two 1-thread shards finish 1.6 x sooner than one 2-thread
# sweep on the 2-core VM (docs/results.md, "Running the sweeps"). THREADS changes the numbers in
# the last digits (libtorch splits its sums by thread); JOBS does not.
JOBS ?= $(shell [ "$$(nproc)" -ge 2 ] && echo 2 || echo 1)
SWEEP_LOCAL = JOBS=$(JOBS) BIN=$(BIN) bash scripts/sweep-local.sh
reproduce: setup
	$(BIN) synth --out data/synthetic
	$(SWEEP_LOCAL) $(REPRODUCE_OUT) --config $(REPRODUCE_CONFIG) --set train.epochs=12 --seeds $(SEEDS)
	@cat $(REPRODUCE_OUT)/results.md

# The reduced grid of docs/results.md: the baselines, dis2 and its loss ablations (not the
# architecture ablations, which need teachers of their own) and dis2-joint (teacher and students
# trained together, one run per seed) on the three single-modality losses, 12-epoch runs as in
# `make reproduce`, $(SEEDS) seeds.
REPRODUCE_QUICK_METHODS ?= teacher-fill,unimodal,modality-dropout,dis2,dis2-no-kd,dis2-no-orth,dis2-joint
reproduce-quick: setup
	$(BIN) synth --out data/synthetic
	$(SWEEP_LOCAL) $(REPRODUCE_QUICK_OUT) --config $(REPRODUCE_CONFIG) --set train.epochs=12 \
		--methods $(REPRODUCE_QUICK_METHODS) --scenarios dsm,sar,optical --seeds $(SEEDS)
	@cat $(REPRODUCE_QUICK_OUT)/results.md

# The class-wise decoder's width (docs/results.md, issue 26): the teacher, dis2 and dis2-no-cflm
# (each with a teacher of its own) for a lost DSM at each of $(CFLM_WIDTHS), 12-epoch runs,
# $(SEEDS) seeds, one sweep folder per width (runs/cflm-width/w<width>). About 45 min on 2 cores
# for widths 8 and 16; width 32 takes several times longer.
CFLM_WIDTHS ?= 8 16
CFLM_WIDTH_OUT ?= runs/cflm-width
cflm-width: setup
	$(BIN) synth --out data/synthetic
	for w in $(CFLM_WIDTHS); do \
		$(SWEEP_LOCAL) $(CFLM_WIDTH_OUT)/w$$w --config $(REPRODUCE_CONFIG) --set train.epochs=12 \
			--set model.base_width=$$w --methods teacher-fill,dis2,dis2-no-cflm --scenarios dsm \
			--seeds $(SEEDS) || exit 1; \
	done
	@for w in $(CFLM_WIDTHS); do echo "== base width $$w"; cat $(CFLM_WIDTH_OUT)/w$$w/results.md; done

# The joint protocol with as many updates per student as a two-stage student gets (docs/results.md,
# issue 26): 36-epoch dis2-joint runs (a third of the batches each for three students), $(SEEDS)
# seeds. About 35 min on 2 cores.
JOINT_EQUAL_OUT ?= runs/joint-36
joint-equal-updates: setup
	$(BIN) synth --out data/synthetic
	$(SWEEP_LOCAL) $(JOINT_EQUAL_OUT) --config $(REPRODUCE_CONFIG) --set train.epochs=36 \
		--methods dis2-joint --scenarios dsm,sar,optical --seeds $(SEEDS)
	@cat $(JOINT_EQUAL_OUT)/results.md

# The smallest end-to-end check of the seeded tables, under 30 minutes on 2 cores: the filled
# teacher, the unimodal model, dis2 and dis2-no-kd for a lost DSM, 6-epoch runs, $(SEEDS) seeds.
REPRODUCE_SMOKE_METHODS ?= teacher-fill,unimodal,dis2,dis2-no-kd
reproduce-smoke: setup
	$(BIN) synth --out data/synthetic
	$(SWEEP_LOCAL) $(REPRODUCE_SMOKE_OUT) --config $(REPRODUCE_CONFIG) --set train.epochs=6 \
		--methods $(REPRODUCE_SMOKE_METHODS) --scenarios dsm --seeds $(SEEDS)
	@cat $(REPRODUCE_SMOKE_OUT)/results.md

# The real-data run (docs/results.md, README "Real data"): the eo-learn Sentinel-2 + DEM patch of
# ../shared cut into spatial blocks (data/eolearn-slovenia), then the filled teacher, the
# optical-only model, dis2 and dis2-no-kd for a lost DEM, $(SEEDS) seeds.
REAL_FIXTURE ?= ../shared/fixtures/real/eolearn-slovenia
REAL_OUT ?= runs/reproduce-real
REAL_OPTICAL = $(REAL_FIXTURE)/optical_t0.tif,$(REAL_FIXTURE)/optical_t1.tif,$(REAL_FIXTURE)/optical_t2.tif,$(REAL_FIXTURE)/optical_t3.tif,$(REAL_FIXTURE)/optical_t4.tif
real-data: setup
	$(BIN) blocks --grid 4x4 --out data/eolearn-slovenia --labels $(REAL_FIXTURE)/label.tif \
		--modality optical=$(REAL_OPTICAL) --modality dsm=$(REAL_FIXTURE)/dsm.tif

# One thread a shard: the model is tiny (32 x 32 crops), and on a busy machine OpenMP's spinning
# threads made 20 steps take 203 s instead of 12 s.
reproduce-real: real-data
	THREADS=1 $(SWEEP_LOCAL) $(REAL_OUT) --config experiments/eolearn-slovenia.yaml \
		--methods teacher-fill,unimodal,dis2,dis2-no-kd --scenarios dsm --seeds $(SEEDS)
	@cat $(REAL_OUT)/results.md

# The DLKD study (docs/results.md): KD weight, KD terms, warm-up, a longer-trained and a wider
# teacher, $(SEEDS) seeds, settings chosen on validation; tables under runs/dlkd-study. The
# documented run is a lost DSM; another loss goes into its own folder, e.g.
# `OUT=runs/dlkd-study-sar STUDY_SCENARIOS=sar make dlkd-study`. Killed, it continues where it
# stopped.
STUDY_SCENARIOS ?= dsm
dlkd-study: setup
	$(BIN) synth --out data/synthetic
	SEEDS=$(SEEDS) JOBS=$(JOBS) SCENARIOS=$(STUDY_SCENARIOS) BIN=$(BIN) bash scripts/dlkd-study.sh

clean:
	$(CARGO) clean

.PHONY: bench-loader bench-predict synth synth-gaps

# Loader throughput on the synthetic benchmark (written to target/bench-synthetic when absent).
bench-loader: setup
	$(CARGO) run --release --locked --example bench_loader

# dis2 predict: megapixels/s (parallel vs one thread, one route vs two) and peak memory at two
# scene sizes.
bench-predict: setup
	$(CARGO) run --release --locked --example bench_predict

# The synthetic benchmark with its experiment YAML, in data/synthetic.
synth: setup
	$(BIN) synth --out data/synthetic

# The synthetic benchmark with SAR swath edges, DSM voids and clouds (their masks in
# {split}/clouds/), in data/synthetic-gaps.
synth-gaps: setup
	$(BIN) synth --gaps --out data/synthetic-gaps

# Routes per pixel on the gaps benchmark (docs/results.md, "Routes per pixel on the gaps
# benchmark"): per seed a teacher on data/synthetic-gaps and the students of the missing sets that
# cover most of its pixels (optical, SAR, both, DSM), distilled and merged into one checkpoint;
# then the composite (context margin chosen on val), each student with its modality dropped from
# every scene, the teacher alone and one branch per scene, scored on the same pixels. About
# 25 min on 2 cores. Tables: $(GAPS_OUT)/results.md.
GAPS_OUT ?= runs/gaps
GAPS_SEEDS ?= 42 43 44
.PHONY: reproduce-gaps
reproduce-gaps: synth-gaps
	BIN=$(BIN) CONFIG=data/synthetic-gaps/experiment.yaml SEEDS="$(GAPS_SEEDS)" JOBS=$(JOBS) \
		PYTHON=$(DIS2_VENV)/bin/python bash scripts/gaps-results.sh $(GAPS_OUT)
