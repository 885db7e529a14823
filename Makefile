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

.PHONY: setup build test test-slurm demo clean bench-step reproduce reproduce-quick

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
# modality-dropout, dis2 and its four ablations) x full and every missing scenario. Killed, it
# continues where it stopped. Tables: $(REPRODUCE_OUT)/results.{md,csv,json}, chart: miou.png.
REPRODUCE_CONFIG ?= experiments/synthetic.yaml
REPRODUCE_OUT ?= runs/reproduce
REPRODUCE_QUICK_OUT ?= runs/reproduce-quick
reproduce: setup
	$(BIN) synth --out data/synthetic
	$(BIN) sweep --config $(REPRODUCE_CONFIG) --set train.epochs=12 --out $(REPRODUCE_OUT)
	@cat $(REPRODUCE_OUT)/results.md

# The reduced grid of docs/results.md: the baselines, dis2 and its loss ablations (not the
# architecture ablations, which need teachers of their own) on the three single-modality losses,
# 12-epoch runs as in `make reproduce`; 22 minutes on 2 cores.
REPRODUCE_QUICK_METHODS ?= teacher-fill,unimodal,modality-dropout,dis2,dis2-no-kd,dis2-no-orth
reproduce-quick: setup
	$(BIN) synth --out data/synthetic
	$(BIN) sweep --config $(REPRODUCE_CONFIG) --set train.epochs=12 --methods $(REPRODUCE_QUICK_METHODS) \
		--scenarios dsm,sar,optical --out $(REPRODUCE_QUICK_OUT)
	@cat $(REPRODUCE_QUICK_OUT)/results.md

clean:
	$(CARGO) clean

.PHONY: bench-loader bench-predict synth

# Loader throughput on the synthetic benchmark (written to target/bench-synthetic when absent).
bench-loader: setup
	$(CARGO) run --release --locked --example bench_loader

# dis2 predict: megapixels/s (parallel vs one thread) and peak memory at two scene sizes.
bench-predict: setup
	$(CARGO) run --release --locked --example bench_predict

# The synthetic benchmark with its experiment YAML, in data/synthetic.
synth: setup
	$(BIN) synth --out data/synthetic
