//! A checked list of scenes for one split, and windowed reads of a scene (all modalities and the
//! decoded labels).

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

use super::config::DataConfig;
use super::labels::LabelDecoder;
use super::layouts::{check_modality_names, layout_of, SceneFiles, Split};
use super::raster::{self, Pixels, RasterInfo, Window};
use crate::model::config::{ModalitySpec, ModelConfig};

/// One scene: its files and the header of its first modality (size, georeferencing).
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    pub id: String,
    /// One file per model modality, in model order.
    pub modalities: Vec<PathBuf>,
    pub label: Option<PathBuf>,
    /// Header of the first modality: size, geotransform, CRS.
    pub info: RasterInfo,
}

impl Scene {
    pub fn width(&self) -> usize {
        self.info.width
    }
    pub fn height(&self) -> usize {
        self.info.height
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
    /// counts against `model.modalities`, alignment between modalities and labels.
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
        )
    }

    /// Checks scenes given as files (used by [`Self::open`], and by callers with their own lists).
    pub fn from_files(
        layout: &'static str,
        split: Split,
        files: Vec<SceneFiles>,
        modalities: &[ModalitySpec],
        decoder: LabelDecoder,
        num_classes: i64,
        ignore_index: i64,
    ) -> Result<Self> {
        let scenes = files
            .into_par_iter()
            .map(|f| check_scene(f, modalities, &decoder))
            .collect::<Result<Vec<_>>>()?;
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
            .map(|p| raster::read_window_at(p, window))
            .collect::<Result<Vec<_>>>()?;
        let labels = match &scene.label {
            Some(path) => {
                let px = raster::read_window_at(path, window)?;
                self.decoder
                    .decode(&px, path, self.num_classes, self.ignore_index)?
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

fn check_scene(
    files: SceneFiles,
    modalities: &[ModalitySpec],
    decoder: &LabelDecoder,
) -> Result<Scene> {
    if files.modalities.len() != modalities.len() {
        bail!(
            "scene {}: {} modality files for {} modalities",
            files.id,
            files.modalities.len(),
            modalities.len()
        );
    }
    let mut infos = Vec::with_capacity(modalities.len());
    for (path, spec) in files.modalities.iter().zip(modalities) {
        let info = RasterInfo::read(path)?;
        check_bands(
            path,
            info.bands,
            spec.channels,
            &format!("modality {} (model.modalities)", spec.name),
        )?;
        if let Some(first) = infos.first() {
            RasterInfo::check_aligned(first, &info)?;
        }
        infos.push(info);
    }
    if let Some(path) = &files.label {
        let info = RasterInfo::read(path)?;
        let what = if decoder.bands() == 3 {
            "labels (RGB colours)"
        } else {
            "labels (class values)"
        };
        check_bands(path, info.bands, decoder.bands() as i64, what)?;
        infos[0].check_aligned(&info)?;
    }
    Ok(Scene {
        id: files.id,
        modalities: files.modalities,
        label: files.label,
        info: infos.swap_remove(0),
    })
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
