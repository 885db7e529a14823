//! Experiment files made from data: the synthetic benchmark's `experiment.yaml`, and the
//! train-split statistics written back into an experiment YAML (`dis2 synth`, `dis2 stats`).
//!
//! This sits above `data` because it reads and checks the whole [`Experiment`]; `data` computes
//! the statistics ([`crate::data::stats`]) and writes the rasters ([`crate::data::synth`]).

use anyhow::{anyhow, Context, Result};
use std::path::{Path, PathBuf};

use crate::config::{from_yaml_str, load_yaml, Experiment};
use crate::data::dataset::SceneDataset;
use crate::data::layouts::Split;
use crate::data::stats::{self, DatasetStats};
use crate::data::synth::{self, SynthOptions};

/// Writes `experiment.yaml` for a benchmark generated with `options` into its folder, with the
/// normalisation of its train split; returns its path.
///
/// Errors: the folder cannot be written, or its train split cannot be read (run
/// [`synth::generate`] first).
pub fn write_synthetic_experiment(options: &SynthOptions) -> Result<PathBuf> {
    let root = options.out.to_string_lossy().into_owned();
    let text = synth::experiment_yaml(&root, options);
    let path = options.out.join("experiment.yaml");
    crate::fsutil::write_atomic(&path, text.as_bytes())?;
    update_statistics(&path, false)
        .with_context(|| format!("computing statistics for {}", path.display()))?;
    Ok(path)
}

/// What [`update_statistics`] computed and which stale entries it replaced.
#[derive(Debug, Clone)]
pub struct StatsUpdate {
    pub stats: DatasetStats,
    /// Entries that no longer fit the model (e.g. `data.normalisation.optical: 3 value(s) for
    /// 4 channel(s)`), replaced by the new statistics.
    pub replaced: Vec<String>,
}

/// Computes the train-split statistics of the experiment at `path` and writes
/// `data.normalisation` (and `data.class_weights` when asked) back into the file, atomically and
/// keeping its comments and other keys. Statistics already in the file that no longer fit the
/// model (a modality's band count changed, a class added) do not stop it: they are what it
/// replaces, and the returned [`StatsUpdate::replaced`] lists them.
///
/// Errors: the file cannot be read or parsed, the rest of it is not a valid experiment, the
/// train split cannot be read, or the updated file would not be a valid experiment (the file is
/// then left as it was).
pub fn update_statistics(path: &Path, class_weights: bool) -> Result<StatsUpdate> {
    let (exp, replaced) = load_for_statistics(path, class_weights)?;
    let dataset = SceneDataset::open(&exp.data, &exp.model, Split::Train)?;
    let stats = stats::compute(&dataset)?;
    let names: Vec<&str> = exp
        .model
        .modalities
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let updated = stats::yaml_with_statistics(&text, &names, &stats, class_weights)?;
    let check: Experiment =
        from_yaml_str(&updated).map_err(|e| anyhow!("{} after the update: {e}", path.display()))?;
    check
        .data
        .validate(&check.model)
        .with_context(|| format!("{} after the update: key `data`", path.display()))?;
    crate::fsutil::write_atomic(path, updated.as_bytes())?;
    Ok(StatsUpdate { stats, replaced })
}

/// The experiment at `path`, checked as [`Experiment::load`] does except for the statistics
/// about to be replaced (`data.normalisation`, and `data.class_weights` when `class_weights`);
/// with the stale entries among them described.
fn load_for_statistics(path: &Path, class_weights: bool) -> Result<(Experiment, Vec<String>)> {
    let mut exp: Experiment = load_yaml(path, &[])?;
    exp.model
        .validate()
        .with_context(|| format!("{}: key `model`", path.display()))?;
    let mut replaced = Vec::new();
    for (name, norm) in &exp.data.normalisation {
        let Some(m) = exp.model.modalities.iter().find(|m| &m.name == name) else {
            continue;
        };
        if norm.mean.len() as i64 != m.channels || norm.std.len() as i64 != m.channels {
            replaced.push(format!(
                "data.normalisation.{name}: {} value(s) for {} channel(s)",
                norm.mean.len(),
                m.channels
            ));
        }
    }
    exp.data.normalisation.clear();
    if class_weights {
        if let Some(w) = exp.data.class_weights.take() {
            if w.len() as i64 != exp.model.num_classes {
                replaced.push(format!(
                    "data.class_weights: {} value(s) for {} classes",
                    w.len(),
                    exp.model.num_classes
                ));
            }
        }
    }
    exp.data
        .validate(&exp.model)
        .with_context(|| format!("{}: key `data`", path.display()))?;
    exp.train
        .validate()
        .with_context(|| format!("{}: key `train`", path.display()))?;
    Ok((exp, replaced))
}
