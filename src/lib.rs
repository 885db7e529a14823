//! dis2: remote-sensing semantic segmentation that stays accurate when a sensor is missing.
//!
//! An implementation of DIS2 (Kieu et al., arXiv 2601.13502): hierarchical hybrid fusion (HF), the
//! class-wise feature learning module (CFLM) and disentangled knowledge distillation (DLKD).
//!
//! Layout: `cli` holds every command's arguments (clap) and dispatches to the work; `config` reads
//! experiment YAML files; `prepare` writes experiment files from data (the synthetic benchmark's,
//! the statistics of `dis2 stats`); `blocks` cuts one scene into spatial-block splits; `device`
//! parses `--device` and picks CPU or CUDA; `model` holds the network; `precision` parses
//! `--precision` / `train.precision`, detects bfloat16 support and runs the model's autocast
//! regions; `data` the rasters and datasets; `fsutil` the write-then-rename helpers every output
//! goes through; `eval`, `metrics`, `report` and `figures` score checkpoints and draw their
//! figures; `stats` holds the means, deviations and paired intervals of the sweep tables;
//! `checkpoint` saves and loads models; `import_torch` converts the authors' PyTorch weights;
//! `native` wraps the C++ kernels of `csrc/`; `dist` binds libtorch's distributed engine (c10d)
//! for data-parallel training. `progress` reports long work (a bar or plain lines) for `train`,
//! `predict` and `sweep`.

pub mod alloc;
pub mod blocks;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod device;
pub mod dist;
pub mod eval;
pub mod figures;
pub mod fsutil;
pub mod import_torch;
pub mod info;
pub mod metrics;
pub mod model;
pub mod native;
pub mod precision;
pub mod predict;
pub mod prepare;
pub(crate) mod progress;
pub mod report;
pub mod stats;
pub mod sweep;
pub mod tiling;
pub mod train;
