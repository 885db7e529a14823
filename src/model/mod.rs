//! The DIS2 network: encoders, hierarchical hybrid fusion (HF), the class-wise feature learning
//! module (CFLM), decoders, the attention pools DLKD compares features through, and the
//! segmentation loss functions; the training objectives, DLKD and the orthogonality loss among
//! them, are in `dis2::train`. See [`dis2`] for the API.

pub(crate) mod cflm;
pub mod config;
pub mod decoder;
pub mod dis2;
pub(crate) mod encoder;
pub mod fusion;
pub mod import;
pub mod layers;
pub mod losses;
pub mod modality;
pub(crate) mod plain_decoder;
pub mod pool;
pub mod route;
pub mod scenario;

#[cfg(test)]
mod tests;

pub use dis2::{
    student_key, BranchOutputs, Dis2Net, DistillFeatures, EncoderOutputs, FusedTokens, TrainOutputs,
};
pub use route::{Fallback, Resolution, Route, RouteTable, ROUTE_NODATA};
pub use scenario::Scenario;
