//! The model configuration: widths, classes, crop size, transformer size and the modalities.

use anyhow::{bail, Result};

use super::modality::modality_index;
pub use super::modality::ModalitySpec;
use super::scenario::Scenario;
use serde::{Deserialize, Serialize};

/// Which decoder a branch has: the CFLM (class-wise attention and class-wise decoder, the
/// paper's and the reference's) or a plain U-Net decoder (the "no CFLM" ablation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecoderKind {
    #[default]
    ClassWise,
    Plain,
}

impl DecoderKind {
    /// The YAML spelling.
    pub fn name(self) -> &'static str {
        match self {
            DecoderKind::ClassWise => "classwise",
            DecoderKind::Plain => "plain",
        }
    }

    /// For `skip_serializing_if`: the default is not written, so configurations and checkpoint
    /// sidecars of the reference network read as before.
    pub(crate) fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Which fusion a branch has: HF (convolutional fusion at levels 1-3 and the level-4
/// transformer, the paper's) or the level-4 transformer alone (the "no HF" ablation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FusionKind {
    #[default]
    Hierarchical,
    Level4,
}

impl FusionKind {
    /// The YAML spelling.
    pub fn name(self) -> &'static str {
        match self {
            FusionKind::Hierarchical => "hierarchical",
            FusionKind::Level4 => "level4",
        }
    }

    /// For `skip_serializing_if`, as [`DecoderKind::is_default`].
    pub(crate) fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Sizes of the DIS2 network. The positional embeddings of the level-4 transformer (HF) tie a
/// model to one crop size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Base width: level widths are 1, 2, 4 and 8 times this (the reference's `gf_dim`, 32).
    #[serde(default = "default_base_width")]
    pub base_width: i64,
    /// Number of classes K.
    pub num_classes: i64,
    /// Crop size as [height, width]; both divisible by 16.
    pub crop: [i64; 2],
    /// Attention heads of the level-4 transformer.
    #[serde(default = "default_heads")]
    pub heads: i64,
    /// Feed-forward size of the level-4 transformer.
    #[serde(default = "default_ffn_dim")]
    pub ffn_dim: i64,
    /// Number of transformer layers.
    #[serde(default = "default_depth")]
    pub depth: i64,
    /// The sensors, in input order: at least two, or one for a model without students
    /// (`scenarios: []`, the single-modality baseline).
    pub modalities: Vec<ModalitySpec>,
    /// The missing-modality scenarios the model has a student branch for, each a list of the
    /// missing modalities' names. Absent: every non-empty proper subset (for two modalities the
    /// reference's two scenarios).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenarios: Option<Vec<Vec<String>>>,
    /// `classwise` (CFLM, default) or `plain` (ablation: a U-Net decoder without class-wise
    /// attention).
    #[serde(default, skip_serializing_if = "DecoderKind::is_default")]
    pub decoder: DecoderKind,
    /// `hierarchical` (HF, default) or `level4` (ablation: fusion only at level 4, levels 1-3
    /// are the mean of the slots).
    #[serde(default, skip_serializing_if = "FusionKind::is_default")]
    pub fusion: FusionKind,
}

fn default_base_width() -> i64 {
    32
}
fn default_heads() -> i64 {
    8
}
fn default_ffn_dim() -> i64 {
    256
}
fn default_depth() -> i64 {
    2
}

impl ModelConfig {
    /// Checks everything the network cannot take, with messages that name the key.
    pub fn validate(&self) -> Result<()> {
        match self.modalities.len() {
            0 => bail!("modalities: need at least one, found none"),
            // One sensor has no missing-modality scenario: only a teacher can be built.
            1 if self.scenarios.as_ref().is_none_or(|s| !s.is_empty()) => bail!(
                "modalities: a single modality ({}) makes a model without students; set \
                 `scenarios: []` (found {})",
                self.modalities[0].name,
                match &self.scenarios {
                    None => "no `scenarios` key".to_string(),
                    Some(s) => format!("{} scenario(s)", s.len()),
                }
            ),
            _ => {}
        }
        for (i, m) in self.modalities.iter().enumerate() {
            if m.name.is_empty() || m.name.contains(',') {
                bail!(
                    "modalities[{i}].name: {:?} must be non-empty without commas",
                    m.name
                );
            }
            if m.channels < 1 {
                bail!(
                    "modalities[{i}].channels: must be at least 1, found {}",
                    m.channels
                );
            }
            if self.modalities[..i].iter().any(|o| o.name == m.name) {
                bail!("modalities[{i}].name: {:?} appears twice", m.name);
            }
        }
        let [h, w] = self.crop;
        if h < 16 || w < 16 || h % 16 != 0 || w % 16 != 0 {
            bail!("crop: [{h}, {w}] cannot be taken; both sides must be positive multiples of 16");
        }
        if self.num_classes < 2 {
            bail!(
                "num_classes: must be at least 2, found {}",
                self.num_classes
            );
        }
        if self.base_width < 8 {
            // The class-wise decoder's per-class maps have base_width / 8 channels.
            bail!("base_width: must be at least 8, found {}", self.base_width);
        }
        let token_dim = self.base_width * 8;
        if self.heads < 1 || token_dim % self.heads != 0 {
            bail!(
                "heads: {} must divide the level-4 width 8 x base_width = {token_dim}",
                self.heads
            );
        }
        if self.ffn_dim < 1 || self.depth < 1 {
            bail!("ffn_dim and depth must be at least 1");
        }
        self.scenario_list()?;
        Ok(())
    }

    /// The scenarios of `scenarios:`, or all of them when the key is absent; an empty list means
    /// a teacher without students. Errors name the key.
    pub fn scenario_list(&self) -> Result<Vec<Scenario>> {
        let Some(lists) = &self.scenarios else {
            return Ok(Scenario::all(self.modalities.len()));
        };
        // `scenarios: []` is a teacher alone (what `dis2 train-teacher` trains).
        let mut out: Vec<Scenario> = Vec::with_capacity(lists.len());
        for (i, names) in lists.iter().enumerate() {
            let s = Scenario::from_names(names, self)
                .map_err(|e| anyhow::anyhow!("scenarios[{i}]: {e}"))?;
            if out.contains(&s) {
                bail!("scenarios[{i}]: [{}] appears twice", names.join(", "));
            }
            out.push(s);
        }
        Ok(out)
    }

    /// The index of a modality by name, or an error listing the known names.
    pub(crate) fn modality_index(&self, name: &str) -> Result<usize> {
        modality_index(&self.modalities, name)
    }
}

/// A model speaks of its modalities by name: scenarios and routes read the names from it
/// (`scenario.names(&cfg)`) as from a bare modality list.
impl AsRef<[ModalitySpec]> for ModelConfig {
    fn as_ref(&self) -> &[ModalitySpec] {
        &self.modalities
    }
}
