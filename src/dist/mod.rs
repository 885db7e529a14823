//! Data-parallel training on libtorch's own distributed engine, c10d, bound in `csrc/dist*.cpp`:
//! the same engine PyTorch's `DistributedDataParallel` runs on.
//!
//! - [`launch`]: who this process is (rank, world size, local rank, where to meet), read from the
//!   variables `torchrun` sets (`WORLD_SIZE`, `RANK`, `LOCAL_RANK`, `MASTER_ADDR`,
//!   `MASTER_PORT`) or those of a Slurm step (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`,
//!   the first node of the step as master). Without them a command runs alone, as before.
//! - [`group`]: the process group: a `c10d::TCPStore` rendezvous, Gloo for CPU tensors, NCCL for
//!   CUDA tensors (Gloo where the build has no NCCL), and the collectives the trainer needs.
//! - [`reducer`]: PyTorch DDP's gradient reducer (`c10d::Reducer`): gradients in buckets, each
//!   bucket all-reduced and averaged as soon as the backward pass has produced it, so
//!   communication overlaps the rest of the backward pass.
//!
//! What the trainer does with them (shares of the data, what rank 0 alone writes) is in
//! `train::distributed`.

mod ffi;
pub mod group;
pub mod launch;
pub mod reducer;

pub use group::ProcessGroup;
pub use launch::{Launch, Launcher};
pub use reducer::{BucketOptions, Reducer};
