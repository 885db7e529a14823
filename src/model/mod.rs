//! The DIS2 network: encoders, hierarchical hybrid fusion (HF), the class-wise feature learning
//! module (CFLM), decoders and the DLKD losses.

pub mod config;
