//! The DIS2 network: encoders, hierarchical hybrid fusion (HF), the class-wise feature learning
//! module (CFLM), decoders and the DLKD losses. See [`dis2`] for the API.

pub mod cflm;
pub mod config;
pub mod decoder;
pub mod dis2;
pub mod encoder;
pub mod fusion;
pub mod import;
pub mod joint;
pub mod layers;
pub mod losses;
pub mod modality;
pub mod plain_decoder;
pub mod pool;
pub mod route;
pub mod scenario;

pub use dis2::{BranchOutputs, Dis2Net, TrainOutputs};
pub use route::Route;
pub use scenario::Scenario;
