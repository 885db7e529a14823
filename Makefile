# dis2 — every target sets itself up (idempotent): torch venv in a cache outside the clone, GDAL, build.

DIS2_CACHE ?= $(HOME)/.cache/dis2
TORCH_VERSION ?= 2.13.0
DIS2_VENV ?= $(DIS2_CACHE)/torch-$(TORCH_VERSION)

# torch-sys finds libtorch inside the venv's torch package.
export DIS2_VENV TORCH_VERSION
export LIBTORCH_USE_PYTORCH := 1
export VIRTUAL_ENV := $(DIS2_VENV)
export PATH := $(DIS2_VENV)/bin:$(PATH)

CARGO ?= cargo
BIN := $(or $(CARGO_TARGET_DIR),target)/release/dis2

.PHONY: setup build test demo clean bench-step

setup:
	@bash scripts/setup.sh
	@$(MAKE) --no-print-directory build

build:
	$(CARGO) build --release --locked

test: setup
	$(CARGO) test --release --locked
	$(CARGO) clippy --release --locked --all-targets -- -D warnings
	$(CARGO) fmt --check

bench-step: setup
	$(CARGO) bench --locked --bench step

demo: setup
	$(BIN) info

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
