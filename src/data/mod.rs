//! Rasters, dataset layouts, sampling and the synthetic benchmark.
//!
//! The pieces, torchgeo-style: [`raster`] reads and writes GeoTIFFs through GDAL, with
//! [`validity`] deciding which bands are data and which pixels are valid (GDAL's mask model); [`labels`]
//! decodes class maps (ids, codes, ISPRS colours); [`layouts`] turns a dataset folder into
//! scenes (one type per layout); [`dataset`] checks and reads scenes; [`sampling`] chooses
//! windows and augmentations; [`loader`] reads batches in parallel into tensors; [`synth`]
//! writes the synthetic benchmark; [`stats`] computes normalisation statistics.

pub mod config;
pub mod dataset;
pub mod labels;
pub mod layouts;
pub mod loader;
pub mod raster;
pub mod rng;
pub mod sampling;
pub mod stats;
pub mod synth;
pub mod validity;

#[cfg(test)]
mod tests;
