//! Rasters, dataset layouts, sampling and the synthetic benchmark.
//!
//! The pieces, torchgeo-style: [`raster`] reads and writes GeoTIFFs through GDAL (any path GDAL
//! opens, its virtual file systems included: `vsi`), with
//! [`validity`] deciding which bands are data and which pixels are valid (GDAL's mask model);
//! [`grid`] places the files of a scene on one grid, and `warp` resamples the files on other
//! grids through GDAL's warper (`gdal_warp`: the C functions the gdal crate does not bind),
//! their validity decided by the same mask model; `gdal_errors` catches the errors GDAL raises
//! while a file is written and closed (a full disk); [`labels`]
//! decodes class maps (ids, codes, ISPRS colours); [`layouts`] turns a dataset folder into
//! scenes (one type per layout); [`dataset`] checks and reads scenes; [`sampling`] chooses
//! windows and augmentations; [`loader`] reads batches in parallel into tensors, normalised by [`normalise`] (the one
//! normaliser of training and inference), against whose statistics [`input_range`] measures
//! each scene's inputs as inference reads them; [`synth`]
//! writes the synthetic benchmark, [`synth_gaps`] its gaps (`--gaps`); [`stats`] computes normalisation statistics.

pub mod config;
pub mod dataset;
pub(crate) mod gdal_errors;
mod gdal_warp;
pub mod grid;
pub(crate) mod input_range;
pub mod labels;
pub mod layouts;
pub mod loader;
pub mod normalise;
pub mod raster;
pub(crate) mod rng;
pub mod sampling;
pub mod stats;
pub mod synth;
pub mod synth_gaps;
pub mod validity;
pub(crate) mod vsi;
mod warp;

#[cfg(test)]
mod tests;
