//! Input normalisation, the one place: per modality and band `(x - mean) / std` where the
//! modality has data, and 0 (the training mean, in normalised space) where it has none.
//!
//! Training samples ([`super::loader`]), `dis2 predict`'s windows and `dis2 eval`'s figures are
//! all normalised by [`Normaliser::extend_band`], and every [`Normaliser`] is built by
//! [`Normaliser::new`], which checks the statistics against the model's band counts once, so
//! training and inference cannot drift apart.

use anyhow::{anyhow, bail, Result};
use std::collections::BTreeMap;

use super::config::{DataConfig, Normalisation};
use crate::model::config::ModelConfig;

/// Per-modality, per-band `(x - mean) / std`, in model order.
#[derive(Debug, Clone, PartialEq)]
pub struct Normaliser {
    /// `[modality][band]` means, in the input's units (after GDAL's scale and offset).
    pub mean: Vec<Vec<f32>>,
    /// `[modality][band]` standard deviations, positive.
    pub std: Vec<Vec<f32>>,
}

/// Where the statistics of a [`Normaliser`] come from, for its error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatsSource {
    /// `data.normalisation` of an experiment file (training, validation).
    Experiment,
    /// The normalisation a checkpoint was saved with (predict, eval).
    Checkpoint,
}

impl Normaliser {
    /// One entry of `stats` per modality of `model`, in model order, each checked by
    /// [`Normalisation::check`] against the modality's band count.
    ///
    /// # Errors
    /// A model modality without statistics (saying how to get them), or statistics whose
    /// length, values or signs do not fit the modality.
    pub(crate) fn new(
        model: &ModelConfig,
        stats: &BTreeMap<String, Normalisation>,
        source: StatsSource,
    ) -> Result<Self> {
        let mut norm = Self {
            mean: Vec::with_capacity(model.modalities.len()),
            std: Vec::with_capacity(model.modalities.len()),
        };
        for m in &model.modalities {
            let n = stats.get(&m.name).ok_or_else(|| missing(source, &m.name))?;
            let checked = n.check(&m.name, m.channels.max(0) as usize);
            match source {
                StatsSource::Experiment => checked?,
                StatsSource::Checkpoint => checked.map_err(|e| {
                    anyhow!("the checkpoint's normalisation does not fit its model: {e:#}")
                })?,
            }
            norm.mean.push(n.mean.iter().map(|&v| v as f32).collect());
            norm.std.push(n.std.iter().map(|&v| v as f32).collect());
        }
        Ok(norm)
    }

    /// From `data.normalisation`; every model modality must have an entry.
    pub(crate) fn from_config(data: &DataConfig, model: &ModelConfig) -> Result<Self> {
        Self::new(model, &data.normalisation, StatsSource::Experiment)
    }

    /// No normalisation (mean 0, std 1) for the given band counts.
    #[cfg(test)]
    pub(crate) fn identity(channels: &[usize]) -> Self {
        Self {
            mean: channels.iter().map(|&c| vec![0.0; c]).collect(),
            std: channels.iter().map(|&c| vec![1.0; c]).collect(),
        }
    }

    /// Checks that modality `m` (model order) has statistics for `bands` bands: the guard for
    /// pixels read by a dataset of another model than the statistics'.
    pub(crate) fn check_modality(&self, m: usize, bands: usize) -> Result<()> {
        match self.mean.get(m) {
            None => bail!(
                "the normalisation covers {} modalities, the input has at least {}",
                self.mean.len(),
                m + 1
            ),
            Some(mean) if mean.len() != bands => bail!(
                "the normalisation of modality {m} has {} values for {bands} bands",
                mean.len()
            ),
            Some(_) => Ok(()),
        }
    }

    /// Appends band `b` of modality `m` (model order): `(x - mean) / std` where `valid`, else 0.
    /// `values` and `valid` are the same pixels (any run of them: a plane, a row).
    ///
    /// # Panics
    /// If `m` or `b` is out of range or the slices differ in length: callers check the band
    /// counts of their rasters against the model ([`crate::data::raster::RasterInfo::check_bands`])
    /// before reading, and the statistics were checked against the same model by [`Self::new`].
    pub(crate) fn extend_band(
        &self,
        m: usize,
        b: usize,
        out: &mut Vec<f32>,
        values: &[f32],
        valid: &[bool],
    ) {
        assert_eq!(
            values.len(),
            valid.len(),
            "values and validity differ in length"
        );
        let (mean, std) = (self.mean[m][b], self.std[m][b]);
        out.extend(
            values
                .iter()
                .zip(valid)
                .map(|(&v, &ok)| if ok { (v - mean) / std } else { 0.0 }),
        );
    }
}

/// The error for a model modality without statistics.
fn missing(source: StatsSource, name: &str) -> anyhow::Error {
    match source {
        StatsSource::Experiment => anyhow!(
            "data.normalisation.{name}: missing; set it or run `dis2 stats --config <experiment.yaml>`"
        ),
        StatsSource::Checkpoint => anyhow!(
            "the checkpoint has no normalisation for modality {name}: it was saved without the \
             training data's statistics (CheckpointInfo::with_data)"
        ),
    }
}
