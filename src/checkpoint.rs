//! Checkpoints: the model's variables as safetensors (BatchNorm running statistics included) plus
//! a YAML sidecar describing the model, so that a checkpoint can be loaded without its
//! experiment file.
//!
//! A checkpoint named `DIR/NAME` is two files: `DIR/NAME.safetensors` (every variable of the
//! variable store under its dis2 name) and `DIR/NAME.yaml`:
//!
//! ```yaml
//! format: dis2-checkpoint
//! version: 1
//! model: { base_width: 8, num_classes: 5, crop: [64, 64], ..., modalities: [...],
//!          scenarios: [[ndsm], [rgb]] }     # always written out in full
//! class_names: [...]                          # optional
//! metadata: { source: import-torch, ... }     # free-form: step, metrics, source; a merge
//!                                             # lists its inputs under `merged_from`
//! ```
//!
//! Both files are written through a temporary file and a rename, weights first. The name may be
//! given with or without `.safetensors` / `.yaml`.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::{nn, Device, Tensor};

use crate::data::config::{default_class_table, ClassInfo, DataConfig, Normalisation};
use crate::data::normalise::{Normaliser, StatsSource};
use crate::fsutil::{write_atomic, write_atomic_with};
use crate::model::config::ModelConfig;
use crate::model::Dis2Net;

/// Value of the sidecar's `format` key.
pub(crate) const FORMAT: &str = "dis2-checkpoint";
/// Current sidecar version.
pub(crate) const VERSION: u32 = 1;

/// The YAML sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointInfo {
    pub format: String,
    pub version: u32,
    /// The model, with `scenarios` listed explicitly.
    pub model: ModelConfig,
    /// Class names, when known (K entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_names: Option<Vec<String>>,
    /// Class colours for class maps and figures (K entries), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_colours: Option<Vec<[u8; 3]>>,
    /// Per-modality input normalisation the model was trained with, so that prediction needs
    /// no experiment file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub normalisation: BTreeMap<String, Normalisation>,
    /// Free-form information for later tools (training step, metrics, source).
    #[serde(default)]
    pub metadata: BTreeMap<String, serde_yaml::Value>,
}

impl CheckpointInfo {
    /// A sidecar for `cfg`, with its scenario list written out.
    pub fn new(cfg: &ModelConfig) -> Result<Self> {
        let mut model = cfg.clone();
        let scenarios = cfg.scenario_list()?;
        model.scenarios = Some(scenarios.iter().map(|s| s.names(cfg)).collect());
        Ok(CheckpointInfo {
            format: FORMAT.to_string(),
            version: VERSION,
            model,
            class_names: None,
            class_colours: None,
            normalisation: BTreeMap::new(),
            metadata: BTreeMap::new(),
        })
    }
}

impl CheckpointInfo {
    /// Records the class table and the normalisation of the data a model is trained on.
    pub fn with_data(mut self, data: &DataConfig) -> Self {
        let classes = data.class_table(self.model.num_classes as usize);
        self.class_names = Some(classes.iter().map(|c| c.name.clone()).collect());
        self.class_colours = Some(classes.iter().map(|c| c.colour).collect());
        self.normalisation = data.normalisation.clone();
        self
    }

    /// The normalisation the model was trained with, in model order, checked against the
    /// model's band counts: what predict and eval normalise their inputs with.
    ///
    /// # Errors
    /// A modality without statistics (a checkpoint saved without [`Self::with_data`]), or
    /// statistics that do not fit the model.
    pub fn normaliser(&self) -> Result<Normaliser> {
        Normaliser::new(&self.model, &self.normalisation, StatsSource::Checkpoint)
    }

    /// The class table: the recorded names and colours, or `class N` with a fixed palette.
    pub fn class_table(&self) -> Vec<ClassInfo> {
        let k = self.model.num_classes as usize;
        let mut table = default_class_table(k);
        if let Some(names) = self.class_names.as_ref().filter(|n| n.len() == k) {
            for (entry, name) in table.iter_mut().zip(names) {
                entry.name = name.clone();
            }
        }
        if let Some(colours) = self.class_colours.as_ref().filter(|c| c.len() == k) {
            for (entry, colour) in table.iter_mut().zip(colours) {
                entry.colour = *colour;
            }
        }
        table
    }
}

/// The two files of a checkpoint named `path`: `NAME.safetensors` and `NAME.yaml` for a name
/// given with or without extension, or `model.safetensors` and `model.yaml` inside `path` when it
/// is a directory (a training run's `checkpoints/best` and `checkpoints/last`).
pub(crate) fn checkpoint_files(path: &Path) -> (PathBuf, PathBuf) {
    if path.is_dir() {
        return (path.join("model.safetensors"), path.join("model.yaml"));
    }
    let base = match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors") | Some("yaml") => path.with_extension(""),
        _ => path.to_path_buf(),
    };
    let name = base
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (
        base.with_file_name(format!("{name}.safetensors")),
        base.with_file_name(format!("{name}.yaml")),
    )
}

/// Saves every variable of `vs` and the sidecar.
pub fn save(path: &Path, vs: &nn::VarStore, info: &CheckpointInfo) -> Result<()> {
    if let Some(names) = &info.class_names {
        if names.len() as i64 != info.model.num_classes {
            bail!(
                "class_names: {} names for {} classes",
                names.len(),
                info.model.num_classes
            );
        }
    }
    let (weights, sidecar) = checkpoint_files(path);
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let named: Vec<(String, Tensor)> = named
        .into_iter()
        .map(|(n, t)| (n, t.detach().contiguous()))
        .collect();
    write_atomic_with(&weights, |tmp| {
        Tensor::write_safetensors(&named, tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))
    })?;
    let text = serde_yaml::to_string(info).context("cannot serialise the checkpoint sidecar")?;
    write_atomic(&sidecar, text.as_bytes())
}

/// Checks that the checkpoint `path` names is there (see [`checkpoint_files`]).
///
/// # Errors
/// A dangling link (a run's `best` or `last` whose step directory was removed or moved), naming
/// where it points; a path that is neither a directory nor the name of a checkpoint file, naming
/// the files looked for and, for a relative path, the directory it was resolved against.
pub(crate) fn check_present(path: &Path) -> Result<()> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_symlink() && !path.exists() {
            let target = std::fs::read_link(path).unwrap_or_default();
            let resolved = path.parent().unwrap_or(Path::new("")).join(&target);
            bail!(
                "checkpoint link {} dangles: it points to {} ({}), which does not exist (removed \
                 or moved); point it at a checkpoint directory of the run, or name one",
                path.display(),
                target.display(),
                resolved.display()
            );
        }
        return Ok(());
    }
    let (weights, sidecar) = checkpoint_files(path);
    if !weights.exists() && !sidecar.exists() {
        bail!(
            "checkpoint {} does not exist: it is no directory, and neither {} nor {} exists{}",
            path.display(),
            weights.display(),
            sidecar.display(),
            crate::data::vsi::resolved_against(path)
        );
    }
    Ok(())
}

/// Reads and checks a sidecar.
///
/// # Errors
/// Those of [`check_present`], an unreadable sidecar, another format or version, or a model
/// configuration that does not hold together.
pub fn read_info(path: &Path) -> Result<CheckpointInfo> {
    check_present(path)?;
    let (_, sidecar) = checkpoint_files(path);
    let text = std::fs::read_to_string(&sidecar)
        .with_context(|| format!("cannot read checkpoint sidecar {}", sidecar.display()))?;
    let info: CheckpointInfo = crate::config::from_yaml_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", sidecar.display()))?;
    if info.format != FORMAT {
        bail!(
            "{}: format: expected {FORMAT:?}, found {:?}",
            sidecar.display(),
            info.format
        );
    }
    if info.version != VERSION {
        bail!(
            "{}: version: this dis2 reads version {VERSION}, found {}",
            sidecar.display(),
            info.version
        );
    }
    info.model
        .validate()
        .with_context(|| format!("{}: key `model`", sidecar.display()))?;
    Ok(info)
}

/// [`config_differences`] of the shared network only (widths, classes, crop, transformer,
/// fusion and decoder kinds, modalities), whatever students either side holds: a teacher checkpoint serves a student run,
/// and a student checkpoint is scored with its experiment's data.
pub fn network_differences(checkpoint: &ModelConfig, wanted: &ModelConfig) -> Vec<String> {
    let mut same_students = checkpoint.clone();
    same_students.scenarios = wanted.scenarios.clone();
    config_differences(&same_students, wanted)
}

/// How two model configurations differ, one line per key (empty when they are the same model):
/// `crop: checkpoint has [64, 64], configuration has [64, 32]`. Scenarios are compared as the
/// lists they resolve to, so an absent `scenarios` key equals every scenario written out.
pub fn config_differences(checkpoint: &ModelConfig, wanted: &ModelConfig) -> Vec<String> {
    labelled_differences([("checkpoint", checkpoint), ("configuration", wanted)])
}

/// [`config_differences`] with the two sides named: `crop: a.yaml has [64, 64], b.yaml has
/// [64, 32]`.
pub(crate) fn labelled_differences(
    [(label_a, a), (label_b, b)]: [(&str, &ModelConfig); 2],
) -> Vec<String> {
    config_fields(a)
        .into_iter()
        .zip(config_fields(b))
        .filter(|((_, a), (_, b))| a != b)
        .map(|((key, a), (_, b))| format!("{key}: {label_a} has {a}, {label_b} has {b}"))
        .collect()
}

/// Every field of `c` under its YAML key, as text. The struct is taken apart without `..`, so a
/// field added to [`ModelConfig`] does not compile until it is compared here.
fn config_fields(c: &ModelConfig) -> [(&'static str, String); 10] {
    let ModelConfig {
        base_width,
        num_classes,
        crop,
        heads,
        ffn_dim,
        depth,
        modalities,
        scenarios: _,
        decoder,
        fusion,
    } = c;
    let modalities: Vec<String> = modalities
        .iter()
        .map(|m| format!("{}({})", m.name, m.channels))
        .collect();
    let scenarios = match c.scenario_list() {
        Ok(list) => list
            .iter()
            .map(|s| format!("[{}]", s.names(c).join(", ")))
            .collect::<Vec<_>>()
            .join(", "),
        Err(e) => format!("invalid ({e})"),
    };
    [
        ("base_width", base_width.to_string()),
        ("num_classes", num_classes.to_string()),
        ("crop", format!("{crop:?}")),
        ("heads", heads.to_string()),
        ("ffn_dim", ffn_dim.to_string()),
        ("depth", depth.to_string()),
        ("fusion", fusion.name().to_string()),
        ("decoder", decoder.name().to_string()),
        ("modalities", format!("[{}]", modalities.join(", "))),
        ("scenarios", scenarios),
    ]
}

/// Loads the safetensors weights of a checkpoint into `vs`. Every variable must be present with
/// its shape and nothing else may be in the file; otherwise the error lists what differs by name
/// and `vs` is unchanged.
pub fn load_weights(vs: &nn::VarStore, path: &Path) -> Result<()> {
    load_weights_where(vs, path, |_| true)
}

/// [`load_weights`] restricted to the variables whose names satisfy `keep`, on both sides: the
/// others in `vs` keep their values and the others in the file are not read. Used to start a
/// student from a teacher checkpoint.
pub(crate) fn load_weights_where(
    vs: &nn::VarStore,
    path: &Path,
    keep: impl Fn(&str) -> bool,
) -> Result<()> {
    let (weights, _) = checkpoint_files(path);
    let tensors = Tensor::read_safetensors(&weights)
        .with_context(|| format!("cannot read checkpoint weights {}", weights.display()))?;
    let file: HashMap<String, Tensor> = tensors.into_iter().filter(|(k, _)| keep(k)).collect();
    let mut vars = vs.variables();
    vars.retain(|k, _| keep(k));
    let mut missing: Vec<&String> = vars.keys().filter(|k| !file.contains_key(*k)).collect();
    let mut unexpected: Vec<&String> = file.keys().filter(|k| !vars.contains_key(*k)).collect();
    let mut misshaped: Vec<String> = vars
        .iter()
        .filter_map(|(k, v)| {
            let t = file.get(k)?;
            (t.size() != v.size())
                .then(|| format!("{k}: file {:?}, model {:?}", t.size(), v.size()))
        })
        .collect();
    missing.sort();
    unexpected.sort();
    misshaped.sort();
    if !(missing.is_empty() && unexpected.is_empty() && misshaped.is_empty()) {
        let mut msg = format!("{} does not fit the model:", weights.display());
        let lists: [(&str, Vec<String>); 3] = [
            ("missing", missing.iter().map(|s| s.to_string()).collect()),
            (
                "unexpected",
                unexpected.iter().map(|s| s.to_string()).collect(),
            ),
            ("wrong shape", misshaped),
        ];
        for (what, list) in lists {
            if !list.is_empty() {
                msg.push_str(&format!("\n  {what} ({}):", list.len()));
                for item in list {
                    msg.push_str(&format!("\n    {item}"));
                }
            }
        }
        bail!(msg);
    }
    tch::no_grad(|| {
        for (k, v) in &vars {
            if let Some(t) = file.get(k) {
                let mut v = v.shallow_clone();
                v.copy_(&t.to_kind(v.kind()).to_device(v.device()));
            }
        }
    });
    Ok(())
}

/// A loaded checkpoint: the variable store, the model on it and the sidecar.
pub struct Loaded {
    pub vs: nn::VarStore,
    pub net: Dis2Net,
    pub info: CheckpointInfo,
}

/// Loads a checkpoint, building the model its sidecar describes.
pub fn load(path: &Path, device: Device) -> Result<Loaded> {
    let info = read_info(path)?;
    let vs = nn::VarStore::new(device);
    let net = Dis2Net::new(&vs.root(), &info.model)?;
    load_weights(&vs, path)?;
    Ok(Loaded { vs, net, info })
}

/// Loads a checkpoint that must be the model `wanted` describes; a different model is an error
/// naming every key that differs.
pub fn load_as(path: &Path, wanted: &ModelConfig, device: Device) -> Result<Loaded> {
    let info = read_info(path)?;
    let diffs = config_differences(&info.model, wanted);
    if !diffs.is_empty() {
        bail!(
            "checkpoint {} was made for another model:\n  {}",
            checkpoint_files(path).1.display(),
            diffs.join("\n  ")
        );
    }
    load(path, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{DecoderKind, FusionKind, ModalitySpec};

    fn modalities(channels: [i64; 2]) -> Vec<ModalitySpec> {
        ["a", "b"]
            .into_iter()
            .zip(channels)
            .map(|(name, channels)| ModalitySpec {
                name: name.into(),
                channels,
            })
            .collect()
    }

    /// Two models that differ in every field, listed without `..` so that a new field must be
    /// given here too; none at a default that serialisation leaves out.
    fn different_in_every_field() -> (ModelConfig, ModelConfig) {
        let a = ModelConfig {
            base_width: 8,
            num_classes: 5,
            crop: [32, 32],
            heads: 2,
            ffn_dim: 64,
            depth: 1,
            modalities: modalities([1, 2]),
            scenarios: Some(vec![vec!["a".into()]]),
            decoder: DecoderKind::Plain,
            fusion: FusionKind::Level4,
        };
        let b = ModelConfig {
            base_width: 16,
            num_classes: 6,
            crop: [64, 32],
            heads: 4,
            ffn_dim: 128,
            depth: 2,
            modalities: modalities([3, 2]),
            scenarios: Some(vec![vec!["b".into()]]),
            decoder: DecoderKind::ClassWise,
            fusion: FusionKind::Hierarchical,
        };
        (a, b)
    }

    #[test]
    fn every_key_of_the_model_configuration_is_compared() {
        let (a, b) = different_in_every_field();
        let serde_yaml::Value::Mapping(map) = serde_yaml::to_value(&a).unwrap() else {
            panic!("a model configuration serialises to a mapping");
        };
        let mut keys: Vec<String> = map
            .keys()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        let diffs = config_differences(&a, &b);
        let mut compared: Vec<String> = diffs
            .iter()
            .map(|d| d.split(':').next().unwrap().to_string())
            .collect();
        keys.sort();
        compared.sort();
        assert_eq!(compared, keys, "{diffs:#?}");
        assert!(diffs.contains(
            &"modalities: checkpoint has [a(1), b(2)], configuration has [a(3), b(2)]".into()
        ));
        assert!(config_differences(&a, &a.clone()).is_empty());
    }

    #[test]
    fn an_absent_scenario_list_is_every_scenario() {
        let (mut a, _) = different_in_every_field();
        a.scenarios = None;
        let mut explicit = a.clone();
        explicit.scenarios = Some(vec![vec!["a".into()], vec!["b".into()]]);
        assert!(config_differences(&a, &explicit).is_empty());
        explicit.scenarios = Some(vec![vec!["b".into()]]);
        assert_eq!(
            config_differences(&a, &explicit),
            ["scenarios: checkpoint has [a], [b], configuration has [b]"]
        );
    }
}
