//! The `data:` section of an experiment: which dataset layout, normalisation, class weights and
//! sampling. Every struct refuses unknown keys.
//!
//! ```yaml
//! data:
//!   dataset:
//!     synthetic: {root: data/synthetic}
//!   ignore_index: 255
//!   normalisation:
//!     optical: {mean: [110.0, 115.0, 100.0, 120.0], std: [40.0, 35.0, 35.0, 50.0]}
//!   class_weights: [1.0, 1.0, 1.0, 1.0, 2.0, 1.0]
//!   sampling: {batch_size: 8, samples_per_epoch: 512, scale: [0.75, 1.25]}
//!   grid: {reference: optical, resampling: {dsm: cubic}}
//! ```

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

use super::labels::{ISPRS_CLASSES, SYNTHETIC_CLASSES};
use crate::model::config::ModelConfig;

/// Where the samples come from and how they are prepared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The dataset layout and its options (default: the synthetic benchmark in data/synthetic).
    #[serde(default)]
    pub dataset: DatasetConfig,
    /// Label value of pixels left out of the loss and the metrics (must not be a class id).
    #[serde(default = "default_ignore_index")]
    pub ignore_index: i64,
    /// Per-modality, per-band mean and standard deviation (written by `dis2 stats`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub normalisation: BTreeMap<String, Normalisation>,
    /// Optional weight of each class in the loss (`dis2 stats --class-weights` computes them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_weights: Option<Vec<f64>>,
    /// Crops, augmentation and batching.
    #[serde(default)]
    pub sampling: SamplingConfig,
    /// Class names and colours in id order; default: the layout's own table (see `class_table`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<ClassInfo>>,
    /// Which meaning wins when a label raster's declared nodata value is also a class: by
    /// default such a file is refused, naming the value and both meanings.
    #[serde(default, skip_serializing_if = "LabelNodata::is_refuse")]
    pub label_nodata: LabelNodata,
    /// The grid each scene is read on, and how files on other grids are resampled onto it.
    #[serde(default, skip_serializing_if = "GridConfig::is_default")]
    pub grid: GridConfig,
    /// Read bands of the modalities' rasters marked as alpha as data, not as masks (GDAL's and
    /// rasterio's default 4-band byte layout marks an RGB + NIR file's NIR band as alpha); label
    /// rasters' alpha bands stay masks. See [`super::validity::AlphaRule`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub alpha_as_data: bool,
    /// `data.missing_masks`: model modality name -> folder (or glob) of rasters marking where
    /// that modality is missing (nonzero = missing), matched to a scene by the file stem of the
    /// scene's file of that modality; `{split}` in the folder becomes `train`, `val` or `test`.
    /// Read by [`super::dataset::SceneDataset`] (docs/data.md, "Missing masks").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub missing_masks: BTreeMap<String, String>,
}

/// `data.label_nodata`: a label raster declares as nodata a value that is also a class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelNodata {
    /// Refuse the file, with an error naming the file, the value and both meanings.
    #[default]
    Refuse,
    /// The value is the class: the nodata declaration of such label files is disregarded
    /// (their masks, alpha and NaN still apply).
    Class,
    /// The value is nodata: its pixels are left out, so that class has none in such files.
    Nodata,
}

impl LabelNodata {
    fn is_refuse(&self) -> bool {
        *self == Self::Refuse
    }
}

fn default_ignore_index() -> i64 {
    255
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: DatasetConfig::default(),
            ignore_index: default_ignore_index(),
            normalisation: BTreeMap::new(),
            class_weights: None,
            sampling: SamplingConfig::default(),
            classes: None,
            label_nodata: LabelNodata::Refuse,
            grid: GridConfig::default(),
            alpha_as_data: false,
            missing_masks: BTreeMap::new(),
        }
    }
}

/// Mean and standard deviation of each band of one modality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalisation {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Normalisation {
    /// Checks the statistics of modality `name` against its `channels` bands: one mean and one
    /// std per band, finite, every std positive. The errors name `normalisation.NAME.KEY`.
    pub(crate) fn check(&self, name: &str, channels: usize) -> Result<()> {
        for (key, values) in [("mean", &self.mean), ("std", &self.std)] {
            if values.len() != channels {
                bail!(
                    "normalisation.{name}.{key}: {} value(s), expected {channels} (the channels of modality {name})",
                    values.len()
                );
            }
            if values.iter().any(|v| !v.is_finite()) {
                bail!("normalisation.{name}.{key}: values must be finite numbers");
            }
        }
        if self.std.iter().any(|&s| s <= 0.0) {
            bail!("normalisation.{name}.std: every value must be positive");
        }
        Ok(())
    }
}

/// Random crops for training, a grid of windows for validation, and batching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingConfig {
    /// Samples per batch.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Random crops drawn per training epoch.
    #[serde(default = "default_samples_per_epoch")]
    pub samples_per_epoch: usize,
    /// Random horizontal and vertical flips.
    #[serde(default = "yes")]
    pub flips: bool,
    /// Random 90-degree rotations.
    #[serde(default = "yes")]
    pub rotations: bool,
    /// Range of the random scale: a crop reads `crop x s` source pixels, resampled to `crop`.
    #[serde(default = "default_scale")]
    pub scale: [f64; 2],
    /// Stride of the validation grid in pixels (default: the crop size, no overlap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_stride: Option<usize>,
    /// Batches prepared ahead while the model trains.
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
}

fn default_batch_size() -> usize {
    8
}
fn default_samples_per_epoch() -> usize {
    512
}
fn yes() -> bool {
    true
}
fn default_scale() -> [f64; 2] {
    [0.75, 1.25]
}
fn default_prefetch() -> usize {
    2
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            batch_size: default_batch_size(),
            samples_per_epoch: default_samples_per_epoch(),
            flips: true,
            rotations: true,
            scale: default_scale(),
            val_stride: None,
            prefetch: default_prefetch(),
        }
    }
}

/// The grid of a scene (`data.grid`; docs/data.md, "Grids"): every modality and the labels are
/// read on the grid of one reference modality; files on another grid are resampled onto it
/// window by window through GDAL's warper, unless `strict`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridConfig {
    /// The modality whose grid each scene takes (default: the model's first modality).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Refuse files that are not on the reference grid instead of resampling them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
    /// Resampling per modality name (or `labels`), in place of the defaults (nearest for labels
    /// and class maps, average when downsampling 2x or more, bilinear otherwise).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resampling: BTreeMap<String, Resampling>,
}

impl GridConfig {
    pub(crate) fn is_default(&self) -> bool {
        self == &Self::default()
    }

    /// Checks the modality names against the model; `key` names the section in messages
    /// (`data.grid` or the predict flags).
    pub fn validate(&self, model: &ModelConfig, keys: [&str; 2]) -> Result<()> {
        let names: Vec<&str> = model.modalities.iter().map(|m| m.name.as_str()).collect();
        let [reference_key, resampling_key] = keys;
        if let Some(name) = &self.reference {
            if !names.contains(&name.as_str()) {
                bail!(
                    "{reference_key}: {name:?} is not a modality of the model ({})",
                    names.join(", ")
                );
            }
        }
        for name in self.resampling.keys() {
            if name != "labels" && !names.contains(&name.as_str()) {
                bail!(
                    "{resampling_key}: {name:?} is neither a modality of the model ({}) nor `labels`",
                    names.join(", ")
                );
            }
        }
        Ok(())
    }
}

/// A resampling method of GDAL's warper (`gdalwarp -r`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resampling {
    Nearest,
    Bilinear,
    Cubic,
    CubicSpline,
    Lanczos,
    Average,
    Mode,
    Min,
    Max,
    Median,
}

impl Resampling {
    pub(crate) const ALL: [Resampling; 10] = [
        Self::Nearest,
        Self::Bilinear,
        Self::Cubic,
        Self::CubicSpline,
        Self::Lanczos,
        Self::Average,
        Self::Mode,
        Self::Min,
        Self::Max,
        Self::Median,
    ];

    /// The name in dis2's configuration and flags.
    pub fn name(self) -> &'static str {
        match self {
            Self::Nearest => "nearest",
            Self::Bilinear => "bilinear",
            Self::Cubic => "cubic",
            Self::CubicSpline => "cubic_spline",
            Self::Lanczos => "lanczos",
            Self::Average => "average",
            Self::Mode => "mode",
            Self::Min => "min",
            Self::Max => "max",
            Self::Median => "median",
        }
    }

    /// The name `gdalwarp -r` takes.
    pub(crate) fn gdal_name(self) -> &'static str {
        match self {
            Self::Nearest => "near",
            Self::CubicSpline => "cubicspline",
            Self::Median => "med",
            other => other.name(),
        }
    }

    /// Parses a name of [`Self::name`]; the error lists them.
    pub fn parse(text: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|r| r.name()).collect();
                anyhow::anyhow!(
                    "unknown resampling {text:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// One dataset layout, written as a one-key map: `dataset: {potsdam: {root: ...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "DatasetSection", into = "DatasetSection")]
pub enum DatasetConfig {
    Synthetic(SyntheticConfig),
    Potsdam(PotsdamConfig),
    Vaihingen(VaihingenConfig),
    WhuOptSar(WhuOptSarConfig),
    Generic(GenericConfig),
}

/// The YAML form of [`DatasetConfig`]: exactly one of its keys is set. (serde_yaml writes enums
/// as `!tag` values; a one-key map reads more naturally and keeps the line numbers of errors.)
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DatasetSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<SyntheticConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub potsdam: Option<PotsdamConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vaihingen: Option<VaihingenConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whu_opt_sar: Option<WhuOptSarConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic: Option<GenericConfig>,
}

impl TryFrom<DatasetSection> for DatasetConfig {
    type Error = String;
    fn try_from(s: DatasetSection) -> Result<Self, String> {
        let mut found: Vec<DatasetConfig> = Vec::new();
        found.extend(s.synthetic.map(Self::Synthetic));
        found.extend(s.potsdam.map(Self::Potsdam));
        found.extend(s.vaihingen.map(Self::Vaihingen));
        found.extend(s.whu_opt_sar.map(Self::WhuOptSar));
        found.extend(s.generic.map(Self::Generic));
        match found.len() {
            1 => Ok(found.remove(0)),
            k => Err(format!(
                "name exactly one layout (synthetic, potsdam, vaihingen, whu_opt_sar or generic), found {k}"
            )),
        }
    }
}

impl From<DatasetConfig> for DatasetSection {
    fn from(c: DatasetConfig) -> Self {
        let mut s = DatasetSection::default();
        match c {
            DatasetConfig::Synthetic(x) => s.synthetic = Some(x),
            DatasetConfig::Potsdam(x) => s.potsdam = Some(x),
            DatasetConfig::Vaihingen(x) => s.vaihingen = Some(x),
            DatasetConfig::WhuOptSar(x) => s.whu_opt_sar = Some(x),
            DatasetConfig::Generic(x) => s.generic = Some(x),
        }
        s
    }
}

impl Default for DatasetConfig {
    fn default() -> Self {
        Self::Synthetic(SyntheticConfig {
            root: PathBuf::from("data/synthetic"),
        })
    }
}

/// The synthetic benchmark written by `dis2 synth`: `ROOT/{train,val,test}/{optical,dsm,sar,label}/`.
/// The model's modality names pick among `optical`, `dsm` and `sar`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    pub root: PathBuf,
}

/// ISPRS Potsdam as distributed (`2_Ortho_RGB`, `3_Ortho_IRRG`, `4_Ortho_RGBIR`, `1_DSM`,
/// `1_DSM_normalisation`, `5_Labels_all`, `5_Labels_all_noBoundary` under `root`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PotsdamConfig {
    pub root: PathBuf,
    /// Model modality name -> product (default `{optical: rgbir, dsm: ndsm}`).
    #[serde(default = "default_potsdam_modalities")]
    pub modalities: BTreeMap<String, PotsdamProduct>,
    /// Use the eroded labels (`5_Labels_all_noBoundary`; black boundaries are ignored).
    #[serde(default)]
    pub eroded_labels: bool,
    /// Training tiles (e.g. `"6_9"`) held out for validation; when empty, validation uses the
    /// 14 test tiles.
    #[serde(default)]
    pub val_tiles: Vec<String>,
    /// Largest per-channel difference at which a label colour still matches (default 0: exact).
    #[serde(default)]
    pub colour_tolerance: u8,
}

/// The Potsdam products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PotsdamProduct {
    Rgb,
    Irrg,
    Rgbir,
    Dsm,
    Ndsm,
}

fn default_potsdam_modalities() -> BTreeMap<String, PotsdamProduct> {
    BTreeMap::from([
        ("optical".into(), PotsdamProduct::Rgbir),
        ("dsm".into(), PotsdamProduct::Ndsm),
    ])
}

/// ISPRS Vaihingen as distributed (`top/`, `dsm/`, `gts_for_participants/`,
/// `gts_eroded_for_participants/` under `root`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaihingenConfig {
    pub root: PathBuf,
    /// Model modality name -> product (default `{optical: irrg, dsm: dsm}`).
    #[serde(default = "default_vaihingen_modalities")]
    pub modalities: BTreeMap<String, VaihingenProduct>,
    /// Use the eroded labels (`gts_eroded_for_participants`; black boundaries are ignored).
    #[serde(default)]
    pub eroded_labels: bool,
    /// Training areas held out for validation; when empty, validation uses the 17 test areas.
    #[serde(default)]
    pub val_areas: Vec<u32>,
    /// Largest per-channel difference at which a label colour still matches (default 0: exact).
    #[serde(default)]
    pub colour_tolerance: u8,
}

/// The Vaihingen products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VaihingenProduct {
    Irrg,
    Dsm,
}

fn default_vaihingen_modalities() -> BTreeMap<String, VaihingenProduct> {
    BTreeMap::from([
        ("optical".into(), VaihingenProduct::Irrg),
        ("dsm".into(), VaihingenProduct::Dsm),
    ])
}

/// WHU-OPT-SAR: `optical/` (4 bands), `sar/` (1 band) and `lbl/` (class codes) under `root`,
/// matched by file stem. The model's modality names pick among `optical` and `sar`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhuOptSarConfig {
    pub root: PathBuf,
    /// Label code -> class id, e.g. `{10: 0, 20: 1, ...}`.
    pub class_codes: BTreeMap<i64, i64>,
    /// Label codes left out of the loss (e.g. `[0]`).
    #[serde(default)]
    pub ignore_codes: Vec<i64>,
    /// Stems of the validation images.
    #[serde(default)]
    pub val: Vec<String>,
    /// Stems of the test images; every other image is for training.
    #[serde(default)]
    pub test: Vec<String>,
}

/// Any set of aligned rasters: per split, a folder or glob per modality and one for the labels,
/// matched by file stem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericConfig {
    pub train: GenericSplit,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val: Option<GenericSplit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<GenericSplit>,
    /// Label code -> class id; without it, label values are class ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_codes: Option<BTreeMap<i64, i64>>,
    /// Label codes left out of the loss (with `class_codes`).
    #[serde(default)]
    pub ignore_codes: Vec<i64>,
}

/// One split of a generic dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericSplit {
    /// Model modality name -> folder, or glob whose last component holds `*` or `?`.
    pub modalities: BTreeMap<String, String>,
    /// Folder or glob of the label rasters (optional for unlabelled prediction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
}

impl DataConfig {
    /// Checks the section against the model; messages name the key below `data`.
    pub fn validate(&self, model: &ModelConfig) -> Result<()> {
        if let Some(classes) = &self.classes {
            if classes.len() as i64 != model.num_classes {
                bail!(
                    "classes: {} entries for num_classes {}",
                    classes.len(),
                    model.num_classes
                );
            }
        }
        if (0..model.num_classes).contains(&self.ignore_index) {
            bail!(
                "ignore_index: {} is a class id (model.num_classes is {}); use e.g. 255",
                self.ignore_index,
                model.num_classes
            );
        }
        for (name, norm) in &self.normalisation {
            // Entries of modalities the model does not use are ignored: a model on a subset of a
            // dataset's sensors (an ablation, the single-modality baseline) shares its file.
            let Some(channels) = model
                .modalities
                .iter()
                .find(|m| &m.name == name)
                .map(|m| m.channels)
            else {
                continue;
            };
            norm.check(name, channels.max(0) as usize)?;
        }
        if let Some(weights) = &self.class_weights {
            if weights.len() as i64 != model.num_classes {
                bail!(
                    "class_weights: {} value(s), expected {} (model.num_classes)",
                    weights.len(),
                    model.num_classes
                );
            }
            if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
                bail!("class_weights: every weight must be a finite number >= 0");
            }
        }
        self.grid
            .validate(model, ["grid.reference", "grid.resampling"])?;
        check_missing_mask_names(&self.missing_masks, model, "")?;
        self.sampling.validate()
    }
}

/// Every key of `data.missing_masks` is a model modality; the error names the key (after
/// `prefix`, `data.` or nothing) and lists the modalities.
pub(crate) fn check_missing_mask_names(
    masks: &BTreeMap<String, String>,
    model: &ModelConfig,
    prefix: &str,
) -> Result<()> {
    let names: Vec<&str> = model.modalities.iter().map(|m| m.name.as_str()).collect();
    if let Some(unknown) = masks.keys().find(|k| !names.contains(&k.as_str())) {
        bail!(
            "{prefix}missing_masks.{unknown}: not a modality of the model; model.modalities names [{}]",
            names.join(", ")
        );
    }
    Ok(())
}

impl SamplingConfig {
    fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.samples_per_epoch == 0 || self.prefetch == 0 {
            bail!("sampling: batch_size, samples_per_epoch and prefetch must be at least 1");
        }
        if self.samples_per_epoch < self.batch_size {
            bail!(
                "sampling.samples_per_epoch: {} is less than one batch (batch_size {})",
                self.samples_per_epoch,
                self.batch_size
            );
        }
        let [lo, hi] = self.scale;
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi && hi <= 8.0) {
            bail!("sampling.scale: [{lo}, {hi}] must satisfy 0 < low <= high <= 8");
        }
        if self.val_stride == Some(0) {
            bail!("sampling.val_stride: must be at least 1");
        }
        Ok(())
    }
}

/// A class: its name and the colour used for class maps and figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassInfo {
    pub name: String,
    pub colour: [u8; 3],
}

impl DataConfig {
    /// The classes of this dataset in id order: the layout's own table (synthetic benchmark,
    /// ISPRS) or, for other layouts, `class N` with a fixed palette. Exactly `num_classes` entries.
    pub fn class_table(&self, num_classes: usize) -> Vec<ClassInfo> {
        if let Some(classes) = self.classes.as_ref().filter(|c| c.len() == num_classes) {
            return classes.clone();
        }
        let known: &[(&str, [u8; 3])] = match self.dataset {
            DatasetConfig::Synthetic(_) => &SYNTHETIC_CLASSES,
            DatasetConfig::Potsdam(_) | DatasetConfig::Vaihingen(_) => &ISPRS_CLASSES,
            DatasetConfig::WhuOptSar(_) | DatasetConfig::Generic(_) => &[],
        };
        let mut table = default_class_table(num_classes);
        for (entry, (name, colour)) in table.iter_mut().zip(known) {
            entry.name = name.to_string();
            entry.colour = *colour;
        }
        table
    }
}

/// `class 0`, `class 1`, ... with distinct colours: the table of a dataset that names none.
pub(crate) fn default_class_table(num_classes: usize) -> Vec<ClassInfo> {
    (0..num_classes)
        .map(|i| ClassInfo {
            name: format!("class {i}"),
            colour: fallback_colour(i),
        })
        .collect()
}

/// A distinct colour for class `i` (golden-angle hues).
fn fallback_colour(i: usize) -> [u8; 3] {
    let h = (i as f64 * 137.508) % 360.0;
    let x = 1.0 - ((h / 60.0) % 2.0 - 1.0).abs();
    let (r, g, b) = match (h / 60.0) as u32 {
        0 => (1.0, x, 0.0),
        1 => (x, 1.0, 0.0),
        2 => (0.0, 1.0, x),
        3 => (0.0, x, 1.0),
        4 => (x, 0.0, 1.0),
        _ => (1.0, 0.0, x),
    };
    let scale = |v: f64| (40.0 + 200.0 * v) as u8;
    [scale(r), scale(g), scale(b)]
}

#[cfg(test)]
mod class_table_tests {
    use super::*;

    #[test]
    fn known_layouts_name_their_classes_and_others_get_distinct_colours() {
        let synthetic = DataConfig::default().class_table(6);
        assert_eq!(synthetic[5].name, "water");
        assert_eq!(synthetic[1].colour, [0, 0, 255]);
        let generic = DataConfig {
            dataset: DatasetConfig::Generic(GenericConfig {
                train: GenericSplit {
                    modalities: BTreeMap::new(),
                    labels: None,
                },
                val: None,
                test: None,
                class_codes: None,
                ignore_codes: Vec::new(),
            }),
            ..DataConfig::default()
        };
        let table = generic.class_table(8);
        assert_eq!(table[3].name, "class 3");
        let named = DataConfig {
            classes: Some(vec![
                ClassInfo {
                    name: "land".into(),
                    colour: [1, 2, 3],
                },
                ClassInfo {
                    name: "sea".into(),
                    colour: [4, 5, 6],
                },
            ]),
            ..DataConfig::default()
        };
        assert_eq!(named.class_table(2)[1].name, "sea");
        for i in 0..8 {
            for j in 0..i {
                assert_ne!(table[i].colour, table[j].colour);
            }
        }
    }
}
