//! Training: `dis2 train-teacher`, `dis2 distill` and `dis2 distill --joint` (DLKD).
//!
//! `trainer` holds the loop; `objective` the losses of each kind of run (the one copy of each);
//! `dlkd` the distillation and orthogonality losses a student's objective adds;
//! `joint_backward` how the backward pass of a joint step runs (whole, or the teacher's and the
//! student's branches side by side); `validate` the validation; `run` the run directory,
//! checkpoints and resume; `optim`, `schedule`, `tensorboard` and `progress` the pieces;
//! `distributed` what a rank of a data-parallel run does differently (PyTorch DDP's semantics).

pub mod config;
pub(crate) mod distributed;
pub mod dlkd;
pub mod joint_backward;
pub mod objective;
pub mod optim;
pub mod progress;
pub mod run;
pub mod schedule;
pub mod tensorboard;
pub mod trainer;
pub mod validate;
