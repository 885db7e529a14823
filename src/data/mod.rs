//! Rasters, dataset layouts, sampling and the synthetic benchmark.
//!
//! The pieces, torchgeo-style: [`raster`] reads and writes GeoTIFFs through GDAL; [`grid`]
//! places the files of a scene on one grid, resampling through GDAL's warper
//! (`gdal_warp`, the C functions the gdal crate does not bind); [`labels`]
//! decodes class maps (ids, codes, ISPRS colours); [`layouts`] turns a dataset folder into
//! scenes (one type per layout); [`dataset`] checks and reads scenes; [`sampling`] chooses
//! windows and augmentations; [`loader`] reads batches in parallel into tensors; [`synth`]
//! writes the synthetic benchmark; [`stats`] computes normalisation statistics.

pub mod config;
pub mod dataset;
mod gdal_warp;
pub mod grid;
pub mod labels;
pub mod layouts;
pub mod loader;
pub mod raster;
pub mod rng;
pub mod sampling;
pub mod stats;
pub mod synth;

#[cfg(test)]
mod tests;
