//! dis2: remote-sensing semantic segmentation that stays accurate when a sensor is missing.
//!
//! An implementation of DIS2 (Kieu et al., arXiv 2601.13502): hierarchical hybrid fusion (HF), the
//! class-wise feature learning module (CFLM) and disentangled knowledge distillation (DLKD).
//!
//! Every module, its layer (imports point down) and what belongs where: docs/architecture.md.

pub mod alloc;
pub mod blocks;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod device;
pub mod dist;
pub mod eval;
pub mod export_torch;
pub mod figures;
pub mod fsutil;
pub mod import_torch;
pub mod info;
pub mod merge_students;
pub mod metrics;
pub mod model;
pub mod native;
pub mod precision;
pub mod predict;
pub mod preempt;
pub mod prepare;
pub(crate) mod progress;
pub mod report;
pub mod stats;
pub mod sweep;
pub mod tiling;
pub mod train;
