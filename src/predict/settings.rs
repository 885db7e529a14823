//! The process-wide settings of an inference run, owned by one guard: `dis2 predict`, `dis2 eval`
//! and the sweep's scoring all run inference under an [`InferenceSettings`], which sets them
//! when the run starts and restores what was there when it ends (also on an error), so that a
//! library call leaves the process as it found it.
//!
//! - libtorch's intra-op threads (CPU only): half of them (at least one), leaving the rest to
//!   reading and cutting windows; libtorch's threads competing with the reader slow prediction
//!   down many times (figures in docs/predict.md, "Pipeline and memory").
//! - GDAL's block cache: at most [`GDAL_CACHE_BYTES`] unless the user set `GDAL_CACHEMAX`, so
//!   that memory does not grow with the scene (GDAL's default is 5 % of the RAM).

use std::sync::atomic::{AtomicBool, Ordering};
use tch::Device;

/// GDAL's block cache during inference, in bytes, unless `GDAL_CACHEMAX` is set.
pub const GDAL_CACHE_BYTES: i64 = 64 << 20;

/// Whether a guard holds the settings now: an inference run inside another (the sweep's scoring
/// inside a test's, a scene inside a run) keeps the outer run's settings instead of halving
/// the threads again.
static HELD: AtomicBool = AtomicBool::new(false);

/// Holds the settings of an inference run; dropping it restores the earlier ones.
#[must_use = "the settings are restored when the guard is dropped"]
#[derive(Debug)]
pub struct InferenceSettings {
    /// libtorch's thread count before, when this guard changed it.
    threads: Option<i32>,
    /// GDAL's cache size before (bytes), when this guard changed it.
    gdal_cache: Option<i64>,
    /// This guard is the outermost one (it clears [`HELD`] when dropped).
    outermost: bool,
}

impl InferenceSettings {
    /// Sets the inference settings for a run on `device` (see the module's documentation); an
    /// inner guard, while another is held, changes nothing.
    pub fn enter(device: Device) -> Self {
        if HELD.swap(true, Ordering::SeqCst) {
            return Self {
                threads: None,
                gdal_cache: None,
                outermost: false,
            };
        }
        let threads = (device == Device::Cpu).then(|| {
            let before = tch::get_num_threads();
            tch::set_num_threads((before / 2).max(1));
            before
        });
        Self {
            threads,
            gdal_cache: limit_gdal_cache(),
            outermost: true,
        }
    }
}

/// Lowers GDAL's block cache to [`GDAL_CACHE_BYTES`] unless `GDAL_CACHEMAX` is set in the
/// environment; returns the size before when it changed it.
fn limit_gdal_cache() -> Option<i64> {
    if std::env::var_os("GDAL_CACHEMAX").is_some() {
        return None;
    }
    // SAFETY: plain getters and setters of GDAL's global cache size, safe from any thread.
    let before = unsafe { gdal_sys::GDALGetCacheMax64() };
    if before <= GDAL_CACHE_BYTES {
        return None;
    }
    unsafe { gdal_sys::GDALSetCacheMax64(GDAL_CACHE_BYTES) };
    Some(before)
}

impl Drop for InferenceSettings {
    fn drop(&mut self) {
        if let Some(threads) = self.threads {
            tch::set_num_threads(threads);
        }
        if let Some(bytes) = self.gdal_cache {
            // SAFETY: as in `limit_gdal_cache`.
            unsafe { gdal_sys::GDALSetCacheMax64(bytes) };
        }
        if self.outermost {
            HELD.store(false, Ordering::SeqCst);
        }
    }
}
