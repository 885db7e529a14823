//! Experiment files made from data: the synthetic benchmark's `experiment.yaml`, and the
//! train-split statistics written back into an experiment YAML (`dis2 synth`, `dis2 stats`).
//!
//! This sits above `data` because it reads and checks the whole [`Experiment`]; `data` computes
//! the statistics ([`crate::data::stats`]) and writes the rasters ([`crate::data::synth`]).

use anyhow::{anyhow, ensure, Context, Result};
use std::path::{Path, PathBuf};

use crate::config::{from_yaml_str, load_yaml, yaml_value, Experiment};
use crate::data::dataset::SceneDataset;
use crate::data::layouts::Split;
use crate::data::stats::{self, upsert_data_key, DatasetStats};
use crate::data::synth::SynthOptions;

/// Writes `experiment.yaml` for a benchmark generated with `options` into its folder, with the
/// normalisation of its train split; returns its path.
///
/// Errors: the folder cannot be written, or its train split cannot be read (run
/// [`crate::data::synth::generate`] first).
pub fn write_synthetic_experiment(options: &SynthOptions) -> Result<PathBuf> {
    let text = synthetic_experiment_yaml(options)?;
    let path = options.out.join("experiment.yaml");
    crate::fsutil::write_atomic(&path, text.as_bytes())?;
    update_statistics(&path, false)
        .with_context(|| format!("computing statistics for {}", path.display()))?;
    Ok(path)
}

/// `experiments/synthetic.yaml`: the synthetic benchmark's experiment, and the one source of the
/// `experiment.yaml` that `dis2 synth` writes.
const SYNTHETIC_EXPERIMENT: &str = include_str!("../experiments/synthetic.yaml");

/// `experiments/synthetic-gaps.yaml`: the benchmark with gaps (`dis2 synth --gaps`), the one
/// source of the `experiment.yaml` it writes.
const SYNTHETIC_GAPS_EXPERIMENT: &str = include_str!("../experiments/synthetic-gaps.yaml");

/// The experiment YAML text for a benchmark generated with `options`: `experiments/synthetic.yaml`
/// (with gaps `experiments/synthetic-gaps.yaml`) as written, without its comments, with the
/// benchmark's seed and folder (and with gaps its cloud masks, `data.missing_masks.optical`) and
/// an empty normalisation ([`update_statistics`] computes it from the benchmark's train split).
///
/// Errors: the built-in file no longer has a top-level `seed:` line or a block `data:` section
/// (the edits would not take).
fn synthetic_experiment_yaml(options: &SynthOptions) -> Result<String> {
    let (source, file) = if options.gaps {
        (SYNTHETIC_GAPS_EXPERIMENT, "experiments/synthetic-gaps.yaml")
    } else {
        (SYNTHETIC_EXPERIMENT, "experiments/synthetic.yaml")
    };
    let mut text = format!(
        "# The synthetic multimodal benchmark, written by\n\
         # `dis2 synth --out {} --scenes {} --size {} --seed {}{}`\n\
         # from {file} with this folder and seed.\n",
        options.out.display(),
        options.scenes,
        options.size,
        options.seed,
        if options.gaps { " --gaps" } else { "" }
    );
    // The file's comments speak of data/synthetic and its statistics, not of this benchmark.
    for line in source.lines() {
        if line.starts_with("seed:") {
            text.push_str(&format!("seed: {}\n", options.seed));
        } else if !line.trim_start().starts_with('#') {
            text.push_str(line);
            text.push('\n');
        }
    }
    let root = serde_yaml::to_string(&options.out)?;
    let dataset = format!("dataset:\n  synthetic:\n    root: {}\n", root.trim_end());
    let mut text = upsert_data_key(&text, "dataset", &dataset)?;
    let clouds = cloud_mask_folder(&options.out);
    if options.gaps {
        let folder = serde_yaml::to_string(&clouds)?;
        let masks = format!("missing_masks:\n  optical: {}\n", folder.trim_end());
        text = upsert_data_key(&text, "missing_masks", &masks)?;
    }
    let text = upsert_data_key(&text, "normalisation", "normalisation: {}\n")?;
    let check =
        yaml_value(&text).map_err(|e| anyhow!("{file} (built into dis2) after the edit: {e}"))?;
    let set = check["seed"].as_u64() == Some(options.seed)
        && check["data"]["dataset"]["synthetic"]["root"].as_str() == options.out.to_str()
        && (!options.gaps
            || check["data"]["missing_masks"]["optical"].as_str() == Some(clouds.as_str()));
    ensure!(
        set,
        "{file} (built into dis2): cannot set `seed` and `data.dataset.synthetic.root` for {}; \
         the file needs a top-level `seed:` line and a block `data:` section",
        options.out.display()
    );
    Ok(text)
}

/// Where the experiment of a benchmark with gaps in `out` finds the cloud masks:
/// `out/{split}/clouds` (`{split}` stands for the split's name).
fn cloud_mask_folder(out: &Path) -> String {
    format!("{}/{{split}}/clouds", out.display())
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_yaml::Value;

    /// Removes the key at the dotted path `key` (`data.normalisation`) from `value`.
    fn remove(value: &mut Value, key: &str) {
        let (parents, last) = key.rsplit_once('.').unwrap_or(("", key));
        let mut node = value;
        for part in parents.split('.').filter(|p| !p.is_empty()) {
            node = node.get_mut(part).unwrap();
        }
        node.as_mapping_mut().unwrap().remove(last).unwrap();
    }

    #[test]
    fn synth_writes_experiments_synthetic_yaml_with_its_own_folder_seed_and_statistics() {
        let dir = tempfile::tempdir().unwrap();
        let options = SynthOptions {
            out: dir.path().join("bench"),
            scenes: 3,
            size: 64,
            seed: 7,
            gaps: false,
        };
        crate::data::synth::generate(&options).unwrap();
        let path = write_synthetic_experiment(&options).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut written: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(written["seed"].as_u64(), Some(7), "{text}");
        assert_eq!(
            written["data"]["dataset"]["synthetic"]["root"].as_str(),
            options.out.to_str(),
            "{text}"
        );
        let exp = Experiment::load(&path, &[]).unwrap();
        let normalised: Vec<&String> = exp.data.normalisation.keys().collect();
        assert_eq!(normalised, ["dsm", "optical", "sar"]);
        // Everything else as in experiments/synthetic.yaml.
        let mut repository: Value = serde_yaml::from_str(SYNTHETIC_EXPERIMENT).unwrap();
        for key in ["seed", "data.dataset.synthetic.root", "data.normalisation"] {
            remove(&mut written, key);
            remove(&mut repository, key);
        }
        assert_eq!(written, repository, "{text}");
    }

    #[test]
    fn synth_gaps_writes_experiments_synthetic_gaps_yaml_with_its_own_folder_and_masks() {
        // The text only: `data.missing_masks` is read by the parser of the dataset key, checked
        // in a test of its own once both are in one tree.
        let out = PathBuf::from("bench dir/gaps");
        let options = SynthOptions {
            out: out.clone(),
            scenes: 3,
            size: 64,
            seed: 9,
            gaps: true,
        };
        let text = synthetic_experiment_yaml(&options).unwrap();
        assert!(text.contains("--seed 9 --gaps"), "{text}");
        assert!(
            text.contains("from experiments/synthetic-gaps.yaml"),
            "{text}"
        );
        let mut written: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(written["seed"].as_u64(), Some(9));
        assert_eq!(
            written["data"]["dataset"]["synthetic"]["root"].as_str(),
            Some("bench dir/gaps")
        );
        assert_eq!(
            written["data"]["missing_masks"]["optical"].as_str(),
            Some("bench dir/gaps/{split}/clouds"),
            "{text}"
        );
        let mut repository: Value = serde_yaml::from_str(SYNTHETIC_GAPS_EXPERIMENT).unwrap();
        assert_eq!(
            repository["data"]["missing_masks"]["optical"].as_str(),
            Some("data/synthetic-gaps/{split}/clouds")
        );
        let normalisation = written["data"]["normalisation"]
            .as_mapping()
            .map(|m| m.len());
        assert_eq!(normalisation, Some(0), "left for the statistics: {text}");
        for key in [
            "seed",
            "data.dataset.synthetic.root",
            "data.normalisation",
            "data.missing_masks.optical",
        ] {
            remove(&mut written, key);
            remove(&mut repository, key);
        }
        assert_eq!(written, repository, "{text}");
        // Without gaps, the file of the benchmark without them.
        let plain = synthetic_experiment_yaml(&SynthOptions {
            gaps: false,
            ..options
        })
        .unwrap();
        assert!(!plain.contains("missing_masks"), "{plain}");
    }
}
