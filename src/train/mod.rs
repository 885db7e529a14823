//! Training machinery: optimisers with checkpointable state, learning-rate schedules and
//! TensorBoard logging.

pub mod optim;
pub mod progress;
pub mod schedule;
pub mod tensorboard;
