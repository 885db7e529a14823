//! Dataset layouts: one type per layout turns a folder on disk into the list of scenes of a split
//! (one file per modality, in model order, and a label file), plus the label decoding.
//! The checks that need the files' headers (band counts, alignment) live in
//! [`super::dataset::SceneDataset`].

use anyhow::{anyhow, bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::config::{
    DatasetConfig, GenericConfig, GenericSplit, PotsdamConfig, PotsdamProduct, SyntheticConfig,
    VaihingenConfig, VaihingenProduct, WhuOptSarConfig,
};
use super::labels::LabelDecoder;
use super::vsi::{self, resolved_against};

/// A part of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub(crate) const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Split::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| anyhow!("unknown split {s:?}; expected train, val or test"))
    }
}

/// The files of one scene: one per model modality (model order) and the label, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SceneFiles {
    pub id: String,
    pub modalities: Vec<PathBuf>,
    pub label: Option<PathBuf>,
    /// Per model modality, its mask of user-declared missing pixels (`data.missing_masks`,
    /// filled in by [`attach_missing_masks`]); empty: none.
    pub missing_masks: Vec<Option<PathBuf>>,
}

/// A dataset layout: where the files of each split are and how labels are coded.
pub(crate) trait Layout {
    /// The layout's key in `data.dataset` (e.g. `potsdam`).
    fn key(&self) -> &'static str;
    /// The modality names this layout provides, sorted.
    fn modality_names(&self) -> Vec<String>;
    /// The scenes of `split`, with files for `modalities` (model modality names, in order).
    fn scenes(&self, split: Split, modalities: &[String]) -> Result<Vec<SceneFiles>>;
    /// How the label rasters are decoded.
    fn label_decoder(&self) -> LabelDecoder;
    /// Checks the label decoding for values with two meanings (see [`LabelDecoder::check`]).
    fn check_labels(&self, num_classes: i64, ignore_index: i64) -> Result<()> {
        self.label_decoder().check(
            num_classes,
            ignore_index,
            &format!("data.dataset.{}", self.key()),
        )
    }
    /// Whether the model may use only some of the modalities (layouts with fixed products);
    /// layouts whose modalities are named in the configuration must match the model exactly.
    fn allows_subset(&self) -> bool {
        false
    }
}

/// The layout named in the configuration.
pub(crate) fn layout_of(config: &DatasetConfig) -> &dyn Layout {
    match config {
        DatasetConfig::Synthetic(c) => c,
        DatasetConfig::Potsdam(c) => c,
        DatasetConfig::Vaihingen(c) => c,
        DatasetConfig::WhuOptSar(c) => c,
        DatasetConfig::Generic(c) => c,
    }
}

/// Checks that a layout provides the model's modalities (exactly, unless it allows a subset).
pub(crate) fn check_modality_names(layout: &dyn Layout, model: &[String]) -> Result<()> {
    let provided: BTreeSet<String> = layout.modality_names().into_iter().collect();
    let wanted: BTreeSet<String> = model.iter().cloned().collect();
    let fits = if layout.allows_subset() {
        wanted.is_subset(&provided)
    } else {
        provided == wanted
    };
    if !fits {
        let p: Vec<&str> = provided.iter().map(String::as_str).collect();
        let w: Vec<&str> = wanted.iter().map(String::as_str).collect();
        bail!(
            "data.dataset.{}: provides modalities [{}] but model.modalities names [{}]",
            layout.key(),
            p.join(", "),
            w.join(", ")
        );
    }
    Ok(())
}

/// Gives each scene of `split` its user masks of missing pixels (`data.missing_masks`: model
/// modality name -> folder or glob, `{split}` replaced by the split): in the folder of modality
/// `m`, the raster whose file stem is the stem of the scene's file of `m` (the same rule for every
/// layout); a scene without one has none. `modalities` are the model's, in the order of the
/// scenes' files.
///
/// Errors: a key that is not a model modality (listing them), a folder that does not exist
/// (naming the key, the split and the path), two rasters with one stem in a folder.
pub(crate) fn attach_missing_masks(
    files: &mut [SceneFiles],
    masks: &BTreeMap<String, String>,
    modalities: &[String],
    split: Split,
) -> Result<()> {
    for (name, folder) in masks {
        let m = modalities.iter().position(|n| n == name).ok_or_else(|| {
            anyhow!(
                "data.missing_masks.{name}: not a modality of the model; model.modalities names [{}]",
                modalities.join(", ")
            )
        })?;
        let pattern = folder.replace("{split}", split.as_str());
        let key = format!("data.missing_masks.{name} (the {split} split)");
        let found = list_rasters(&key, &pattern)?;
        let mut matched = 0;
        for scene in files.iter_mut() {
            scene.missing_masks.resize(modalities.len(), None);
            let stem = scene.modalities[m]
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            scene.missing_masks[m] = found.get(&stem).cloned();
            matched += usize::from(scene.missing_masks[m].is_some());
        }
        if matched == 0 && !found.is_empty() {
            eprintln!(
                "warning: {key}: none of the {} raster(s) in {pattern} is named like a file of \
                 modality {name} of the {split} split (a mask takes the file stem of the scene's \
                 {name} file), so no pixel is marked missing",
                found.len()
            );
        }
    }
    Ok(())
}

/// Errors listing missing files (at most 10 named), under the layout's `root`.
fn check_exist(key: &str, root: &Path, files: &[SceneFiles]) -> Result<()> {
    let missing: Vec<String> = files
        .iter()
        .flat_map(|s| s.modalities.iter().chain(s.label.iter()))
        .filter(|p| !vsi::is_file(p))
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        let shown = missing
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        let more = if missing.len() > 10 {
            format!(" and {} more", missing.len() - 10)
        } else {
            String::new()
        };
        if !vsi::is_dir(root) {
            bail!(
                "data.dataset.{key}.root: folder {} does not exist{}",
                root.display(),
                resolved_against(root)
            );
        }
        bail!(
            "data.dataset.{key}: {} file(s) missing under root {}{}: {shown}{more}",
            missing.len(),
            root.display(),
            resolved_against(root)
        );
    }
    Ok(())
}

/// The product of each model modality, in model order.
fn products_of<P: Copy>(
    key: &str,
    map: &BTreeMap<String, P>,
    modalities: &[String],
) -> Result<Vec<P>> {
    modalities
        .iter()
        .map(|m| {
            map.get(m).copied().ok_or_else(|| {
                anyhow!("data.dataset.{key}.modalities: no product for model modality {m:?}")
            })
        })
        .collect()
}

/// `root/dir/name`, or `root/dir/dir/name` when the archive was unpacked into a nested folder
/// of the same name (a common way the ISPRS zips end up on disk).
fn product_path(root: &Path, dir: &str, name: &str) -> PathBuf {
    let flat = root.join(dir).join(name);
    let nested = root.join(dir).join(dir).join(name);
    if !vsi::exists(&flat) && vsi::exists(&nested) {
        nested
    } else {
        flat
    }
}

// ---------------------------------------------------------------------------------------------
// ISPRS Potsdam

/// The standard 24 training tiles of ISPRS Potsdam.
pub(crate) const POTSDAM_TRAIN: [&str; 24] = [
    "2_10", "2_11", "2_12", "3_10", "3_11", "3_12", "4_10", "4_11", "4_12", "5_10", "5_11", "5_12",
    "6_10", "6_11", "6_12", "6_7", "6_8", "6_9", "7_10", "7_11", "7_12", "7_7", "7_8", "7_9",
];
/// The standard 14 test tiles of ISPRS Potsdam.
pub(crate) const POTSDAM_TEST: [&str; 14] = [
    "2_13", "2_14", "3_13", "3_14", "4_13", "4_14", "4_15", "5_13", "5_14", "5_15", "6_13", "6_14",
    "6_15", "7_13",
];

impl PotsdamConfig {
    /// The tiles of a split (validation: `val_tiles`, or the test tiles when it is empty).
    pub(crate) fn tiles(&self, split: Split) -> Result<Vec<String>> {
        for t in &self.val_tiles {
            if !POTSDAM_TRAIN.contains(&t.as_str()) {
                bail!("data.dataset.potsdam.val_tiles: {t:?} is not a standard training tile (e.g. \"6_9\")");
            }
        }
        let own = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Ok(match split {
            Split::Train => own(&POTSDAM_TRAIN)
                .into_iter()
                .filter(|t| !self.val_tiles.contains(t))
                .collect(),
            Split::Val if self.val_tiles.is_empty() => own(&POTSDAM_TEST),
            Split::Val => self.val_tiles.clone(),
            Split::Test => own(&POTSDAM_TEST),
        })
    }

    /// The file of `product` for tile `x_y`.
    pub(crate) fn product_file(&self, product: PotsdamProduct, tile: &str) -> PathBuf {
        let (a, b) = tile.split_once('_').unwrap_or((tile, ""));
        let (dir, name) = match product {
            PotsdamProduct::Rgb => ("2_Ortho_RGB", format!("top_potsdam_{tile}_RGB.tif")),
            PotsdamProduct::Irrg => ("3_Ortho_IRRG", format!("top_potsdam_{tile}_IRRG.tif")),
            PotsdamProduct::Rgbir => ("4_Ortho_RGBIR", format!("top_potsdam_{tile}_RGBIR.tif")),
            PotsdamProduct::Dsm => ("1_DSM", format!("dsm_potsdam_{a:0>2}_{b:0>2}.tif")),
            PotsdamProduct::Ndsm => (
                "1_DSM_normalisation",
                format!("dsm_potsdam_{a:0>2}_{b:0>2}_normalized_lastools.jpg"),
            ),
        };
        product_path(&self.root, dir, &name)
    }

    /// The label file of tile `x_y`.
    pub(crate) fn label_file(&self, tile: &str) -> PathBuf {
        if self.eroded_labels {
            product_path(
                &self.root,
                "5_Labels_all_noBoundary",
                &format!("top_potsdam_{tile}_label_noBoundary.tif"),
            )
        } else {
            product_path(
                &self.root,
                "5_Labels_all",
                &format!("top_potsdam_{tile}_label.tif"),
            )
        }
    }
}

impl Layout for PotsdamConfig {
    fn key(&self) -> &'static str {
        "potsdam"
    }
    fn modality_names(&self) -> Vec<String> {
        self.modalities.keys().cloned().collect()
    }
    fn scenes(&self, split: Split, modalities: &[String]) -> Result<Vec<SceneFiles>> {
        let products = products_of(self.key(), &self.modalities, modalities)?;
        let files: Vec<SceneFiles> = self
            .tiles(split)?
            .into_iter()
            .map(|tile| SceneFiles {
                modalities: products
                    .iter()
                    .map(|&p| self.product_file(p, &tile))
                    .collect(),
                label: Some(self.label_file(&tile)),
                missing_masks: Vec::new(),
                id: tile,
            })
            .collect();
        check_exist(self.key(), &self.root, &files)?;
        Ok(files)
    }
    fn label_decoder(&self) -> LabelDecoder {
        LabelDecoder::isprs(self.eroded_labels, self.colour_tolerance)
    }
}

// ---------------------------------------------------------------------------------------------
// ISPRS Vaihingen

/// The standard 16 training areas of ISPRS Vaihingen.
pub(crate) const VAIHINGEN_TRAIN: [u32; 16] =
    [1, 3, 5, 7, 11, 13, 15, 17, 21, 23, 26, 28, 30, 32, 34, 37];
/// The standard 17 test areas of ISPRS Vaihingen.
pub(crate) const VAIHINGEN_TEST: [u32; 17] = [
    2, 4, 6, 8, 10, 12, 14, 16, 20, 22, 24, 27, 29, 31, 33, 35, 38,
];

impl VaihingenConfig {
    /// The areas of a split (validation: `val_areas`, or the test areas when it is empty).
    pub(crate) fn areas(&self, split: Split) -> Result<Vec<u32>> {
        for a in &self.val_areas {
            if !VAIHINGEN_TRAIN.contains(a) {
                bail!("data.dataset.vaihingen.val_areas: {a} is not a standard training area");
            }
        }
        Ok(match split {
            Split::Train => VAIHINGEN_TRAIN
                .into_iter()
                .filter(|a| !self.val_areas.contains(a))
                .collect(),
            Split::Val if self.val_areas.is_empty() => VAIHINGEN_TEST.to_vec(),
            Split::Val => self.val_areas.clone(),
            Split::Test => VAIHINGEN_TEST.to_vec(),
        })
    }

    /// The file of `product` for area `n`.
    pub(crate) fn product_file(&self, product: VaihingenProduct, area: u32) -> PathBuf {
        match product {
            VaihingenProduct::Irrg => product_path(
                &self.root,
                "top",
                &format!("top_mosaic_09cm_area{area}.tif"),
            ),
            VaihingenProduct::Dsm => product_path(
                &self.root,
                "dsm",
                &format!("dsm_09cm_matching_area{area}.tif"),
            ),
        }
    }

    /// The label file of area `n`.
    pub(crate) fn label_file(&self, area: u32) -> PathBuf {
        if self.eroded_labels {
            product_path(
                &self.root,
                "gts_eroded_for_participants",
                &format!("top_mosaic_09cm_area{area}_noBoundary.tif"),
            )
        } else {
            product_path(
                &self.root,
                "gts_for_participants",
                &format!("top_mosaic_09cm_area{area}.tif"),
            )
        }
    }
}

impl Layout for VaihingenConfig {
    fn key(&self) -> &'static str {
        "vaihingen"
    }
    fn modality_names(&self) -> Vec<String> {
        self.modalities.keys().cloned().collect()
    }
    fn scenes(&self, split: Split, modalities: &[String]) -> Result<Vec<SceneFiles>> {
        let products = products_of(self.key(), &self.modalities, modalities)?;
        let files: Vec<SceneFiles> = self
            .areas(split)?
            .into_iter()
            .map(|area| SceneFiles {
                id: format!("area{area}"),
                modalities: products
                    .iter()
                    .map(|&p| self.product_file(p, area))
                    .collect(),
                label: Some(self.label_file(area)),
                missing_masks: Vec::new(),
            })
            .collect();
        check_exist(self.key(), &self.root, &files)?;
        Ok(files)
    }
    fn label_decoder(&self) -> LabelDecoder {
        LabelDecoder::isprs(self.eroded_labels, self.colour_tolerance)
    }
}

// ---------------------------------------------------------------------------------------------
// Folders matched by file stem (WHU-OPT-SAR, synthetic, generic)

/// File extensions taken as rasters when a folder is listed.
const RASTER_EXTENSIONS: [&str; 8] = ["tif", "tiff", "png", "jpg", "jpeg", "jp2", "img", "vrt"];

/// The rasters of a folder, or of a glob whose last component holds `*`/`?`, by file stem.
/// `key` names the configuration key the pattern comes from, for errors.
pub(crate) fn list_rasters(key: &str, pattern: &str) -> Result<BTreeMap<String, PathBuf>> {
    let path = Path::new(pattern);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (dir, glob) = if name.contains(['*', '?']) {
        (
            path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            Some(name),
        )
    } else {
        (path.to_path_buf(), None)
    };
    if dir.to_string_lossy().contains(['*', '?']) {
        bail!("{key}: {pattern}: only the last path component may hold * or ?");
    }
    if !vsi::is_dir(&dir) {
        bail!(
            "{key}: folder {} does not exist{}",
            dir.display(),
            resolved_against(&dir)
        );
    }
    let entries = vsi::read_dir(&dir).with_context(|| format!("{key}: {pattern}"))?;
    let mut out = BTreeMap::new();
    for file in entries {
        let fname = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if fname.starts_with('.') || !vsi::is_file(&file) {
            continue;
        }
        let keep = match &glob {
            Some(g) => glob_match(g.as_bytes(), fname.as_bytes()),
            None => file
                .extension()
                .map(|e| RASTER_EXTENSIONS.contains(&e.to_string_lossy().to_lowercase().as_str()))
                .unwrap_or(false),
        };
        if !keep {
            continue;
        }
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(previous) = out.insert(stem.clone(), file.clone()) {
            bail!(
                "{} and {} share the stem {stem:?}; samples are matched by stem",
                previous.display(),
                file.display()
            );
        }
    }
    Ok(out)
}

/// `*` (any run) and `?` (any one character) matching.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches the files of several sources by stem. Every source must hold the same stems;
/// otherwise the error lists, per source, the stems it lacks.
pub(crate) fn match_by_stem(
    key: &str,
    sources: &[(String, BTreeMap<String, PathBuf>)],
) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let all: BTreeSet<&String> = sources.iter().flat_map(|(_, m)| m.keys()).collect();
    let mut problems = Vec::new();
    for (name, files) in sources {
        let missing: Vec<&str> = all
            .iter()
            .filter(|s| !files.contains_key(**s))
            .map(|s| s.as_str())
            .collect();
        if !missing.is_empty() {
            let shown = missing
                .iter()
                .take(20)
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            let more = if missing.len() > 20 {
                format!(" and {} more", missing.len() - 20)
            } else {
                String::new()
            };
            problems.push(format!("{name} lacks stem(s) {shown}{more}"));
        }
    }
    if !problems.is_empty() {
        bail!(
            "data.dataset.{key}: samples are matched by file stem, but {}",
            problems.join("; ")
        );
    }
    Ok(all
        .into_iter()
        .map(|stem| {
            (
                stem.clone(),
                sources.iter().map(|(_, m)| m[stem].clone()).collect(),
            )
        })
        .collect())
}

/// Scenes from one folder/glob per modality and one for labels; `keys` gives the configuration
/// key of a modality's folder and of the labels' (for errors).
fn stem_scenes(
    key: &str,
    modalities: &[String],
    sources: &BTreeMap<String, String>,
    labels: Option<&str>,
    keys: &dyn Fn(Option<&str>) -> String,
) -> Result<Vec<SceneFiles>> {
    let mut lists = Vec::new();
    for m in modalities {
        let pattern = sources
            .get(m)
            .ok_or_else(|| anyhow!("data.dataset.{key}: no folder for modality {m:?}"))?;
        lists.push((
            format!("modality {m} ({pattern})"),
            list_rasters(&keys(Some(m)), pattern)?,
        ));
    }
    if let Some(pattern) = labels {
        lists.push((
            format!("labels ({pattern})"),
            list_rasters(&keys(None), pattern)?,
        ));
    }
    let matched = match_by_stem(key, &lists)?;
    if matched.is_empty() {
        let where_: Vec<&str> = sources.values().map(String::as_str).collect();
        bail!(
            "data.dataset.{key}: no rasters found in {}",
            where_.join(", ")
        );
    }
    Ok(matched
        .into_iter()
        .map(|(id, mut files)| {
            let label = labels.map(|_| files.pop().unwrap_or_default());
            SceneFiles {
                id,
                modalities: files,
                label,
                missing_masks: Vec::new(),
            }
        })
        .collect())
}

impl Layout for SyntheticConfig {
    fn key(&self) -> &'static str {
        "synthetic"
    }
    fn allows_subset(&self) -> bool {
        true
    }
    fn modality_names(&self) -> Vec<String> {
        ["dsm", "optical", "sar"].map(String::from).to_vec()
    }
    fn scenes(&self, split: Split, modalities: &[String]) -> Result<Vec<SceneFiles>> {
        let dir = self.root.join(split.as_str());
        if !vsi::is_dir(&dir) {
            bail!(
                "data.dataset.synthetic.root: {} has no {split}/ folder{}; write the benchmark with `dis2 synth --out {}`",
                self.root.display(),
                resolved_against(&self.root),
                self.root.display()
            );
        }
        let folder = |m: &str| dir.join(m).to_string_lossy().into_owned();
        let sources: BTreeMap<String, String> =
            modalities.iter().map(|m| (m.clone(), folder(m))).collect();
        let keys = |_: Option<&str>| "data.dataset.synthetic.root".to_string();
        stem_scenes(
            self.key(),
            modalities,
            &sources,
            Some(&folder("label")),
            &keys,
        )
    }
    fn label_decoder(&self) -> LabelDecoder {
        LabelDecoder::Ids
    }
}

impl WhuOptSarConfig {
    fn split_of(&self, stem: &str) -> Split {
        if self.test.iter().any(|s| s == stem) {
            Split::Test
        } else if self.val.iter().any(|s| s == stem) {
            Split::Val
        } else {
            Split::Train
        }
    }
}

impl Layout for WhuOptSarConfig {
    fn key(&self) -> &'static str {
        "whu_opt_sar"
    }
    fn allows_subset(&self) -> bool {
        true
    }
    fn modality_names(&self) -> Vec<String> {
        ["optical", "sar"].map(String::from).to_vec()
    }
    fn scenes(&self, split: Split, modalities: &[String]) -> Result<Vec<SceneFiles>> {
        let folder = |m: &str| self.root.join(m).to_string_lossy().into_owned();
        let sources: BTreeMap<String, String> =
            modalities.iter().map(|m| (m.clone(), folder(m))).collect();
        let keys = |_: Option<&str>| "data.dataset.whu_opt_sar.root".to_string();
        let all = stem_scenes(
            self.key(),
            modalities,
            &sources,
            Some(&folder("lbl")),
            &keys,
        )?;
        for (list, key) in [(&self.val, "val"), (&self.test, "test")] {
            if let Some(s) = list.iter().find(|s| !all.iter().any(|f| &f.id == *s)) {
                bail!(
                    "data.dataset.whu_opt_sar.{key}: no image with stem {s:?} under {}",
                    self.root.display()
                );
            }
        }
        Ok(all
            .into_iter()
            .filter(|s| self.split_of(&s.id) == split)
            .collect())
    }
    fn label_decoder(&self) -> LabelDecoder {
        LabelDecoder::Codes {
            map: self.class_codes.clone(),
            ignore: self.ignore_codes.clone(),
            key: "data.dataset.whu_opt_sar.class_codes".into(),
        }
    }
}

impl GenericConfig {
    fn split(&self, split: Split) -> Option<&GenericSplit> {
        match split {
            Split::Train => Some(&self.train),
            Split::Val => self.val.as_ref(),
            Split::Test => self.test.as_ref(),
        }
    }
}

impl Layout for GenericConfig {
    fn key(&self) -> &'static str {
        "generic"
    }
    fn modality_names(&self) -> Vec<String> {
        self.train.modalities.keys().cloned().collect()
    }
    fn scenes(&self, split: Split, modalities: &[String]) -> Result<Vec<SceneFiles>> {
        let part = self
            .split(split)
            .ok_or_else(|| anyhow!("data.dataset.generic.{split}: not configured"))?;
        let names: Vec<String> = part.modalities.keys().cloned().collect();
        if names != self.modality_names() {
            bail!(
                "data.dataset.generic.{split}.modalities: names [{}] differ from train's [{}]",
                names.join(", "),
                self.modality_names().join(", ")
            );
        }
        let keys = |m: Option<&str>| match m {
            Some(m) => format!("data.dataset.generic.{split}.modalities.{m}"),
            None => format!("data.dataset.generic.{split}.labels"),
        };
        stem_scenes(
            self.key(),
            modalities,
            &part.modalities,
            part.labels.as_deref(),
            &keys,
        )
    }
    fn check_labels(&self, num_classes: i64, ignore_index: i64) -> Result<()> {
        if self.class_codes.is_none() && !self.ignore_codes.is_empty() {
            bail!(
                "data.dataset.generic.ignore_codes: given without class_codes, where label values \
                 are class ids and ignore_codes would have no effect; give class_codes too, or \
                 declare the values as the label rasters' nodata"
            );
        }
        self.label_decoder()
            .check(num_classes, ignore_index, "data.dataset.generic")
    }
    fn label_decoder(&self) -> LabelDecoder {
        match &self.class_codes {
            Some(map) => LabelDecoder::Codes {
                map: map.clone(),
                ignore: self.ignore_codes.clone(),
                key: "data.dataset.generic.class_codes".into(),
            },
            None => LabelDecoder::Ids,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob_match(b"*.tif", b"a.tif"));
        assert!(glob_match(b"img_??.tif", b"img_01.tif"));
        assert!(!glob_match(b"img_??.tif", b"img_1.tif"));
        assert!(glob_match(b"*_RGB*", b"top_RGB.tif"));
        assert!(!glob_match(b"*.tif", b"a.tif.aux.xml"));
    }

    #[test]
    fn standard_splits_have_the_published_sizes_and_do_not_overlap() {
        assert_eq!((POTSDAM_TRAIN.len(), POTSDAM_TEST.len()), (24, 14));
        assert!(POTSDAM_TRAIN.iter().all(|t| !POTSDAM_TEST.contains(t)));
        assert_eq!((VAIHINGEN_TRAIN.len(), VAIHINGEN_TEST.len()), (16, 17));
        assert!(VAIHINGEN_TRAIN.iter().all(|t| !VAIHINGEN_TEST.contains(t)));
        let cfg = PotsdamConfig {
            root: "r".into(),
            modalities: BTreeMap::new(),
            eroded_labels: false,
            val_tiles: vec!["6_9".into()],
            colour_tolerance: 0,
        };
        assert_eq!(cfg.tiles(Split::Train).unwrap().len(), 23);
        assert_eq!(cfg.tiles(Split::Val).unwrap(), vec!["6_9".to_string()]);
        assert_eq!(
            cfg.product_file(PotsdamProduct::Ndsm, "2_10"),
            PathBuf::from("r/1_DSM_normalisation/dsm_potsdam_02_10_normalized_lastools.jpg")
        );
        let bad = PotsdamConfig {
            val_tiles: vec!["2_13".into()],
            ..cfg
        };
        let err = bad.tiles(Split::Train).unwrap_err().to_string();
        assert!(err.contains("val_tiles") && err.contains("2_13"), "{err}");
    }
}
