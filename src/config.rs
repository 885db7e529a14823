//! Experiment configuration: YAML files in `experiments/`, read into typed structs that refuse
//! unknown keys, with `--set key.path=value` overrides from the command line.
//!
//! Errors name the file, the key path and the line, e.g.
//! `experiments/x.yaml: model.base_widht (line 4, column 3): unknown field ...`.

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};
use std::path::Path;

use crate::data::config::DataConfig;
use crate::model::config::ModelConfig;
use crate::train::config::TrainConfig;

/// One experiment: everything a run needs to be repeated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// A short name, used for run directories.
    pub name: String,
    /// Seed of every random choice (initialisation, sampling, augmentation).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// The network.
    pub model: ModelConfig,
    /// The dataset, normalisation and sampling (default: the synthetic benchmark).
    #[serde(default)]
    pub data: DataConfig,
    /// Optimiser, schedule, loss weights and validation of training.
    #[serde(default)]
    pub train: TrainConfig,
}

fn default_seed() -> u64 {
    42
}

impl Experiment {
    /// Reads `path`, applies the `--set` overrides and checks the result.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let experiment: Self = load_yaml(path, overrides)?;
        experiment
            .model
            .validate()
            .with_context(|| format!("{}: key `model`", path.display()))?;
        experiment
            .data
            .validate(&experiment.model)
            .with_context(|| format!("{}: key `data`", path.display()))?;
        experiment
            .train
            .validate()
            .with_context(|| format!("{}: key `train`", path.display()))?;
        Ok(experiment)
    }

    /// Writes the effective configuration (after overrides) to `path` (a run's `config.yaml`).
    pub(crate) fn save_effective(&self, path: &Path) -> Result<()> {
        let text = serde_yaml::to_string(self).context("cannot serialise the configuration")?;
        crate::fsutil::write_atomic(path, text.as_bytes())
    }
}

/// Reads a YAML file into `T`, refusing unknown keys, then applies `key.path=value` overrides.
pub(crate) fn load_yaml<T: DeserializeOwned>(path: &Path, overrides: &[String]) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read configuration file {}", path.display()))?;
    let parsed: T = from_yaml_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    if overrides.is_empty() {
        return Ok(parsed);
    }
    let mut value: Value =
        serde_yaml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    for item in overrides {
        apply_override(&mut value, item).with_context(|| format!("--set {item}"))?;
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        anyhow!(
            "{} with --set overrides: key `{key}`: {}",
            path.display(),
            e.into_inner()
        )
    })
}

/// Deserialises YAML text; the error names the key path, line and column.
pub(crate) fn from_yaml_str<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let place = match inner.location() {
            Some(loc) => format!(" (line {}, column {})", loc.line(), loc.column()),
            None => String::new(),
        };
        // serde_yaml repeats the location at the end of its message; keep one copy.
        let message = inner.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        format!("key `{key}`{place}: {message}")
    })
}

/// Sets `a.b.c` to the YAML value after `=` (parsed as YAML, so `0.01`, `true`, `[64, 64]` work).
pub(crate) fn apply_override(root: &mut Value, item: &str) -> Result<()> {
    let (key, raw) = item
        .split_once('=')
        .ok_or_else(|| anyhow!("expected KEY.PATH=VALUE, for example train.lr=0.01"))?;
    let value: Value = serde_yaml::from_str(raw).with_context(|| format!("bad value {raw:?}"))?;
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("bad key {key:?}: expected dot-separated names");
    }
    let mut node = root;
    for (depth, part) in parts.iter().enumerate() {
        if node.is_null() {
            *node = Value::Mapping(Mapping::new());
        }
        let map = node.as_mapping_mut().ok_or_else(|| {
            anyhow!(
                "`{}` is not a section, cannot set a key below it",
                parts[..depth].join(".")
            )
        })?;
        let entry = map
            .entry(Value::String(part.to_string()))
            .or_insert(Value::Null);
        if depth + 1 == parts.len() {
            *entry = value;
            return Ok(());
        }
        node = entry;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "name: t\nseed: 1\nmodel:\n  base_width: 8\n  num_classes: 5\n  crop: [64, 64]\n  modalities:\n    - {name: optical, channels: 3}\n    - {name: dsm, channels: 1}\n";

    fn write(dir: &Path, text: &str) -> std::path::PathBuf {
        let path = dir.join("exp.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn reads_a_good_file() {
        let dir = tempfile::tempdir().unwrap();
        let exp = Experiment::load(&write(dir.path(), GOOD), &[]).unwrap();
        assert_eq!(exp.model.base_width, 8);
        assert_eq!(exp.model.modalities.len(), 2);
    }

    #[test]
    fn misspelled_key_names_file_key_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &GOOD.replace("base_width", "base_widht"));
        let err = format!("{:#}", Experiment::load(&path, &[]).unwrap_err());
        assert!(err.contains("exp.yaml"), "{err}");
        assert!(err.contains("model.base_widht"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("unknown field `base_widht`"), "{err}");
    }

    #[test]
    fn overrides_replace_values_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), GOOD);
        let exp =
            Experiment::load(&path, &["model.base_width=16".into(), "seed=7".into()]).unwrap();
        assert_eq!((exp.model.base_width, exp.seed), (16, 7));
        let err = format!(
            "{:#}",
            Experiment::load(&path, &["model.widht=3".into()]).unwrap_err()
        );
        assert!(
            err.contains("model.widht") && err.contains("--set"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            Experiment::load(&path, &["seed".into()]).unwrap_err()
        );
        assert!(err.contains("KEY.PATH=VALUE"), "{err}");
        let err = format!(
            "{:#}",
            Experiment::load(&path, &["name.x=1".into()]).unwrap_err()
        );
        assert!(err.contains("`name` is not a section"), "{err}");
    }

    #[test]
    fn data_section_defaults_to_the_synthetic_benchmark() {
        let dir = tempfile::tempdir().unwrap();
        let exp = Experiment::load(&write(dir.path(), GOOD), &[]).unwrap();
        assert_eq!(exp.data, DataConfig::default());
        assert_eq!(
            exp.data.dataset,
            crate::data::config::DatasetConfig::Synthetic(crate::data::config::SyntheticConfig {
                root: "data/synthetic".into()
            })
        );
    }

    #[test]
    fn data_section_errors_name_file_key_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let potsdam =
            format!("{GOOD}data:\n  dataset:\n    potsdam: {{root: /d, erroded_labels: true}}\n");
        let err = format!(
            "{:#}",
            Experiment::load(&write(dir.path(), &potsdam), &[]).unwrap_err()
        );
        assert!(
            err.contains("exp.yaml") && err.contains("data.dataset.potsdam.erroded_labels"),
            "{err}"
        );
        assert!(err.contains("line 12"), "{err}");
        let two = format!("{GOOD}data:\n  dataset:\n    synthetic: {{root: a}}\n    generic: {{train: {{modalities: {{}}}}}}\n");
        let err = format!(
            "{:#}",
            Experiment::load(&write(dir.path(), &two), &[]).unwrap_err()
        );
        assert!(
            err.contains("data.dataset") && err.contains("name exactly one layout"),
            "{err}"
        );
        let product = format!(
            "{GOOD}data:\n  dataset:\n    potsdam: {{root: /d, modalities: {{optical: rgbn}}}}\n"
        );
        let err = format!(
            "{:#}",
            Experiment::load(&write(dir.path(), &product), &[]).unwrap_err()
        );
        assert!(
            err.contains("data.dataset.potsdam.modalities.optical") && err.contains("rgbn"),
            "{err}"
        );
        let norm =
            format!("{GOOD}data:\n  normalisation:\n    optical: {{mean: [1, 2], std: [1, 1]}}\n");
        let err = format!(
            "{:#}",
            Experiment::load(&write(dir.path(), &norm), &[]).unwrap_err()
        );
        assert!(
            err.contains("exp.yaml: key `data`")
                && err.contains("normalisation.optical.mean: 2 value(s), expected 3"),
            "{err}"
        );
        let ignore = format!("{GOOD}data:\n  ignore_index: 4\n");
        let err = format!(
            "{:#}",
            Experiment::load(&write(dir.path(), &ignore), &[]).unwrap_err()
        );
        assert!(err.contains("ignore_index: 4 is a class id"), "{err}");
        let path = write(dir.path(), GOOD);
        let err = format!(
            "{:#}",
            Experiment::load(&path, &["data.sampling.scale=[2, 1]".into()]).unwrap_err()
        );
        assert!(err.contains("sampling.scale: [2, 1]"), "{err}");
        let err = format!(
            "{:#}",
            Experiment::load(&path, &["data.sampling.batch_size=600".into()]).unwrap_err()
        );
        assert!(
            err.contains("samples_per_epoch: 512 is less than one batch (batch_size 600)"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            Experiment::load(&path, &["data.class_weights=[1, 1]".into()]).unwrap_err()
        );
        assert!(
            err.contains("class_weights: 2 value(s), expected 5"),
            "{err}"
        );
    }

    #[test]
    fn effective_config_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let exp = Experiment::load(&write(dir.path(), GOOD), &["seed=9".into()]).unwrap();
        let path = dir.path().join("config.yaml");
        exp.save_effective(&path).unwrap();
        let again = Experiment::load(&path, &[]).unwrap();
        assert_eq!(exp, again);
    }
}
