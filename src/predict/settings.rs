//! The process-wide settings of an inference run, owned by one guard: `dis2 predict`, `dis2 eval`
//! and the sweep's scoring all run inference under an [`InferenceSettings`], which sets them
//! when the run starts and restores what was there when it ends (also on an error), so that a
//! library call leaves the process as it found it.
//!
//! - The threads (CPU only), split between libtorch and the pipeline (reading and cutting
//!   windows) by [`ThreadSplit::choose`] from the cores and the model's work per batch: coarse
//!   work (large windows, wide models) gives libtorch every core and the reader one thread of
//!   its own; fine-grained work (small width-8 convolutions, whose threads synchronise many
//!   times per window) gives libtorch half, so that the reader never takes a core from it
//!   (figures in docs/predict.md, "Pipeline and memory").
//! - GDAL's block cache: at most [`GDAL_CACHE_BYTES`] unless the user set `GDAL_CACHEMAX`, so
//!   that memory does not grow with the scene (GDAL's default is 5 % of the RAM).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tch::Device;

use crate::model::config::ModelConfig;

/// GDAL's block cache during inference, in bytes, unless `GDAL_CACHEMAX` is set.
pub const GDAL_CACHE_BYTES: i64 = 64 << 20;

/// `base_width² x window pixels x batch` from which a batch's convolutions are coarse enough
/// for libtorch to share every core with the pipeline: width 32 at 128² and batch 8 is 2^27,
/// width 8 at 64² and batch 8 2^21 (figures in docs/predict.md). The same measure, and bound,
/// as the training step's `JointBackward::choose`.
pub const COARSE_WORK: i64 = 1 << 23;

/// The most cores coarse work shares with the pipeline. Reading, blending and writing cost
/// about 1 ms per 128² window, 1-2 % of the 85 ms one core takes to run the width-32 model on
/// it (docs/predict.md); a burst that takes a core from libtorch stalls all of its threads, so
/// with N cores that costs about N times the share, while a core kept free costs 1/N of the
/// model's speed: beyond 8 cores the core kept free is the cheaper (an estimate; measured on 2
/// cores only).
pub const SHARED_CORES: usize = 8;

/// Whether a guard holds the settings now: an inference run inside another (the sweep's scoring
/// inside a test's, a scene inside a run) keeps the outer run's settings instead of splitting
/// the threads again.
static HELD: AtomicBool = AtomicBool::new(false);

/// The pipeline's own thread pool while the outermost guard holds one (see [`pipeline_pool`]).
static PIPELINE: Mutex<Option<Arc<rayon::ThreadPool>>> = Mutex::new(None);

/// The model's work per batch as [`ThreadSplit::choose`] weighs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InferenceWork {
    /// The model's base width (channels of its first level).
    pub base_width: i64,
    /// Window size in pixels, `[height, width]` (the model's crop).
    pub window: [i64; 2],
    /// Windows per model call (`--batch`).
    pub batch: usize,
}

impl InferenceWork {
    /// The work of `model`'s windows in batches of `batch`.
    pub fn of(model: &ModelConfig, batch: usize) -> Self {
        Self {
            base_width: model.base_width,
            window: model.crop,
            batch,
        }
    }

    /// `base_width² x window pixels x batch`, compared with [`COARSE_WORK`].
    pub fn size(&self) -> i64 {
        let batch = i64::try_from(self.batch).unwrap_or(i64::MAX);
        (self.base_width * self.base_width)
            .saturating_mul(self.window[0] * self.window[1])
            .saturating_mul(batch)
    }
}

/// How an inference run's threads are split between libtorch and the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadSplit {
    /// libtorch's intra-op threads (the model).
    pub model: usize,
    /// The reader's threads (reading strips, cutting and normalising windows).
    pub pipeline: usize,
}

impl ThreadSplit {
    /// The split of `cores` for `work`: coarse work ([`InferenceWork::size`] at least
    /// [`COARSE_WORK`]) gives libtorch every core up to [`SHARED_CORES`], one less beyond, and
    /// the reader one thread (it reads windows over 20 times faster than one core runs even the
    /// width-8 model, so one thread keeps ahead, taking a core only in short bursts); finer work
    /// gives libtorch half of the cores (at least one) and the reader the rest.
    pub fn choose(cores: usize, work: &InferenceWork) -> Self {
        let cores = cores.max(1);
        if work.size() >= COARSE_WORK {
            let model = if cores > SHARED_CORES {
                cores - 1
            } else {
                cores
            };
            return Self { model, pipeline: 1 };
        }
        let model = (cores / 2).max(1);
        Self {
            model,
            pipeline: (cores - model).max(1),
        }
    }
}

/// The cores an inference run may use: rayon's global pool, which is `dis2 --threads N` when
/// given, else `RAYON_NUM_THREADS`, else the cores this process may run on
/// (`std::thread::available_parallelism`: its affinity mask and cgroup quota).
pub fn cores() -> usize {
    rayon::current_num_threads()
}

/// The thread pool the reader cuts windows in while an [`InferenceSettings`] is held on the
/// CPU ([`ThreadSplit::pipeline`] threads); `None` otherwise (rayon's global pool then).
pub(crate) fn pipeline_pool() -> Option<Arc<rayon::ThreadPool>> {
    PIPELINE.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Holds the settings of an inference run; dropping it restores the earlier ones.
#[must_use = "the settings are restored when the guard is dropped"]
#[derive(Debug)]
pub struct InferenceSettings {
    /// libtorch's thread count before, when this guard changed it.
    threads: Option<i32>,
    /// GDAL's cache size before (bytes), when this guard changed it.
    gdal_cache: Option<i64>,
    /// The split this guard set (`None`: not the outermost guard, or not on the CPU).
    split: Option<ThreadSplit>,
    /// This guard is the outermost one (it clears [`HELD`] when dropped).
    outermost: bool,
}

impl InferenceSettings {
    /// Sets the inference settings for `work` on `device` (see the module's documentation): on
    /// the CPU the split of [`ThreadSplit::choose`] over [`cores`], libtorch's threads set on
    /// the calling thread (the one that runs the model). An inner guard, while another is
    /// held, changes nothing.
    pub fn enter(device: Device, work: &InferenceWork) -> Self {
        let mut settings = Self {
            threads: None,
            gdal_cache: None,
            split: None,
            outermost: false,
        };
        if HELD.swap(true, Ordering::SeqCst) {
            return settings;
        }
        settings.outermost = true;
        settings.gdal_cache = limit_gdal_cache();
        if device == Device::Cpu {
            let split = ThreadSplit::choose(cores(), work);
            // Without a pool of its own (the system refused a thread) the reader cuts in
            // rayon's global pool, as it does for a library caller without a guard.
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(split.pipeline)
                .thread_name(|i| format!("dis2-read-{i}"))
                .build();
            *PIPELINE.lock().unwrap_or_else(|e| e.into_inner()) = pool.ok().map(Arc::new);
            settings.threads = Some(tch::get_num_threads());
            tch::set_num_threads(i32::try_from(split.model).unwrap_or(i32::MAX));
            settings.split = Some(split);
        }
        settings
    }

    /// The split this guard set: `None` for an inner guard or off the CPU.
    pub fn split(&self) -> Option<ThreadSplit> {
        self.split
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
            *PIPELINE.lock().unwrap_or_else(|e| e.into_inner()) = None;
            HELD.store(false, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(base_width: i64, side: i64, batch: usize) -> InferenceWork {
        InferenceWork {
            base_width,
            window: [side, side],
            batch,
        }
    }

    /// Width 32 at 128² takes every core with one reader thread (one core less beyond 8);
    /// width 8 at 64² half of them, the reader the rest; on 2 cores and on 16, and never zero
    /// threads.
    #[test]
    fn coarse_work_gets_every_core_fine_work_half() {
        let (w32, w8) = (work(32, 128, 8), work(8, 64, 8));
        let split = |model, pipeline| ThreadSplit { model, pipeline };
        assert_eq!(ThreadSplit::choose(2, &w32), split(2, 1));
        assert_eq!(ThreadSplit::choose(8, &w32), split(8, 1));
        assert_eq!(ThreadSplit::choose(16, &w32), split(15, 1));
        assert_eq!(ThreadSplit::choose(2, &w8), split(1, 1));
        assert_eq!(ThreadSplit::choose(16, &w8), split(8, 8));
        assert_eq!(ThreadSplit::choose(1, &w32), split(1, 1));
        assert_eq!(ThreadSplit::choose(1, &w8), split(1, 1));
        assert_eq!(ThreadSplit::choose(0, &w8), split(1, 1));
        // The bound: width 16 at 128² and batch 2 is exactly COARSE_WORK.
        assert_eq!(work(16, 128, 2).size(), COARSE_WORK);
        assert_eq!(ThreadSplit::choose(4, &work(16, 128, 2)).model, 4);
        assert_eq!(ThreadSplit::choose(4, &work(16, 128, 1)).model, 2);
    }
}
