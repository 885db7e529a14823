//! `dis2 import-torch`: converts a state_dict of the authors' PyTorch model (`DLKD_ver4`, saved
//! as safetensors) into a dis2 checkpoint.
//!
//! `--config` is a YAML file with the model configuration: either a model-only file (the keys of
//! `ModelConfig` at the top level, e.g. `experiments/models/reference-small.yaml`) or any file
//! with a `model:` key (an experiment file), of which only `model` is read. The reference has two
//! modalities: its "rgb" is modality 0 and "ndsm" modality 1.

use anyhow::{anyhow, bail, Context, Result};
use serde_yaml::Value;
use std::path::Path;
use tch::{nn, Device, Tensor};

use crate::checkpoint::{self, CheckpointInfo};
use crate::model::config::ModelConfig;
use crate::model::import::load_reference_state_dict;
use crate::model::Dis2Net;

/// Reads the model configuration from a model-only YAML or from the `model:` key of a larger
/// file. Errors name the file and the key.
pub fn read_model_config(path: &Path) -> Result<ModelConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read configuration file {}", path.display()))?;
    let value = crate::config::yaml_value(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let (value, prefix) = match value.get("model") {
        Some(model) => (model.clone(), "model."),
        None => (value, ""),
    };
    let cfg: ModelConfig = serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        anyhow!(
            "{}: key `{prefix}{key}`: {}",
            path.display(),
            e.into_inner()
        )
    })?;
    cfg.validate()
        .with_context(|| format!("{}: key `{}`", path.display(), prefix.trim_end_matches('.')))?;
    Ok(cfg)
}

/// Imports `weights` (reference state_dict) for the model of `config` and writes the checkpoint
/// `out`. Nothing is written when anything does not fit.
pub fn import_torch(weights: &Path, config: &Path, out: &Path) -> Result<()> {
    let cfg = read_model_config(config)?;
    if cfg.modalities.len() != 2 {
        bail!(
            "{}: modalities: the reference model has exactly two (its rgb and ndsm), this \
             configuration has {}",
            config.display(),
            cfg.modalities.len()
        );
    }
    let tensors = Tensor::read_safetensors(weights).with_context(|| {
        format!(
            "--weights {}: cannot read as safetensors",
            weights.display()
        )
    })?;
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = Dis2Net::new(&vs.root(), &cfg).with_context(|| config.display().to_string())?;
    load_reference_state_dict(&vs, &tensors, &format!("--weights {}", weights.display()))?;
    let mut info = CheckpointInfo::new(&cfg)?;
    info.metadata
        .insert("source".into(), Value::from("import-torch"));
    info.metadata
        .insert("weights".into(), Value::from(weights.display().to_string()));
    checkpoint::save(out, &vs, &info)?;
    let (w, s) = checkpoint::checkpoint_files(out);
    println!("wrote {} and {}", w.display(), s.display());
    Ok(())
}
