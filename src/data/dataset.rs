//! A checked list of scenes for one split, and windowed reads of a scene (all modalities and the
//! decoded labels) on the scene's grid.

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::path::Path;

use super::config::{DataConfig, GridConfig};
use super::grid::{self, GridFile, GridKeys, GridSource, SceneGrid};
use super::labels::LabelDecoder;
use super::layouts::{check_modality_names, layout_of, SceneFiles, Split};
use super::raster::{Pixels, RasterInfo, Window};
use crate::model::config::{ModalitySpec, ModelConfig};

/// One scene: its files, each as read on the scene's grid, and that grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    pub id: String,
    /// One file per model modality, in model order.
    pub modalities: Vec<GridSource>,
    pub label: Option<GridSource>,
    /// The grid every file is read on: the reference modality's size and georeferencing.
    pub grid: SceneGrid,
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

impl SceneDataset {
    /// The scenes of `split` of the configured dataset; every file's header is checked: band
    /// counts against `model.modalities`, and each file is placed on its scene's grid
    /// (`data.grid`: resampled when it is on another grid, refused when it cannot be).
    pub fn open(data: &DataConfig, model: &ModelConfig, split: Split) -> Result<Self> {
        let layout = layout_of(&data.dataset);
        let names: Vec<String> = model.modalities.iter().map(|m| m.name.clone()).collect();
        check_modality_names(layout, &names)?;
        let files = layout.scenes(split, &names)?;
        if files.is_empty() {
            bail!(
                "data.dataset.{}: the {split} split has no scenes",
                layout.key()
            );
        }
        Self::from_files(
            layout.key(),
            split,
            files,
            &model.modalities,
            layout.label_decoder(),
            model.num_classes,
            data.ignore_index,
            &data.grid,
        )
    }

    /// Checks scenes given as files (used by [`Self::open`], and by callers with their own
    /// lists) and places them on their grids; says once what is resampled ([`grid::announce`]).
    #[allow(clippy::too_many_arguments)]
    pub fn from_files(
        layout: &'static str,
        split: Split,
        files: Vec<SceneFiles>,
        modalities: &[ModalitySpec],
        decoder: LabelDecoder,
        num_classes: i64,
        ignore_index: i64,
        grid: &GridConfig,
    ) -> Result<Self> {
        let checked = files
            .into_par_iter()
            .map(|f| check_scene(f, modalities, &decoder, grid))
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
            decoder,
            num_classes,
            ignore_index,
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
        let scene = self.scenes.get(index).with_context(|| {
            format!(
                "scene index {index} out of range ({} scenes)",
                self.scenes.len()
            )
        })?;
        if window.width == 0 || window.height == 0 {
            bail!("scene {}: cannot read an empty window {window:?}", scene.id);
        }
        let modalities = scene
            .modalities
            .iter()
            .map(|source| source.read(window))
            .collect::<Result<Vec<_>>>()?;
        let labels = match &scene.label {
            Some(source) => {
                let px = source.read(window)?;
                self.decoder
                    .decode(&px, &source.path, self.num_classes, self.ignore_index)?
            }
            None => vec![self.ignore_index; window.width * window.height],
        };
        Ok(RawSample {
            width: window.width,
            height: window.height,
            modalities,
            labels,
        })
    }
}

/// Checks the band counts of a scene's files and places them on the grid of the reference
/// modality (`data.grid.reference`, default the model's first); returns the scene and what to
/// say about it.
fn check_scene(
    files: SceneFiles,
    modalities: &[ModalitySpec],
    decoder: &LabelDecoder,
    config: &GridConfig,
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
        let header = RasterInfo::read(path)?;
        check_bands(
            path,
            header.bands,
            spec.channels,
            &format!("modality {} (model.modalities)", spec.name),
        )?;
        grid_files.push(GridFile {
            role: format!("modality {}", spec.name),
            key: spec.name.clone(),
            header,
            categorical: false,
        });
    }
    if let Some(path) = &files.label {
        let header = RasterInfo::read(path)?;
        let what = if decoder.bands() == 3 {
            "labels (RGB colours)"
        } else {
            "labels (class values)"
        };
        check_bands(path, header.bands, decoder.bands() as i64, what)?;
        grid_files.push(GridFile {
            role: "labels".to_string(),
            key: "labels".to_string(),
            header,
            categorical: true,
        });
    }
    let reference = match &config.reference {
        Some(name) => modalities.iter().position(|m| &m.name == name).unwrap_or(0),
        None => 0,
    };
    let plan = grid::plan(&grid_files, reference, config, &GridKeys::CONFIG)
        .with_context(|| format!("scene {}", files.id))?;
    let mut sources = plan.sources;
    let label = files.label.as_ref().and_then(|_| sources.pop());
    let scene = Scene {
        id: files.id,
        modalities: sources,
        label,
        grid: plan.grid,
    };
    Ok((scene, plan.notes))
}

fn check_bands(path: &Path, found: usize, expected: i64, what: &str) -> Result<()> {
    if found as i64 != expected {
        bail!(
            "{}: {what} should have {expected} band(s), found {found}",
            path.display()
        );
    }
    Ok(())
}
