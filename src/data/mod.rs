//! Rasters, dataset layouts, sampling and the synthetic benchmark.
