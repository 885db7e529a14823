//! The loader: reads and augments the samples of a batch in parallel (rayon) on a background
//! thread that prepares the next batches while the model trains on the current one (a bounded
//! queue). Batches come out as tch tensors.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use dis2::config::Experiment;
//! use dis2::data::{layouts::Split, loader::Loader};
//! let exp = Experiment::load("experiments/synthetic.yaml".as_ref(), &[])?;
//! for batch in Loader::train(&exp.data, &exp.model, exp.seed, Split::Train, 0)? {
//!     let batch = batch?;
//!     // batch.inputs[m]: [B, C, H, W] f32; batch.labels: [B, H, W] i64; batch.valid: [B, H, W] bool
//! }
//! # Ok(()) }
//! ```

use anyhow::{anyhow, bail, Result};
use rayon::prelude::*;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use tch::Tensor;

use super::config::DataConfig;
use super::dataset::SceneDataset;
use super::layouts::Split;
use super::normalise::Normaliser;
use super::sampling::{
    augment_plane, resize_nearest, resize_pixels, RandomCropSampler, SampleSpec,
    SlidingWindowSampler,
};
use crate::model::config::ModelConfig;
use crate::model::Scenario;

/// `data.class_weights` as a float tensor of `num_classes` values, for a weighted loss.
pub(crate) fn class_weights(data: &DataConfig) -> Option<Tensor> {
    data.class_weights
        .as_ref()
        .map(|w| Tensor::from_slice(&w.iter().map(|&v| v as f32).collect::<Vec<_>>()))
}

/// One prepared sample on the host.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub spec: SampleSpec,
    pub width: usize,
    pub height: usize,
    /// Per modality, `C x H x W` normalised values, 0 where the modality is invalid.
    pub inputs: Vec<Vec<f32>>,
    /// Per modality, `H x W` validity.
    pub masks: Vec<Vec<bool>>,
    /// `H x W` class ids, `ignore_index` where unlabelled or invalid in any modality (the
    /// loss's target).
    pub labels: Vec<i64>,
    /// `H x W` class ids as the label raster gives them (`ignore_index` only where unlabelled,
    /// ignored or invalid in the labels), for scoring branches that read fewer modalities.
    pub reference: Vec<i64>,
    /// `H x W`: every modality valid.
    pub valid: Vec<bool>,
}

/// Reads, resamples, augments and normalises one sample.
pub(crate) fn load_sample(
    dataset: &SceneDataset,
    spec: &SampleSpec,
    norm: &Normaliser,
) -> Result<Sample> {
    let raw = dataset.read(spec.scene, spec.window)?;
    let (pw, ph) = spec.pre_rotation_size();
    let (w, h) = (spec.out_width, spec.out_height);
    let n = w * h;
    let mut valid = vec![true; n];
    let mut inputs = Vec::with_capacity(raw.modalities.len());
    let mut masks = Vec::with_capacity(raw.modalities.len());
    for (m, px) in raw.modalities.iter().enumerate() {
        let px = resize_pixels(px, pw, ph);
        let mask = augment_plane(&px.valid, pw, ph, spec.augment);
        norm.check_modality(m, px.bands)?;
        let mut values = Vec::with_capacity(px.bands * n);
        for b in 0..px.bands {
            let plane = augment_plane(px.band(b), pw, ph, spec.augment);
            norm.extend_band(m, b, &mut values, &plane, &mask);
        }
        for (v, &ok) in valid.iter_mut().zip(&mask) {
            *v &= ok;
        }
        inputs.push(values);
        masks.push(mask);
    }
    let reference = resize_nearest(&raw.labels, raw.width, raw.height, pw, ph);
    let reference = augment_plane(&reference, pw, ph, spec.augment);
    let labels = reference
        .iter()
        .zip(&valid)
        .map(|(&l, &ok)| if ok { l } else { dataset.ignore_index })
        .collect();
    Ok(Sample {
        spec: *spec,
        width: w,
        height: h,
        inputs,
        masks,
        labels,
        reference,
        valid,
    })
}

/// A batch as tensors (on the CPU; move with `.to_device`).
#[derive(Debug)]
pub struct Batch {
    /// One `[B, C, H, W]` float tensor per modality, in model order, normalised, masked pixels 0.
    pub inputs: Vec<Tensor>,
    /// One `[B, H, W]` bool tensor per modality: where that modality has data.
    pub masks: Vec<Tensor>,
    /// `[B, H, W]` int64 class ids, `ignore_index` for ignored pixels and wherever a modality
    /// has no data: the teacher's pixels, `Batch::branch_labels(None, ..)`.
    pub labels: Tensor,
    /// `[B, H, W]` int64 class ids of the label rasters alone (see [`Sample::reference`]):
    /// scoring combines them with the masks of the modalities a branch reads.
    pub reference: Tensor,
    /// `[B, H, W]` bool: every modality has data.
    pub valid: Tensor,
    /// What each sample is (scene, window, augmentation), for writing predictions back.
    pub specs: Vec<SampleSpec>,
}

impl Batch {
    /// The labels a branch learns from and is scored on, `[B, H, W]` int64 on the CPU: the
    /// reference labels where every modality the branch reads has data, `ignore_index`
    /// elsewhere. `missing`: the scenario of a student (or of the filled teacher), whose missing
    /// modalities it never reads, so their gaps do not matter; `None`: the teacher, which reads
    /// every modality. The one definition of which pixels train and score which branch
    /// (docs/train.md, "Which pixels train which branch").
    pub(crate) fn branch_labels(&self, missing: Option<&Scenario>, ignore_index: i64) -> Tensor {
        let mut read = self.reference.ones_like().to_kind(tch::Kind::Bool);
        for (i, mask) in self.masks.iter().enumerate() {
            if !missing.is_some_and(|s| s.is_missing(i)) {
                read = read.logical_and(mask);
            }
        }
        self.reference
            .where_self(&read, &self.reference.full_like(ignore_index))
    }

    /// Stacks samples of equal size into tensors.
    pub(crate) fn from_samples(samples: &[Sample]) -> Result<Self> {
        let first = samples
            .first()
            .ok_or_else(|| anyhow!("cannot make a batch of no samples"))?;
        let (b, w, h) = (
            samples.len() as i64,
            first.width as i64,
            first.height as i64,
        );
        let shape = |s: &Sample| {
            let inputs: Vec<usize> = s.inputs.iter().map(Vec::len).collect();
            (
                s.width,
                s.height,
                inputs,
                s.masks.len(),
                s.labels.len(),
                s.valid.len(),
            )
        };
        if samples.iter().any(|s| shape(s) != shape(first)) {
            bail!("samples of one batch must have the same size and modalities");
        }
        let mut inputs = Vec::new();
        let mut masks = Vec::new();
        for m in 0..first.inputs.len() {
            let flat: Vec<f32> = samples
                .iter()
                .flat_map(|s| s.inputs[m].iter().copied())
                .collect();
            let c = first.inputs[m].len() as i64 / (w * h);
            inputs.push(Tensor::from_slice(&flat).view([b, c, h, w]));
            let mask: Vec<bool> = samples
                .iter()
                .flat_map(|s| s.masks[m].iter().copied())
                .collect();
            masks.push(Tensor::from_slice(&mask).view([b, h, w]));
        }
        let labels: Vec<i64> = samples
            .iter()
            .flat_map(|s| s.labels.iter().copied())
            .collect();
        let reference: Vec<i64> = samples
            .iter()
            .flat_map(|s| s.reference.iter().copied())
            .collect();
        let valid: Vec<bool> = samples
            .iter()
            .flat_map(|s| s.valid.iter().copied())
            .collect();
        Ok(Self {
            inputs,
            masks,
            labels: Tensor::from_slice(&labels).view([b, h, w]),
            reference: Tensor::from_slice(&reference).view([b, h, w]),
            valid: Tensor::from_slice(&valid).view([b, h, w]),
            specs: samples.iter().map(|s| s.spec).collect(),
        })
    }
}

/// Batching options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderOptions {
    pub batch_size: usize,
    /// Batches prepared ahead (the queue bound).
    pub prefetch: usize,
    /// Leave out a last, smaller batch.
    pub drop_last: bool,
}

/// An iterator over batches, prepared on a background thread.
pub struct Loader {
    rx: Option<Receiver<Result<Batch>>>,
    worker: Option<JoinHandle<()>>,
    batches: usize,
}

impl Loader {
    /// Starts preparing the batches of `specs` (in order) in the background.
    pub fn new(
        dataset: Arc<SceneDataset>,
        specs: Vec<SampleSpec>,
        norm: Arc<Normaliser>,
        options: LoaderOptions,
    ) -> Self {
        let size = options.batch_size.max(1);
        let mut chunks: Vec<Vec<SampleSpec>> =
            specs.chunks(size).map(<[SampleSpec]>::to_vec).collect();
        if options.drop_last && chunks.last().is_some_and(|c| c.len() < size) {
            chunks.pop();
        }
        let batches = chunks.len();
        let (tx, rx) = sync_channel(options.prefetch.max(1));
        let worker = std::thread::spawn(move || {
            for chunk in chunks {
                // The first error in sample order, so the same file is named every run.
                let batch = chunk
                    .par_iter()
                    .map(|spec| load_sample(&dataset, spec, &norm))
                    .collect::<Vec<Result<_>>>()
                    .into_iter()
                    .collect::<Result<Vec<_>>>()
                    .and_then(|samples| Batch::from_samples(&samples));
                let failed = batch.is_err();
                if tx.send(batch).is_err() || failed {
                    return;
                }
            }
        });
        Self {
            rx: Some(rx),
            worker: Some(worker),
            batches,
        }
    }

    /// Training batches of `epoch`: random crops of the split (usually train), full batches only,
    /// drawn from `seed` (the experiment's).
    pub fn train(
        data: &DataConfig,
        model: &ModelConfig,
        seed: u64,
        split: Split,
        epoch: u64,
    ) -> Result<Self> {
        let dataset = Arc::new(SceneDataset::open(data, model, split)?);
        Self::train_on(dataset, data, model, seed, epoch)
    }

    /// Training batches of `epoch` from an already opened dataset.
    pub(crate) fn train_on(
        dataset: Arc<SceneDataset>,
        data: &DataConfig,
        model: &ModelConfig,
        seed: u64,
        epoch: u64,
    ) -> Result<Self> {
        let norm = Arc::new(Normaliser::from_config(data, model)?);
        let specs = RandomCropSampler::from_config(data, model, seed).epoch(&dataset, epoch);
        let options = LoaderOptions {
            batch_size: data.sampling.batch_size,
            prefetch: data.sampling.prefetch,
            drop_last: true,
        };
        Ok(Self::new(dataset, specs, norm, options))
    }

    /// Validation or test batches: sliding windows over every scene of the split
    /// ([`SlidingWindowSampler`]: crop-sized, `data.sampling.val_stride` apart), all of them.
    pub fn sliding_windows(data: &DataConfig, model: &ModelConfig, split: Split) -> Result<Self> {
        let dataset = Arc::new(SceneDataset::open(data, model, split)?);
        let norm = Arc::new(Normaliser::from_config(data, model)?);
        let specs = SlidingWindowSampler::from_config(data, model).windows(&dataset);
        let options = LoaderOptions {
            batch_size: data.sampling.batch_size,
            prefetch: data.sampling.prefetch,
            drop_last: false,
        };
        Ok(Self::new(dataset, specs, norm, options))
    }

    /// Number of batches this loader yields.
    pub fn len(&self) -> usize {
        self.batches
    }

    pub fn is_empty(&self) -> bool {
        self.batches == 0
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the queue makes a blocked worker's send fail, so it stops; then wait for it.
        self.rx.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
