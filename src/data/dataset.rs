//! A checked list of scenes for one split, and windowed reads of a scene (all modalities and the
//! decoded labels) on the scene's grid. Every read of a scene's rasters goes through
//! [`SceneDataset`], so the grid ([`super::grid`]: files on other grids resampled onto it),
//! validity (GDAL's mask model, [`super::validity`]) and label decoding are the same for
//! training, statistics and scoring.

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::collections::BTreeMap;

use super::config::{DataConfig, GridConfig, LabelNodata};
use super::grid::{self, GridFile, GridKeys, GridSource, SceneGrid};
use super::labels::{LabelDecoder, UnknownLabelValues};
use super::layouts::{attach_missing_masks, check_modality_names, layout_of, SceneFiles, Split};
use super::raster::{self, Pixels, RasterInfo, Window};
use super::validity::{AlphaRule, NodataRule};
use crate::model::config::{ModalitySpec, ModelConfig};

/// Rows of a label raster surveyed at a time when listing the values that are not classes.
const SURVEY_ROWS: usize = 256;

/// One scene: its files, each as read on the scene's grid, and that grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    pub id: String,
    /// One file per model modality, in model order.
    pub modalities: Vec<GridSource>,
    pub label: Option<GridSource>,
    /// How the label raster's declared nodata counts (see `data.label_nodata`).
    pub label_rule: NodataRule,
    /// The grid every file is read on: the reference modality's size and georeferencing.
    pub grid: SceneGrid,
    /// Per model modality (model order), its user mask of missing pixels (`data.missing_masks`)
    /// as read on the grid (resampled by nearest when it is on another grid): the modality is
    /// missing where the mask is valid and nonzero. Empty, or `None`, where there is none.
    pub missing_masks: Vec<Option<GridSource>>,
}

impl Scene {
    pub fn width(&self) -> usize {
        self.grid.info.width
    }
    pub fn height(&self) -> usize {
        self.grid.info.height
    }
}

/// The pixels of one window of a scene at native resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSample {
    pub width: usize,
    pub height: usize,
    /// One entry per model modality.
    pub modalities: Vec<Pixels>,
    /// Class ids, `ignore_index` where unlabelled, nodata or outside the scene.
    pub labels: Vec<i64>,
}

/// The scenes of one split of a dataset, checked against the model.
#[derive(Debug, Clone)]
pub struct SceneDataset {
    /// The layout key (`potsdam`, `synthetic`, ...).
    pub layout: &'static str,
    pub split: Split,
    pub modalities: Vec<ModalitySpec>,
    pub scenes: Vec<Scene>,
    pub decoder: LabelDecoder,
    pub num_classes: i64,
    pub ignore_index: i64,
}

/// How a split's files are read: the label decoder, the class count, the ignore index, what
/// wins when a label raster's nodata value is also a class, and the grid each scene is read on.
#[derive(Debug, Clone)]
pub(crate) struct LabelRules {
    pub decoder: LabelDecoder,
    pub num_classes: i64,
    pub ignore_index: i64,
    pub nodata: LabelNodata,
    /// `data.grid`: the reference modality, strict mode, resampling.
    pub grid: GridConfig,
    /// What the modalities' bands marked as alpha are (`data.alpha_as_data`); label rasters'
    /// alpha bands are always masks.
    pub alpha: AlphaRule,
}

impl SceneDataset {
    /// The scenes of `split` of the configured dataset; the label decoding is checked for values
    /// with two meanings, and every file's header: band counts against `model.modalities`,
    /// label nodata values that are also classes, and each file's place on its scene's grid
    /// (`data.grid`: resampled when it is on another grid, refused when it cannot be).
    pub fn open(data: &DataConfig, model: &ModelConfig, split: Split) -> Result<Self> {
        let layout = layout_of(&data.dataset);
        let names: Vec<String> = model.modalities.iter().map(|m| m.name.clone()).collect();
        check_modality_names(layout, &names)?;
        layout.check_labels(model.num_classes, data.ignore_index)?;
        let mut files = layout.scenes(split, &names)?;
        attach_missing_masks(&mut files, &data.missing_masks, &names, split)?;
        if files.is_empty() {
            bail!(
                "data.dataset.{}: the {split} split has no scenes",
                layout.key()
            );
        }
        let rules = LabelRules {
            decoder: layout.label_decoder(),
            num_classes: model.num_classes,
            ignore_index: data.ignore_index,
            nodata: data.label_nodata,
            grid: data.grid.clone(),
            alpha: AlphaRule::data_if(data.alpha_as_data),
        };
        Self::from_files(layout.key(), split, files, &model.modalities, rules)
    }

    /// Checks scenes given as files (used by [`Self::open`], and by callers with their own
    /// lists) and places them on their grids. The scenes are checked in parallel; an error is
    /// the first in scene order, so the same file is named every run. What is resampled or
    /// completed is said once ([`grid::announce`]).
    pub(crate) fn from_files(
        layout: &'static str,
        split: Split,
        files: Vec<SceneFiles>,
        modalities: &[ModalitySpec],
        rules: LabelRules,
    ) -> Result<Self> {
        let checked = files
            .into_par_iter()
            .map(|f| check_scene(f, modalities, &rules))
            .collect::<Vec<Result<_>>>()
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        let mut scenes = Vec::with_capacity(checked.len());
        for (scene, notes) in checked {
            grid::announce(&notes);
            scenes.push(scene);
        }
        Ok(Self {
            layout,
            split,
            modalities: modalities.to_vec(),
            scenes,
            decoder: rules.decoder,
            num_classes: rules.num_classes,
            ignore_index: rules.ignore_index,
        })
    }

    pub fn len(&self) -> usize {
        self.scenes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scenes.is_empty()
    }

    /// Reads `window` of scene `index` at native resolution: every modality and the labels.
    pub fn read(&self, index: usize, window: Window) -> Result<RawSample> {
        let scene = self.scene(index)?;
        if window.width == 0 || window.height == 0 {
            bail!("scene {}: cannot read an empty window {window:?}", scene.id);
        }
        let modalities = (0..scene.modalities.len())
            .map(|m| self.read_modality(index, m, window))
            .collect::<Result<Vec<_>>>()?;
        Ok(RawSample {
            width: window.width,
            height: window.height,
            modalities,
            labels: self.read_labels(index, window)?,
        })
    }

    /// Reads `window` (of the scene's grid) of modality `m` (model order) of scene `index`, with
    /// its validity: invalid where the file has no data (GDAL's mask model) and where the
    /// modality's user mask ([`Scene::missing_masks`]) marks it missing.
    pub(crate) fn read_modality(&self, index: usize, m: usize, window: Window) -> Result<Pixels> {
        let scene = self.scene(index)?;
        let source = scene.modalities.get(m).with_context(|| {
            format!(
                "scene {}: no modality {m} (it has {})",
                scene.id,
                scene.modalities.len()
            )
        })?;
        let mut px = source.read(window)?;
        if let Some(Some(mask)) = scene.missing_masks.get(m) {
            let marked = missing_pixels(&mask.read(window)?);
            for (ok, missing) in px.valid.iter_mut().zip(marked) {
                *ok &= !missing;
            }
        }
        Ok(px)
    }

    /// The decoded labels of `window` (of the scene's grid) of scene `index`: class ids,
    /// `ignore_index` where the scene has no labels, the label raster is invalid (masks, nodata,
    /// outside, not covering the grid) or the value is ignored. Values that are not classes are
    /// an error listing every such value of the whole file with its pixel count.
    pub(crate) fn read_labels(&self, index: usize, window: Window) -> Result<Vec<i64>> {
        let scene = self.scene(index)?;
        let Some(source) = &scene.label else {
            return Ok(vec![self.ignore_index; window.width * window.height]);
        };
        let open = source.open()?;
        let px = open.read_with(window, scene.label_rule)?;
        let decoded = self.decoder.decode(
            &px,
            &source.path,
            window,
            self.num_classes,
            self.ignore_index,
        );
        match decoded {
            Err(e) if e.downcast_ref::<UnknownLabelValues>().is_some() => {
                Err(self.survey_unknown(scene, open.dataset(), e)?.into())
            }
            Err(e) if source.warp.is_some() => Err(e.context(format!(
                "{}: the labels are resampled onto the grid of {}, so columns and rows are the \
                 grid's",
                source.path.display(),
                scene.grid.role
            ))),
            other => other,
        }
    }

    fn scene(&self, index: usize) -> Result<&Scene> {
        self.scenes.get(index).with_context(|| {
            format!(
                "scene index {index} out of range ({} scenes)",
                self.scenes.len()
            )
        })
    }

    /// Every value of `scene`'s label raster that is not a class, with its pixels, read in
    /// strips of the file itself (`found` is what one window showed).
    fn survey_unknown(
        &self,
        scene: &Scene,
        ds: &gdal::Dataset,
        found: anyhow::Error,
    ) -> Result<UnknownLabelValues> {
        let mut unknown = found
            .downcast::<UnknownLabelValues>()
            .map_err(|e| e.context("label survey"))?;
        let path = unknown.path.clone();
        let (width, height) = ds.raster_size();
        let mut counts = BTreeMap::new();
        for y in (0..height).step_by(SURVEY_ROWS) {
            let window = Window::new(0, y as i64, width, SURVEY_ROWS.min(height - y));
            let px =
                raster::read_window_with(ds, &path, window, scene.label_rule, AlphaRule::Mask)?;
            let strip =
                self.decoder
                    .unknown_values(&px, &path, self.num_classes, self.ignore_index)?;
            for (value, n) in strip {
                *counts.entry(value).or_insert(0) += n;
            }
        }
        unknown.counts = counts;
        unknown.whole_file = true;
        Ok(unknown)
    }
}

/// Where a mask of missing pixels marks its modality missing: valid (its nodata and the places
/// it does not cover are not missing) and nonzero in any band.
fn missing_pixels(mask: &Pixels) -> Vec<bool> {
    (0..mask.width * mask.height)
        .map(|i| mask.valid[i] && (0..mask.bands).any(|b| mask.band(b)[i] != 0.0))
        .collect()
}

/// The scene's masks of missing pixels as files to place on its grid (categorical: nearest),
/// with the model index of the modality each one masks.
fn missing_mask_files(
    files: &SceneFiles,
    modalities: &[ModalitySpec],
) -> Result<(Vec<usize>, Vec<GridFile>)> {
    let mut masks = Vec::new();
    let mut grid_files = Vec::new();
    for (m, path) in files.missing_masks.iter().enumerate() {
        let (Some(path), Some(spec)) = (path, modalities.get(m)) else {
            continue;
        };
        masks.push(m);
        grid_files.push(GridFile {
            role: format!("missing mask of modality {}", spec.name),
            key: format!("missing_masks.{}", spec.name),
            header: RasterInfo::read(path)?,
            categorical: true,
        });
    }
    Ok((masks, grid_files))
}

/// Checks the band counts and label nodata of a scene's files and places them on the grid of
/// the reference modality (`data.grid.reference`, default the model's first); returns the scene
/// and what to say about it.
fn check_scene(
    files: SceneFiles,
    modalities: &[ModalitySpec],
    rules: &LabelRules,
) -> Result<(Scene, Vec<grid::Note>)> {
    if files.modalities.len() != modalities.len() {
        bail!(
            "scene {}: {} modality files for {} modalities",
            files.id,
            files.modalities.len(),
            modalities.len()
        );
    }
    let mut grid_files = Vec::with_capacity(modalities.len() + 1);
    for (path, spec) in files.modalities.iter().zip(modalities) {
        let header = RasterInfo::read_with(path, rules.alpha)?;
        header.check_bands(
            spec.channels.max(0) as usize,
            &format!("modality {} (model.modalities)", spec.name),
        )?;
        grid_files.push(GridFile {
            role: format!("modality {}", spec.name),
            key: spec.name.clone(),
            header,
            categorical: false,
        });
    }
    let mut label_rule = NodataRule::Honour;
    let label_count = usize::from(files.label.is_some());
    if let Some(path) = &files.label {
        let header = RasterInfo::read(path)?;
        let what = if rules.decoder.bands() == 3 {
            "labels (RGB colours)"
        } else {
            "labels (class values)"
        };
        header.check_bands(rules.decoder.bands(), what)?;
        label_rule = label_nodata_rule(&header, rules)?;
        grid_files.push(GridFile {
            role: "labels".to_string(),
            key: "labels".to_string(),
            header,
            categorical: true,
        });
    }
    let (masks, mask_files) = missing_mask_files(&files, modalities)?;
    grid_files.extend(mask_files);
    let reference = match &rules.grid.reference {
        Some(name) => modalities.iter().position(|m| &m.name == name).unwrap_or(0),
        None => 0,
    };
    let plan = grid::plan(&grid_files, reference, &rules.grid, &GridKeys::CONFIG)
        .with_context(|| format!("scene {}", files.id))?;
    let mut sources = plan.sources;
    let mut missing_masks = vec![None; modalities.len()];
    for (&m, source) in masks
        .iter()
        .zip(sources.split_off(modalities.len() + label_count))
    {
        missing_masks[m] = Some(source);
    }
    let label = files.label.as_ref().and_then(|_| sources.pop());
    let scene = Scene {
        id: files.id,
        modalities: sources,
        label,
        label_rule,
        grid: plan.grid,
        missing_masks,
    };
    Ok((scene, plan.notes))
}

/// How a label raster's declared nodata counts: refused (the default) when it is also a class,
/// else as `data.label_nodata` says; honoured when it collides with nothing.
fn label_nodata_rule(info: &RasterInfo, rules: &LabelRules) -> Result<NodataRule> {
    let lost = info.nodata.iter().enumerate().find_map(|(b, nodata)| {
        let value = (*nodata)?;
        rules
            .decoder
            .class_of_nodata(b, value, rules.num_classes, rules.ignore_index)
            .map(|class| (b, value, class))
    });
    let Some((b, value, class)) = lost else {
        return Ok(NodataRule::Honour);
    };
    match rules.nodata {
        LabelNodata::Class => Ok(NodataRule::Disregard),
        LabelNodata::Nodata => Ok(NodataRule::Honour),
        LabelNodata::Refuse => bail!(
            "{}: band {} declares nodata {value}, which is also {class} of the labels, so every \
             pixel of that class would be left out silently. Say which meaning wins: \
             data.label_nodata: class (read {value} as the class; the declaration is disregarded \
             for such label files) or data.label_nodata: nodata (leave pixels of {value} out); \
             or remove the declaration (gdal_edit.py -unsetnodata)",
            info.path.display(),
            b + 1
        ),
    }
}
