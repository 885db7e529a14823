//! `dis2 predict`: a trained model over whole scenes of any size.
//!
//! A scene is cut into windows of the model's crop size on a regular grid with `overlap` pixels
//! shared between neighbours (see [`crate::tiling`]); windows reaching past the scene, and scenes
//! smaller than a window, are filled by reflection. A background thread (`reader`) reads one
//! strip of rows per row of windows from every input (the inputs in parallel), cuts and
//! normalises the windows in parallel (rayon) and hands them over in batches through a bounded
//! queue while the model runs the previous batch. Window probabilities are blended with a cosine ramp by a
//! [`BandStitcher`], which holds only the band of rows still being written, on a second
//! background thread (`Blender`) that also writes the finished rows to the output GeoTIFFs
//! ([`writer::StreamingTiff`]), so the model's thread only runs the model. Memory therefore
//! depends on the scene's width, never on its height. [`Summary::timings`] says where the time
//! went.
//!
//! Which branch runs is chosen per pixel ([`routes`]): from the modalities available there
//! (given, valid, not marked missing by a `--missing-mask`, also within the context margin), by
//! the fallback rule of [`RouteTable`]. A batch runs each route its windows need once, on the
//! windows that need it, and each pixel takes its route's probabilities; a batch of one route
//! runs one forward. With `per_pixel` off, one branch per scene follows from the inputs given
//! ([`Route::choose`]) and pixels where any given input lacks data are nodata.
//!
//! Each scene's inputs are measured against the checkpoint's normalisation as they are read
//! ([`crate::data::input_range`]): another bit depth, unit or scale is refused unless
//! `accept_input_range`, a scene merely unlike the training data is named in a warning.
//!
//! Stages of [`predict_scene`]: check the inputs and lay the windows (`ScenePlan`), create the
//! outputs (`Sink`), then per batch read (`reader`), run the branch (`batch_probs`), blend and
//! write the finished rows (`BlendStage`, inline or behind the model: `Blender`).

mod reader;
mod routes;
mod settings;
mod tta;
pub(crate) mod writer;

pub use routes::{NothingToClassify, DEFAULT_CONTEXT_MARGIN, DEFAULT_ROUTE_BLEND};
pub use settings::{
    cores, InferenceSettings, InferenceWork, ThreadSplit, COARSE_WORK, GDAL_CACHE_BYTES,
    SHARED_CORES,
};
pub use tta::Tta;

use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{CheckpointInfo, Loaded};
use crate::data::config::{ClassInfo, GridConfig};
use crate::data::grid::{self, GridFile, GridKeys, GridSource, SceneGrid};
use crate::data::input_range::RangeSurvey;
use crate::data::normalise::Normaliser;
use crate::data::raster::{GeoRef, RasterInfo, WriteOptions};
use crate::data::validity::AlphaRule;
use crate::figures;
use crate::model::modality::input_flags;
use crate::model::{Dis2Net, Fallback, Route, RouteTable, ROUTE_NODATA};
use crate::precision::Precision;
use crate::progress::Progress;
use crate::tiling::{BandStitcher, FinishedRows, WindowLayout};
use reader::{batches, BatchReader, Input, Prepared};
use routes::{codes_present, Blend, MaskInput, PatternCounts, Routing};
use tta::TtaRun;
use writer::{Layout, StreamingTiff, Values};

/// Class value of unclassified pixels in a class map (any given input is nodata there); the
/// class map's nodata value, which `dis2 eval` leaves out of its scores.
pub const NODATA_CLASS: u8 = 255;
/// Largest side of a `--preview` image in pixels.
pub(crate) const PREVIEW_SIDE: usize = 1024;

/// Pixel type of the probability raster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbsType {
    /// round(255 x p); 0 where any given input is nodata, and an internal per-dataset mask
    /// (0 there, 255 elsewhere) that GDAL reads as the bands' validity.
    U8,
    /// p as it is; NaN (the band's nodata) where any input is nodata.
    F32,
}

/// One scene to predict: its input file per modality (by name) and its outputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SceneJob {
    pub inputs: Vec<(String, PathBuf)>,
    /// Per modality (by name), rasters marking where it is missing (`--missing-mask`): any
    /// grid, resampled onto the scene's by nearest; nonzero = missing, their nodata and
    /// outside their coverage = not missing.
    pub missing_masks: Vec<(String, PathBuf)>,
    pub out: PathBuf,
    pub probs: Option<PathBuf>,
    pub preview: Option<PathBuf>,
    /// The route map to write (`--routes`): u8 route codes of [`RouteTable`], 255 nodata.
    pub routes: Option<PathBuf>,
    /// The spread across the views of [`PredictOptions::tta`] to write (`--tta-spread`):
    /// float32, the standard deviation over the views of the probability of the class each
    /// window's mean predicts, blended like the probabilities; NaN where the class map is
    /// nodata. Needs a `tta` other than [`Tta::None`].
    pub tta_spread: Option<PathBuf>,
    /// The confidence raster to write (`--confidence`): one Float32 band, each pixel's
    /// confidence ([`CONFIDENCE_MEASURE`]), NaN (the band's nodata) where the class map is
    /// nodata.
    pub confidence: Option<PathBuf>,
}

/// What a pixel's confidence is, as the confidence raster's band description says: the largest
/// of its `K` blended class probabilities (that of the class the class map holds), between 1/K
/// and 1. The maximum rather than the margin between the two best or the normalised entropy
/// because the expected calibration error and the reliability diagram of `dis2 eval` are
/// defined on it (Guo et al., ICML 2017), so the raster reads against them directly
/// (docs/predict.md, "Confidence").
pub const CONFIDENCE_MEASURE: &str = "confidence: maximum blended class probability";

/// How to predict.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictOptions {
    /// Pixels shared by neighbouring windows; `None`: a quarter of the crop.
    pub overlap: Option<usize>,
    /// Windows per model call.
    pub batch: usize,
    /// Run the teacher with missing modalities filled when the checkpoint has no student for them.
    pub allow_fill: bool,
    pub probs_type: ProbsType,
    /// Batches prepared ahead of the model on a background thread (and blending and writing on
    /// another, behind it); 0: read, run, blend and write each batch on the calling thread, in
    /// turn (no overlap).
    pub prefetch: usize,
    /// Plain progress lines only, at most one a minute.
    pub quiet: bool,
    /// Say on stderr, per scene, that the teacher runs with filled inputs (off where the caller
    /// labels the branch itself, as `dis2 eval` does).
    pub announce_fill: bool,
    /// The grid of the outputs and how inputs on other grids are resampled onto it
    /// (`--grid-reference`, `--strict-grid`, `--resampling`; see [`crate::data::grid`]).
    pub grid: GridConfig,
    /// A raster whose grid the outputs take, in place of `grid.reference`'s (it need not be an
    /// input: `dis2 eval` passes its scene's reference file when that modality is dropped).
    pub grid_file: Option<PathBuf>,
    /// Say once on stderr what is resampled onto the grid (off where the caller said it, as
    /// `dis2 eval` does when it opens its dataset).
    pub announce_grid: bool,
    /// Classify inputs whose values lie beyond the refusal bound of the checkpoint's
    /// normalisation (another bit depth, unit or scale; see [`crate::data::input_range`]),
    /// with a warning, instead of refusing the scene (`--accept-input-range`).
    pub accept_input_range: bool,
    /// What the inputs' bands marked as alpha are: masks, or data (`--alpha-as-data`).
    pub alpha: AlphaRule,
    /// Routes per pixel (the default); `false` (`--one-route`): one branch per scene from the
    /// inputs given, nodata wherever any given input lacks data.
    pub per_pixel: bool,
    /// Context margin in pixels (`--context-margin`): a modality is available at a pixel only
    /// where it is also available at every pixel within this distance (square neighbourhood).
    pub margin: usize,
    /// Route blend in pixels (`--route-blend`): on the side of the richer of two routes at a
    /// boundary (the one whose pattern lacks fewer modalities), pixels within this Chebyshev
    /// distance of the poorer route's pixels take `w P_rich + (1 - w) P_poor`, `w` a raised
    /// cosine of the distance (0 at the boundary, 1 at this many pixels); the poorer route
    /// never reads a missing input there, the richer one never runs on the poorer side. Routes
    /// neither of which lacks a superset of the other's modalities switch hard. 0: every
    /// boundary switches hard. No effect with `per_pixel` off.
    pub route_blend: usize,
    /// Write every raster output (class map, probabilities, route map) as a Cloud-Optimized
    /// GeoTIFF, with overviews suited to its values (`--cog`; docs/predict.md, "Cloud-Optimized
    /// GeoTIFF").
    pub cog: bool,
    /// Test-time augmentation (`--tta`): the views of each window classified and averaged
    /// (mean of the probabilities) per window and route before blending; [`Tta::None`] by
    /// default. `d8` needs square windows.
    pub tta: Tta,
}

impl Default for PredictOptions {
    fn default() -> Self {
        Self {
            overlap: None,
            batch: 8,
            allow_fill: false,
            probs_type: ProbsType::F32,
            prefetch: 2,
            quiet: true,
            announce_fill: true,
            grid: GridConfig::default(),
            grid_file: None,
            announce_grid: true,
            accept_input_range: false,
            alpha: AlphaRule::Mask,
            per_pixel: true,
            margin: DEFAULT_CONTEXT_MARGIN,
            route_blend: DEFAULT_ROUTE_BLEND,
            cog: false,
            tta: Tta::None,
        }
    }
}

/// A loaded model ready to predict, with the normalisation it was trained with: prepared for
/// inference in its precision ([`Dis2Net::prepare_inference`]: BatchNorm folded, weights in the
/// computing precision, no autograd state).
pub struct Predictor {
    pub loaded: Loaded,
    pub device: Device,
}

impl Predictor {
    /// [`Self::load_in`] fp32.
    pub fn load(checkpoint: &Path, device: Device) -> Result<Self> {
        Self::load_in(checkpoint, device, Precision::Fp32)
    }

    /// Loads `checkpoint` onto `device` and prepares it to compute in `precision`.
    pub fn load_in(checkpoint: &Path, device: Device, precision: Precision) -> Result<Self> {
        let mut loaded = crate::checkpoint::load(checkpoint, device)
            .with_context(|| format!("--checkpoint {}", checkpoint.display()))?;
        loaded.net.prepare_inference(precision);
        Ok(Self { loaded, device })
    }

    /// The precision the model computes in.
    pub fn precision(&self) -> Precision {
        self.loaded.net.precision()
    }

    pub fn info(&self) -> &CheckpointInfo {
        &self.loaded.info
    }

    pub fn net(&self) -> &Dis2Net {
        &self.loaded.net
    }
}

/// What a finished scene reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub width: usize,
    pub height: usize,
    pub windows: usize,
    pub seconds: f64,
    pub valid_pixels: u64,
    /// The branch that ran ([`Route::describe`]) when one route covers every classified pixel;
    /// otherwise `routes per pixel: ` and the share of each.
    pub route: String,
    /// Pixels per route that covers any, in code order ([`RouteTable`] labels).
    pub routes: Vec<(String, u64)>,
    /// Pixels no branch classified (the class map's nodata).
    pub nodata_pixels: u64,
    /// Pixels per fallback kind of the route rule, those with pixels only, in [`Fallback`] order.
    pub fallbacks: Vec<(Fallback, u64)>,
    /// The checkpoint's route codes and labels (those of the route map and of
    /// [`ClassRows::routes`]).
    pub route_table: RouteTable,
    /// The precision the model computed in.
    pub precision: Precision,
    pub timings: Timings,
}

/// Where a scene's time went, in seconds. With background threads (`prefetch` > 0) reading and
/// blending overlap the model: `read_s` and `handoff_s` are what the model's thread waited for
/// them, `blend_s` and `write_s` the blending thread's own time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Reading, cutting and normalising windows (inline), or waiting for the reader.
    pub read_s: f64,
    /// The model: the windows to the device, the forward pass, the probabilities back.
    pub model_s: f64,
    /// Blending window probabilities into the band of rows (float32 sums).
    pub blend_s: f64,
    /// Finished rows: class map (argmax), probabilities, preview, GeoTIFF writes.
    pub write_s: f64,
    /// Waiting for the blending thread to take the next batch (it fell behind).
    pub handoff_s: f64,
}

impl Summary {
    pub fn megapixels_per_s(&self) -> f64 {
        (self.width * self.height) as f64 / 1e6 / self.seconds.max(1e-9)
    }
}

/// A band of finished rows of a scene's class map, handed to the observer of
/// [`predict_scene_with`] as they are written.
pub(crate) struct ClassRows<'a> {
    pub first_row: usize,
    pub rows: usize,
    pub width: usize,
    /// `rows x width` class ids; meaningful where `valid`.
    pub classes: &'a [u8],
    /// `rows x width`: some branch classified the pixel (elsewhere the class map holds
    /// [`NODATA_CLASS`] and the f32 probabilities NaN).
    pub valid: &'a [bool],
    /// `rows x width` route codes of [`Summary::route_table`] ([`ROUTE_NODATA`] where not
    /// `valid`).
    pub routes: &'a [u8],
    /// `rows x width` confidences ([`CONFIDENCE_MEASURE`], 0 to 1); NaN where not `valid`.
    pub confidence: &'a [f32],
}

/// Checks the inputs of a scene against the checkpoint, their bands marked as alpha taken as
/// `alpha` says; returns them in model order with their headers.
fn check_inputs(
    info: &CheckpointInfo,
    job: &SceneJob,
    alpha: AlphaRule,
) -> Result<Vec<(Input, RasterInfo)>> {
    let cfg = &info.model;
    let mut inputs: Vec<(Input, RasterInfo)> = Vec::new();
    for (name, path) in &job.inputs {
        let index = cfg.modality_index(name).map_err(|_| {
            anyhow!(
                "--{name} {}: the checkpoint has no modality {name:?}; it knows {}",
                path.display(),
                input_flags(&info.model.modalities)
            )
        })?;
        if inputs.iter().any(|(i, _)| i.index == index) {
            bail!("--{name} is given twice");
        }
        let header = RasterInfo::read_with(path, alpha).with_context(|| format!("--{name}"))?;
        let channels = cfg.modalities[index].channels as usize;
        header
            .check_bands(channels, &format!("modality {name} of the checkpoint"))
            .with_context(|| format!("--{name}"))?;
        let input = Input {
            index,
            source: GridSource::on_grid(path, alpha),
            channels,
        };
        inputs.push((input, header));
    }
    if inputs.is_empty() {
        bail!(
            "no input given; this model takes {}",
            input_flags(&info.model.modalities)
        );
    }
    inputs.sort_by_key(|(i, _)| i.index);
    Ok(inputs)
}

/// Checks the `--missing-mask` rasters of a scene: each names a modality of the checkpoint that
/// the scene gives (a mask of a modality not given would change nothing); returns them with
/// their modality index and header.
fn check_masks(
    info: &CheckpointInfo,
    job: &SceneJob,
    inputs: &[(Input, RasterInfo)],
    alpha: AlphaRule,
) -> Result<Vec<(usize, RasterInfo)>> {
    let cfg = &info.model;
    let mut masks = Vec::new();
    for (name, path) in &job.missing_masks {
        let flag = format!("--missing-mask {name}={}", path.display());
        let index = cfg.modality_index(name).map_err(|_| {
            anyhow!(
                "{flag}: the checkpoint has no modality {name:?}; it knows {}",
                input_flags(&cfg.modalities)
            )
        })?;
        if !inputs.iter().any(|(i, _)| i.index == index) {
            bail!(
                "{flag}: no --{name} input is given, so {name} is missing everywhere already; \
                 give --{name} FILE or leave the mask out"
            );
        }
        let header = RasterInfo::read_with(path, alpha).with_context(|| flag.clone())?;
        masks.push((index, header));
    }
    Ok(masks)
}

/// Places the inputs and the missing masks on the scene's grid: that of `options.grid_file`,
/// else of the `--grid-reference` modality, else of the first input in model order. Inputs on
/// other grids are resampled onto it (or refused with `--strict-grid`), masks by nearest; says
/// once what is resampled.
fn place_inputs(
    info: &CheckpointInfo,
    checked: Vec<(Input, RasterInfo)>,
    masks: Vec<(usize, RasterInfo)>,
    options: &PredictOptions,
) -> Result<(Vec<Input>, Vec<MaskInput>, SceneGrid)> {
    let names = &info.model.modalities;
    let mut files: Vec<GridFile> = checked
        .iter()
        .map(|(input, header)| GridFile {
            role: format!("--{}", names[input.index].name),
            key: names[input.index].name.clone(),
            header: header.clone(),
            categorical: false,
        })
        .collect();
    let reference = match (&options.grid_file, &options.grid.reference) {
        (Some(path), _) => match files.iter().position(|f| &f.header.path == path) {
            Some(i) => i,
            None => {
                files.push(GridFile {
                    role: "the grid reference".to_string(),
                    key: String::new(),
                    header: RasterInfo::read_with(path, options.alpha)
                        .context("the grid reference")?,
                    categorical: false,
                });
                files.len() - 1
            }
        },
        (None, Some(name)) => files.iter().position(|f| &f.key == name).ok_or_else(|| {
            anyhow!("--grid-reference {name}: no --{name} input given for this scene")
        })?,
        (None, None) => 0,
    };
    let first_mask = files.len();
    files.extend(masks.iter().map(|(index, header)| GridFile {
        role: format!("--missing-mask {}", names[*index].name),
        key: format!("missing.{}", names[*index].name),
        header: header.clone(),
        categorical: true,
    }));
    let plan = grid::plan(&files, reference, &options.grid, &GridKeys::PREDICT)?;
    if options.announce_grid {
        grid::announce(&plan.notes);
    }
    let mask_sources = plan.sources[first_mask..].to_vec();
    let masks = (masks.iter().zip(mask_sources))
        .map(|((index, _), source)| MaskInput {
            index: *index,
            source,
        })
        .collect();
    let inputs = checked
        .into_iter()
        .zip(plan.sources)
        .map(|((input, _), source)| Input { source, ..input })
        .collect();
    Ok((inputs, masks, plan.grid))
}

/// What [`predict_scene_with`] calls with each band of finished rows: on the blending thread
/// when reading and blending run in the background (`PredictOptions::prefetch` > 0), hence `Send`.
pub(crate) type RowObserver<'o> = dyn FnMut(&ClassRows) -> Result<()> + Send + 'o;

/// Where finished rows go: the class map, the probabilities, the route map, the confidence,
/// the preview; and the pixels of each pattern.
struct Sink {
    classes: usize,
    width: usize,
    class_map: StreamingTiff<u8>,
    probs: Option<ProbsOut>,
    route_map: Option<StreamingTiff<u8>>,
    /// `--tta-spread`: one float32 band, NaN at nodata.
    tta_spread: Option<StreamingTiff<f32>>,
    confidence: Option<StreamingTiff<f32>>,
    preview: Option<Preview>,
    routing: Arc<Routing>,
    patterns: PatternCounts,
    valid_pixels: u64,
}

/// Colours of the route map: the teacher green, students in distinct hues, teacher-fill codes in
/// shades of red.
fn route_colours(table: &RouteTable) -> Vec<[u8; 3]> {
    const STUDENTS: [[u8; 3]; 8] = [
        [31, 119, 180],
        [255, 127, 14],
        [148, 103, 189],
        [23, 190, 207],
        [188, 189, 34],
        [140, 86, 75],
        [227, 119, 194],
        [127, 127, 127],
    ];
    let (mut student, mut fill) = (0, 0usize);
    (0..table.len())
        .map(|code| match table.route(code as u8) {
            Some(Route::Student(_)) => {
                student += 1;
                STUDENTS[(student - 1) % STUDENTS.len()]
            }
            Some(Route::TeacherFill(_)) => {
                fill += 1;
                [214, (40 + 25 * (fill % 6)) as u8, 40]
            }
            _ => [44, 160, 44],
        })
        .collect()
}

/// The route map at `path`: one u8 band of route codes with the table's colours and labels; a
/// COG's overviews are those of categories.
fn create_route_map(
    path: &Path,
    size: (usize, usize),
    georef: Option<&GeoRef>,
    table: &RouteTable,
    cog: bool,
) -> Result<StreamingTiff<u8>> {
    let options = WriteOptions {
        nodata: Some(f64::from(ROUTE_NODATA)),
        colour_table: Some(route_colours(table)),
        band_names: vec!["route".to_string()],
    };
    let layout = Layout {
        values: Values::Categorical,
        cog,
    };
    let mut tiff = StreamingTiff::<u8>::create(path, size, 1, georef, &options, layout)?;
    tiff.set_category_names(table.labels())?;
    Ok(tiff)
}

/// A one-band float32 raster at `path` named `band_name` (the confidence, the TTA spread):
/// NaN its nodata; a COG's overviews are means.
fn create_float_band(
    path: &Path,
    size: (usize, usize),
    georef: Option<&GeoRef>,
    band_name: &str,
    cog: bool,
) -> Result<StreamingTiff<f32>> {
    let options = WriteOptions {
        nodata: Some(f64::NAN),
        band_names: vec![band_name.to_string()],
        ..Default::default()
    };
    let layout = Layout {
        values: Values::Continuous,
        cog,
    };
    StreamingTiff::<f32>::create(path, size, 1, georef, &options, layout)
}

enum ProbsOut {
    U8(StreamingTiff<u8>),
    F32(StreamingTiff<f32>),
}

impl ProbsOut {
    /// The probability raster at `path`: `names.len()` bands (one per class) of `probs_type`; a
    /// COG's overviews are means.
    fn create(
        path: &Path,
        probs_type: ProbsType,
        size: (usize, usize),
        georef: Option<&GeoRef>,
        names: Vec<String>,
        cog: bool,
    ) -> Result<Self> {
        let k = names.len();
        let layout = Layout {
            values: Values::Continuous,
            cog,
        };
        Ok(match probs_type {
            ProbsType::U8 => {
                let options = WriteOptions {
                    band_names: names,
                    ..Default::default()
                };
                Self::U8(StreamingTiff::create_masked(
                    path, size, k, georef, &options, layout,
                )?)
            }
            ProbsType::F32 => {
                let options = WriteOptions {
                    nodata: Some(f64::NAN),
                    band_names: names,
                    ..Default::default()
                };
                Self::F32(StreamingTiff::create(
                    path, size, k, georef, &options, layout,
                )?)
            }
        })
    }

    /// Writes the `k` class planes of `done`; `valid` is its validity plane.
    fn write_rows(&mut self, done: &FinishedRows, k: usize, valid: &[bool]) -> Result<()> {
        let plane = valid.len();
        let planes = (0..k).map(|c| &done.probs[c * plane..(c + 1) * plane]);
        match self {
            Self::U8(t) => {
                for (c, probs) in planes.enumerate() {
                    let v: Vec<u8> = probs
                        .iter()
                        .zip(valid)
                        .map(|(p, &ok)| {
                            if ok {
                                (p.clamp(0.0, 1.0) * 255.0).round() as u8
                            } else {
                                0
                            }
                        })
                        .collect();
                    t.write_rows(c, done.first_row, done.rows, &v)?;
                }
                t.write_mask_rows(done.first_row, done.rows, valid)?;
            }
            Self::F32(t) => {
                for (c, probs) in planes.enumerate() {
                    let v: Vec<f32> = probs
                        .iter()
                        .zip(valid)
                        .map(|(&p, &ok)| if ok { p } else { f32::NAN })
                        .collect();
                    t.write_rows(c, done.first_row, done.rows, &v)?;
                }
            }
        }
        Ok(())
    }
}

/// A nearest-neighbour, downsampled colour rendering of the class map.
struct Preview {
    path: PathBuf,
    step: usize,
    width: usize,
    height: usize,
    rgb: Vec<u8>,
    table: Vec<ClassInfo>,
}

impl Preview {
    fn new(path: &Path, width: usize, height: usize, table: Vec<ClassInfo>) -> Self {
        let step = width.max(height).div_ceil(PREVIEW_SIDE).max(1);
        let (pw, ph) = (width.div_ceil(step), height.div_ceil(step));
        Self {
            path: path.to_path_buf(),
            step,
            width: pw,
            height: ph,
            rgb: vec![0; pw * ph * 3],
            table,
        }
    }

    fn add_row(&mut self, scene_row: usize, classes: &[u8]) {
        if !scene_row.is_multiple_of(self.step) {
            return;
        }
        let y = scene_row / self.step;
        for x in 0..self.width {
            let c = classes[x * self.step];
            let colour = figures::class_colour(i64::from(c), &self.table);
            self.rgb[(y * self.width + x) * 3..][..3].copy_from_slice(&colour);
        }
    }

    /// The map with its legend (class colours and names, black as nodata).
    fn write(&self) -> Result<()> {
        let pixels: Vec<[u8; 3]> = (self.rgb.chunks_exact(3))
            .map(|p| [p[0], p[1], p[2]])
            .collect();
        figures::preview_png(&self.path, &pixels, (self.width, self.height), &self.table)
    }
}

impl Sink {
    /// Creates the outputs of `job` for a scene with `header`'s size and georeferencing (that of
    /// the scene's grid): the class map (with the checkpoint's colours), the probabilities, the
    /// route map and the preview when asked; the rasters as COGs with `options.cog`.
    fn create(
        info: &CheckpointInfo,
        job: &SceneJob,
        options: &PredictOptions,
        header: &RasterInfo,
        routing: Arc<Routing>,
    ) -> Result<Self> {
        let (width, height) = (header.width, header.height);
        let georef = GeoRef::of(header);
        let table: Vec<ClassInfo> = info.class_table();
        let k = table.len();
        if k > usize::from(NODATA_CLASS) {
            bail!("the checkpoint has {k} classes; a u8 class map holds at most 255");
        }
        let colours: Vec<[u8; 3]> = table.iter().map(|c| c.colour).collect();
        let class_map = StreamingTiff::<u8>::create(
            &job.out,
            (width, height),
            1,
            georef.as_ref(),
            &WriteOptions {
                nodata: Some(f64::from(NODATA_CLASS)),
                colour_table: Some(colours),
                band_names: vec!["class".to_string()],
            },
            Layout {
                values: Values::Categorical,
                cog: options.cog,
            },
        )?;
        let names: Vec<String> = table.iter().map(|c| c.name.clone()).collect();
        let probs = match &job.probs {
            None => None,
            Some(path) => Some(ProbsOut::create(
                path,
                options.probs_type,
                (width, height),
                georef.as_ref(),
                names,
                options.cog,
            )?),
        };
        let route_map = match &job.routes {
            None => None,
            Some(path) => Some(create_route_map(
                path,
                (width, height),
                georef.as_ref(),
                &routing.table,
                options.cog,
            )?),
        };
        let float_band = |path: &PathBuf, name: &str| {
            create_float_band(path, (width, height), georef.as_ref(), name, options.cog)
        };
        let tta_spread = (job.tta_spread.as_ref())
            .map(|path| float_band(path, "tta_spread"))
            .transpose()?;
        let confidence = (job.confidence.as_ref())
            .map(|path| float_band(path, CONFIDENCE_MEASURE))
            .transpose()?;
        let preview = job
            .preview
            .as_ref()
            .map(|p| Preview::new(p, width, height, table));
        Ok(Self {
            classes: k,
            width,
            class_map,
            probs,
            route_map,
            tta_spread,
            confidence,
            preview,
            routing,
            patterns: PatternCounts::default(),
            valid_pixels: 0,
        })
    }

    /// Writes finished rows: the class map (argmax where a branch ran, [`NODATA_CLASS`]
    /// elsewhere), the probabilities, the route map, the TTA spread, the confidence (the winning
    /// class's probability, NaN where no branch ran) and the preview; then hands them to
    /// `observe`.
    fn rows(&mut self, done: &FinishedRows, observe: &mut RowObserver) -> Result<()> {
        let (k, w, rows) = (self.classes, self.width, done.rows);
        let plane = rows * w;
        // The blended pattern plane: every window covering a pixel agrees on it (it is the
        // pixel's own), so the blend is the pattern up to rounding.
        let mut routes = Vec::with_capacity(plane);
        for &v in &done.probs[k * plane..(k + 1) * plane] {
            let pattern = v.round().clamp(0.0, 255.0) as u8;
            self.patterns.0[usize::from(pattern)] += 1;
            routes.push(self.routing.code(pattern));
        }
        let valid: Vec<bool> = routes.iter().map(|&c| c != ROUTE_NODATA).collect();
        let mut classes = vec![NODATA_CLASS; plane];
        let mut confidence = vec![f32::NAN; plane];
        for (i, class) in classes.iter_mut().enumerate() {
            if !valid[i] {
                continue;
            }
            let mut best = 0;
            for c in 1..k {
                if done.probs[c * plane + i] > done.probs[best * plane + i] {
                    best = c;
                }
            }
            *class = best as u8;
            confidence[i] = done.probs[best * plane + i];
            self.valid_pixels += 1;
        }
        self.class_map
            .write_rows(0, done.first_row, rows, &classes)?;
        if let Some(probs) = &mut self.probs {
            probs.write_rows(done, k, &valid)?;
        }
        if let Some(map) = &mut self.route_map {
            map.write_rows(0, done.first_row, rows, &routes)?;
        }
        if let Some(spread) = &mut self.tta_spread {
            let values: Vec<f32> = (done.probs[(k + 1) * plane..(k + 2) * plane].iter())
                .zip(&valid)
                .map(|(&v, &ok)| if ok { v } else { f32::NAN })
                .collect();
            spread.write_rows(0, done.first_row, rows, &values)?;
        }
        if let Some(tiff) = &mut self.confidence {
            tiff.write_rows(0, done.first_row, rows, &confidence)?;
        }
        if let Some(preview) = &mut self.preview {
            for r in 0..rows {
                preview.add_row(done.first_row + r, &classes[r * w..(r + 1) * w]);
            }
        }
        observe(&ClassRows {
            first_row: done.first_row,
            rows,
            width: w,
            classes: &classes,
            valid: &valid,
            routes: &routes,
            confidence: &confidence,
        })
    }

    /// Closes the GeoTIFFs, writes the preview, then renames the GeoTIFFs into place: a scene
    /// whose probabilities or preview cannot be written (a full disk) leaves no class map either.
    fn finish(self) -> Result<()> {
        let mut closed = vec![self.class_map.close()?];
        match self.probs {
            Some(ProbsOut::U8(t)) => closed.push(t.close()?),
            Some(ProbsOut::F32(t)) => closed.push(t.close()?),
            None => {}
        }
        if let Some(t) = self.route_map {
            closed.push(t.close()?);
        }
        if let Some(t) = self.tta_spread {
            closed.push(t.close()?);
        }
        if let Some(t) = self.confidence {
            closed.push(t.close()?);
        }
        if let Some(p) = &self.preview {
            p.write()?;
        }
        closed.into_iter().try_for_each(writer::Closed::commit)
    }
}

/// A scene checked and laid out: its inputs in model order, the grid they are read on (its
/// header: size and georeferencing), the branch and the windows, and the survey of the inputs
/// against the normalisation that the reader fills.
struct ScenePlan {
    inputs: Vec<Input>,
    masks: Vec<MaskInput>,
    norm: Normaliser,
    header: RasterInfo,
    /// The scene's one branch (`--one-route`); `None` with routes per pixel.
    route: Option<Route>,
    routing: Arc<Routing>,
    layout: WindowLayout,
    survey: Arc<Mutex<RangeSurvey>>,
    /// The views each window is classified in, and whether their spread is written.
    tta: TtaRun,
}

impl ScenePlan {
    /// Checks the scene's inputs and masks against the checkpoint, places them on the scene's
    /// grid, sets up the routes (per pixel, or the branch for the modalities given:
    /// [`Route::choose`]) and lays the windows out.
    fn new(info: &CheckpointInfo, job: &SceneJob, options: &PredictOptions) -> Result<Self> {
        let cfg = &info.model;
        let checked = check_inputs(info, job, options.alpha)?;
        let masks = check_masks(info, job, &checked, options.alpha)?;
        let norm = info.normaliser()?;
        let (inputs, masks, scene_grid) = place_inputs(info, checked, masks, options)?;
        let header = scene_grid.info;
        let mut given = vec![false; cfg.modalities.len()];
        for i in &inputs {
            given[i.index] = true;
        }
        let (route, routing) = match options.per_pixel {
            true => {
                let routing = Routing::per_pixel(
                    cfg,
                    &given,
                    options.allow_fill,
                    options.margin,
                    options.route_blend,
                )?;
                (None, routing)
            }
            false => {
                let route = Route::choose(cfg, &given, options.allow_fill)?;
                let routing = Routing::one_route(cfg, &given, &route)?;
                (Some(route), routing)
            }
        };
        if options.batch == 0 {
            bail!("--batch must be at least 1");
        }
        let crop = (cfg.crop[0] as usize, cfg.crop[1] as usize);
        let tta = TtaRun::new(options.tta, crop, job.tta_spread.as_deref())?;
        let overlap = options.overlap.unwrap_or(crop.0.min(crop.1) / 4);
        let layout = WindowLayout::new((header.height, header.width), crop, overlap)
            .map_err(|e| anyhow!("--overlap {overlap}: {e}"))?;
        let surveyed: Vec<(usize, String, PathBuf)> = (inputs.iter())
            .map(|i| {
                (
                    i.index,
                    cfg.modalities[i.index].name.clone(),
                    i.source.path.clone(),
                )
            })
            .collect();
        let survey = RangeSurvey::new(&norm, &surveyed, options.accept_input_range);
        Ok(Self {
            inputs,
            masks,
            norm,
            header,
            route,
            routing: Arc::new(routing),
            layout,
            survey: Arc::new(Mutex::new(survey)),
            tta,
        })
    }
}

/// Progress over a scene's `windows`, named by `label` (the output path).
fn window_progress(windows: usize, label: &str, quiet: bool) -> Progress {
    let progress = Progress::new(windows as u64, 0, quiet)
        .with_style(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} windows ETA {eta}",
            None,
        )
        .with_first_line_after_interval();
    progress.set_prefix(label);
    progress
}

/// Counts `n` more windows done; without a bar, says so when a line is due.
fn windows_done(progress: &mut Progress, label: &str, n: usize) {
    progress.inc(n as u64);
    if progress.line_due() && progress.position() < progress.total() {
        let line = format!(
            "{label}: {}/{} windows [{} s]",
            progress.position(),
            progress.total(),
            progress.elapsed_s()
        );
        progress.log(&line);
    }
}

/// The batch's inputs on the device: one `[B, C, H, W]` tensor per model modality, `None`
/// where not given.
fn batch_tensors(predictor: &Predictor, inputs: &[Input], batch: &Prepared) -> Vec<Option<Tensor>> {
    let cfg = &predictor.info().model;
    let (b, h, w) = (batch.windows.len(), cfg.crop[0], cfg.crop[1]);
    let mut tensors: Vec<Option<Tensor>> = (0..cfg.modalities.len()).map(|_| None).collect();
    for (input, data) in inputs.iter().zip(&batch.inputs) {
        let t = Tensor::from_slice(data)
            .view([b as i64, input.channels as i64, h, w])
            .to_device(predictor.device);
        tensors[input.index] = Some(t);
    }
    tensors
}

/// `route`'s probabilities for the windows of `tensors`, averaged over `tta`'s views:
/// `B x C x H x W` values, row-major, `C` = [`TtaRun::channels`] (the `K` probabilities, then
/// the spread when asked for).
fn route_probs(
    predictor: &Predictor,
    route: &Route,
    tensors: &[Option<Tensor>],
    k: usize,
    tta: TtaRun,
) -> Result<Vec<f32>> {
    let Some(size) = tensors.iter().flatten().next().map(Tensor::size) else {
        bail!("a batch without inputs");
    };
    let probs = tch::no_grad(|| {
        tta.probs(tensors, |refs| {
            predictor.net().forward_route(route, refs, false)
        })
    })?;
    let probs: Vec<f32> = Vec::<f32>::try_from(
        probs
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
            .view([-1]),
    )?;
    let (b, plane) = (size[0] as usize, (size[2] * size[3]) as usize);
    if probs.len() != b * tta.channels(k) * plane {
        bail!(
            "the model returned {} values for {b} windows of {k} classes",
            probs.len()
        );
    }
    Ok(probs)
}

/// The batch's probabilities composed per pixel from the routes its pixels take (`codes`) and
/// mix in (`blends`): each route runs once, on the windows that hold one of its pixels or mix it
/// in, and each pixel takes its route's probabilities, or `w P_own + (1 - w) P_poorer` near a
/// boundary (0 where no route runs). `B x C x H x W` values, `C` = [`TtaRun::channels`]: the
/// spread, when asked for, is composed with the same shares.
fn composed_probs(
    predictor: &Predictor,
    table: &RouteTable,
    tensors: &[Option<Tensor>],
    batch: &Prepared,
    routes: &[u8],
    (k, tta): (usize, TtaRun),
) -> Result<Vec<f32>> {
    let plane = batch.codes.first().map_or(0, Vec::len);
    let c = tta.channels(k);
    let mut out = vec![0.0f32; batch.windows.len() * c * plane];
    for &code in routes {
        let route = table
            .route(code)
            .ok_or_else(|| anyhow!("route code {code} is not in the checkpoint's table"))?;
        let needed: Vec<usize> = (0..batch.windows.len())
            .filter(|&i| {
                batch.codes[i].contains(&code)
                    || (batch.blends[i].as_ref()).is_some_and(|b| b.partners.contains(&code))
            })
            .collect();
        let index = Tensor::from_slice(&needed.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let sub: Vec<Option<Tensor>> = (tensors.iter())
            .map(|t| {
                t.as_ref()
                    .map(|t| t.index_select(0, &index.to_device(t.device())))
            })
            .collect();
        let probs = route_probs(predictor, route, &sub, k, tta)?;
        for (j, &i) in needed.iter().enumerate() {
            let (src, dst) = (&probs[j * c * plane..], &mut out[i * c * plane..]);
            add_route_share(src, dst, code, &batch.codes[i], batch.blends[i].as_ref(), c);
        }
    }
    Ok(out)
}

/// Adds route `code`'s probabilities of one window (`src`, `k x H x W`) to `dst` with each
/// pixel's share of it: 1 where the pixel takes it alone, `w` where it is the pixel's own route
/// mixed with a poorer one, `1 - w` where it is the poorer route mixed in, else 0 (untouched).
fn add_route_share(
    src: &[f32],
    dst: &mut [f32],
    code: u8,
    codes: &[u8],
    blend: Option<&Blend>,
    k: usize,
) {
    let plane = codes.len();
    for p in 0..plane {
        let share = match blend {
            None => f32::from(u8::from(codes[p] == code)),
            Some(b) if b.partners[p] == ROUTE_NODATA => f32::from(u8::from(codes[p] == code)),
            Some(b) if codes[p] == code => b.weights[p],
            Some(b) if b.partners[p] == code => 1.0 - b.weights[p],
            Some(_) => 0.0,
        };
        if share == 1.0 {
            for c in 0..k {
                dst[c * plane + p] = src[c * plane + p];
            }
        } else if share > 0.0 {
            for c in 0..k {
                dst[c * plane + p] += share * src[c * plane + p];
            }
        }
    }
}

/// Blending and writing: the stitcher, the outputs and the observer of finished rows, with the
/// time each took.
struct BlendStage<'a, 'o> {
    stitcher: BandStitcher,
    sink: &'a mut Sink,
    observe: &'a mut RowObserver<'o>,
    timings: Timings,
}

impl BlendStage<'_, '_> {
    /// Adds a batch's window probabilities (`probs`, `K` classes each, then the TTA spread when
    /// the sink writes it) and patterns to the stitcher and writes (and hands to the observer)
    /// the rows that became final. The stitcher's channels: `K` probabilities, the pattern,
    /// the spread.
    fn add(&mut self, batch: &Prepared, probs: &[f32]) -> Result<()> {
        let k = self.sink.classes;
        let c = k + usize::from(self.sink.tta_spread.is_some());
        for (i, (window, patterns)) in batch.windows.iter().zip(&batch.patterns).enumerate() {
            let started = Instant::now();
            let plane = patterns.len();
            let window_probs = &probs[i * c * plane..(i + 1) * c * plane];
            let mut values = Vec::with_capacity((c + 1) * plane);
            values.extend_from_slice(&window_probs[..k * plane]);
            values.extend(patterns.iter().map(|&p| f32::from(p)));
            values.extend_from_slice(&window_probs[k * plane..]);
            let done = self.stitcher.add(*window, &values)?;
            self.timings.blend_s += started.elapsed().as_secs_f64();
            if let Some(done) = done {
                let started = Instant::now();
                self.sink.rows(&done, self.observe)?;
                self.timings.write_s += started.elapsed().as_secs_f64();
            }
        }
        Ok(())
    }
}

/// The blend stage in turn with the model (inline), or on a scoped background thread fed
/// through a bounded queue of batches.
enum Blender<'scope, 'a, 'o> {
    Inline(Box<BlendStage<'a, 'o>>),
    Background {
        queue: SyncSender<(Prepared, Vec<f32>)>,
        handle: ScopedJoinHandle<'scope, Result<BlendStage<'a, 'o>>>,
    },
}

impl<'scope, 'a: 'scope, 'o: 'scope> Blender<'scope, 'a, 'o> {
    fn new<'env>(
        stage: BlendStage<'a, 'o>,
        background: bool,
        scope: &'scope Scope<'scope, 'env>,
    ) -> Self {
        if !background {
            return Blender::Inline(Box::new(stage));
        }
        let (queue, batches) = sync_channel::<(Prepared, Vec<f32>)>(2);
        let handle = scope.spawn(move || {
            let mut stage = stage;
            for (batch, probs) in batches {
                stage.add(&batch, &probs)?;
            }
            Ok(stage)
        });
        Blender::Background { queue, handle }
    }

    /// Blends a batch, or hands it over; returns the seconds spent waiting for the hand-over.
    fn add(&mut self, batch: Prepared, probs: Vec<f32>) -> Result<f64> {
        match self {
            Blender::Inline(stage) => stage.add(&batch, &probs).map(|()| 0.0),
            Blender::Background { queue, .. } => {
                let started = Instant::now();
                // A closed queue: the thread stopped on an error, which `finish` returns.
                queue
                    .send((batch, probs))
                    .map_err(|_| anyhow!("the blending thread stopped"))?;
                Ok(started.elapsed().as_secs_f64())
            }
        }
    }

    /// The stage once every batch is blended and written (the background thread's error, if any).
    fn finish(self) -> Result<BlendStage<'a, 'o>> {
        match self {
            Blender::Inline(stage) => Ok(*stage),
            Blender::Background { queue, handle } => {
                drop(queue);
                handle
                    .join()
                    .map_err(|_| anyhow!("the blending thread panicked"))?
            }
        }
    }
}

/// The probabilities of a batch: one route for every window when its pixels take one (the
/// whole batch in one forward), else composed per pixel ([`composed_probs`]); a batch whose
/// windows hold no pixel any branch classifies does not run the model (so an all-nodata scene
/// never reaches it). Each route's probabilities are averaged over `tta`'s views first.
fn batch_probs(
    predictor: &Predictor,
    table: &RouteTable,
    inputs: &[Input],
    batch: &Prepared,
    (k, tta): (usize, TtaRun),
) -> Result<Vec<f32>> {
    let routes = codes_present(&batch.codes, &batch.blends);
    let plane = batch.codes.first().map_or(0, Vec::len);
    match routes.as_slice() {
        [] => Ok(vec![0.0; batch.windows.len() * tta.channels(k) * plane]),
        [code] => {
            let route = table
                .route(*code)
                .ok_or_else(|| anyhow!("route code {code} is not in the checkpoint's table"))?;
            route_probs(
                predictor,
                route,
                &batch_tensors(predictor, inputs, batch),
                k,
                tta,
            )
        }
        _ => {
            let tensors = batch_tensors(predictor, inputs, batch);
            composed_probs(predictor, table, &tensors, batch, &routes, (k, tta))
        }
    }
}

/// Runs the plan's branch over every window, blends the windows and writes the finished rows
/// into `sink`, handing them to `observe`; with `options.prefetch` > 0 reading runs ahead of the
/// model and blending, writing and `observe` behind it, on two background threads. Returns where
/// the time went.
fn run_windows(
    predictor: &Predictor,
    plan: ScenePlan,
    sink: &mut Sink,
    options: &PredictOptions,
    label: &str,
    observe: &mut RowObserver,
) -> Result<Timings> {
    let (k, tta) = (sink.classes, plan.tta);
    let stage = BlendStage {
        stitcher: BandStitcher::new(plan.layout.clone(), tta.channels(k) + 1),
        sink,
        observe,
        timings: Timings::default(),
    };
    let mut progress = window_progress(plan.layout.len(), label, options.quiet);
    let inputs = Arc::new(plan.inputs);
    let routing = plan.routing.clone();
    let reader = BatchReader::open(
        inputs.clone(),
        plan.masks,
        plan.routing,
        Arc::new(plan.norm),
        plan.layout,
        options.batch,
        plan.survey,
    )?;
    let (mut batches, reading) = batches(reader, options.prefetch);
    std::thread::scope(|scope| {
        let mut blender = Blender::new(stage, options.prefetch > 0, scope);
        let mut timings = Timings::default();
        let result = (|| -> Result<()> {
            for batch in batches.by_ref() {
                let started = Instant::now();
                let batch = batch?;
                let read = Instant::now();
                let probs = batch_probs(predictor, &routing.table, &inputs, &batch, (k, tta))?;
                timings.read_s += (read - started).as_secs_f64();
                timings.model_s += read.elapsed().as_secs_f64();
                let n = batch.windows.len();
                timings.handoff_s += blender.add(batch, probs)?;
                windows_done(&mut progress, label, n);
            }
            Ok(())
        })();
        // Ends the reading thread whether or not the loop finished (a closed queue stops it).
        drop(batches);
        if let Some(handle) = reading {
            handle
                .join()
                .map_err(|_| anyhow!("the reading thread panicked"))?;
        }
        let stage = blender.finish();
        progress.finish_and_clear();
        // The blending thread's own error explains a failed hand-over.
        let stage = stage?;
        result?;
        timings.blend_s = stage.timings.blend_s;
        timings.write_s = stage.timings.write_s;
        Ok(timings)
    })
}

/// Predicts one scene and writes its outputs. Nothing is left at the output paths on error.
///
/// # Errors
/// Inputs or `--missing-mask`s that do not fit the checkpoint or each other (each named by its
/// flag; a mask of a modality not given), modalities given whose missing set no student serves
/// (not even a superset's) unless `options.allow_fill`, an `--overlap` over half the crop,
/// unreadable or unwritable files, a scene where no pixel can be classified (naming the given
/// input without any data, found from the inputs' masks; the model does not run on it; with
/// `per_pixel` off, every pixel nodata in some input), and inputs whose values lie beyond the refusal
/// bound of the checkpoint's normalisation unless `options.accept_input_range` (inputs merely
/// unlike the training data get a warning on stderr; see [`crate::data::input_range`]).
pub fn predict_scene(
    predictor: &Predictor,
    job: &SceneJob,
    options: &PredictOptions,
) -> Result<Summary> {
    predict_scene_with(predictor, job, options, &mut |_| Ok(()))
}

/// [`predict_scene`], handing every band of finished rows (class ids, validity and route
/// codes, as written) to `observe`: `dis2 eval` scores them without reading the class map back.
pub(crate) fn predict_scene_with(
    predictor: &Predictor,
    job: &SceneJob,
    options: &PredictOptions,
    observe: &mut RowObserver,
) -> Result<Summary> {
    let started = Instant::now();
    let info = predictor.info();
    let plan = ScenePlan::new(info, job, options)?;
    let routing = plan.routing.clone();
    let mut sink = Sink::create(info, job, options, &plan.header, routing.clone())?;
    let label = job.out.display().to_string();
    if let Some(route @ Route::TeacherFill(_)) = &plan.route {
        if options.announce_fill {
            eprintln!("{label}: {}", route.describe(&info.model));
        }
    }
    let (width, height, windows) = (plan.header.width, plan.header.height, plan.layout.len());
    let one_route = plan.route.as_ref().map(|r| r.describe(&info.model));
    let given: Vec<(usize, PathBuf)> = (plan.inputs.iter())
        .map(|i| (i.index, i.source.path.clone()))
        .collect();
    let survey = plan.survey.clone();
    let timings = run_windows(predictor, plan, &mut sink, options, &label, observe)?;
    for warning in survey.lock().unwrap_or_else(|e| e.into_inner()).warnings() {
        eprintln!("warning: {warning}");
    }
    let patterns = sink.patterns.clone();
    if sink.valid_pixels == 0 {
        patterns.nothing_classified(&routing, &info.model, &given, options.allow_fill)?;
    }
    if routing.per_pixel && options.announce_fill {
        for note in patterns.notes(&routing, &info.model) {
            eprintln!("note: {label}: {note}");
        }
    }
    let valid_pixels = sink.valid_pixels;
    sink.finish()?;
    let (route, routes, nodata_pixels) =
        route_shares(&patterns, &routing, &info.model, one_route, valid_pixels);
    Ok(Summary {
        width,
        height,
        windows,
        seconds: started.elapsed().as_secs_f64(),
        valid_pixels,
        route,
        routes,
        nodata_pixels,
        fallbacks: patterns.per_fallback(&routing),
        route_table: routing.table.clone(),
        precision: predictor.precision(),
        timings,
    })
}

/// The summary's routes: the branch as [`Summary::route`] says it (`one_route`'s text, the one
/// route that classified every pixel, or each route's share of the `valid_pixels`), the pixels
/// per route in code order, and the nodata pixels.
fn route_shares(
    patterns: &PatternCounts,
    routing: &Routing,
    cfg: &crate::model::config::ModelConfig,
    one_route: Option<String>,
    valid_pixels: u64,
) -> (String, Vec<(String, u64)>, u64) {
    let per_code = patterns.per_code(routing);
    let codes: Vec<u8> = (0..routing.table.len() as u8)
        .filter(|&c| per_code[usize::from(c)] > 0)
        .collect();
    let routes: Vec<(String, u64)> = (codes.iter())
        .map(|&c| (routing.table.label(c).to_string(), per_code[usize::from(c)]))
        .collect();
    let route = match (one_route, codes.as_slice()) {
        (Some(text), _) => text,
        (None, [code]) => {
            (routing.table.route(*code)).map_or_else(String::new, |r| r.describe(cfg))
        }
        (None, _) => {
            let total = valid_pixels.max(1) as f64;
            let shares: Vec<String> = (routes.iter())
                .map(|(l, n)| format!("{l} {:.1} %", 100.0 * *n as f64 / total))
                .collect();
            format!("routes per pixel: {}", shares.join(", "))
        }
    };
    (route, routes, per_code[usize::from(ROUTE_NODATA)])
}
