//! `dis2 eval`: a checkpoint over the whole scenes of a split, by sliding window (the same
//! blended windows as `dis2 predict`), scored from one confusion matrix.
//!
//! With `--drop`, the branch is the student trained for exactly that missing set when the
//! checkpoint has one; otherwise the teacher with the dropped modalities filled with the
//! training mean, labelled `teacher-fill` in every output.
//!
//! Beside the scores, the calibration of the prediction's confidence (the maximum blended class
//! probability, [`crate::predict::CONFIDENCE_MEASURE`]) over the scored pixels: the expected
//! calibration error in `metrics.json` and the table, and the reliability diagram
//! ([`RELIABILITY_PNG`]).
//!
//! Options: `--erode R` scores with the ISPRS eroded-boundary labels (a disk of radius R around
//! every class boundary left out), `--overlays N` draws image | reference | prediction | errors
//! for N scenes of different places ([`overlay_scenes`]), and `--attention-maps DIR` draws the CFLM class-wise attention of the
//! teacher and of the evaluated branch for a few windows (the paper's qualitative figure).

mod groups;

use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};

use crate::checkpoint::network_differences;
use crate::config::Experiment;
use crate::data::config::ClassInfo;
use crate::data::dataset::{Scene, SceneDataset};
use crate::data::layouts::Split;
use crate::data::loader::load_sample;
use crate::data::raster::{Pixels, Window};
use crate::data::sampling::SlidingWindowSampler;
use crate::data::validity::AlphaRule;
use crate::figures::{self, AttentionData, OverlayData};
use crate::metrics::{erode_band, erosion_context, Calibration, ConfusionMatrix, Scores};
use crate::model::config::ModelConfig;
use crate::model::{Route, RouteTable, Scenario, ROUTE_NODATA};
use crate::precision::Precision;
use crate::predict::{
    predict_scene_with, ClassRows, InferenceSettings, InferenceWork, NothingToClassify,
    PredictOptions, Predictor, SceneJob, Tta, CONFIDENCE_MEASURE, DEFAULT_CONTEXT_MARGIN,
    DEFAULT_ROUTE_BLEND,
};
pub use groups::Group;
use groups::{data_pattern, pattern_label, Groups};

/// The reliability diagram in the eval folder ([`crate::report::reliability_png`]).
pub const RELIABILITY_PNG: &str = "reliability.png";

/// One evaluation: the library form of `dis2 eval`, also run by `dis2 sweep`.
#[derive(Debug)]
pub struct EvalRequest {
    /// The checkpoint (path without extension, or its directory).
    pub checkpoint: PathBuf,
    /// The experiment file `exp` was read from (for messages).
    pub config: PathBuf,
    pub exp: Experiment,
    /// Names of the modalities left out.
    pub drop: Vec<String>,
    pub split: Split,
    pub overlap: Option<usize>,
    /// Class names reported but left out of the means.
    pub exclude: Vec<String>,
    /// Folder for metrics.json, metrics.csv, confusion.png and reliability.png.
    pub out: PathBuf,
    pub device: tch::Device,
    /// The precision the model computes in (the checkpoint stays float32).
    pub precision: Precision,
    pub quiet: bool,
    /// Erosion and figures; `EvalOptions::default()` is all off.
    pub options: EvalOptions,
}

/// The optional parts of an evaluation. The default is all off: every labelled pixel some branch
/// reaches scored with predict's routes per pixel, no figures besides the confusion matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalOptions {
    /// Radius in pixels of the ISPRS eroded boundaries (disk); 0: off.
    pub erode: usize,
    /// Overlay figures of N scenes ([`overlay_scenes`]) in `out/overlays/`; 0: none.
    pub overlays: usize,
    /// Folder for the CFLM attention figures; `None`: none.
    pub attention_maps: Option<PathBuf>,
    /// Windows drawn into `attention_maps` (the CLI's default is 4).
    pub attention_windows: usize,
    /// Score scenes whose inputs lie beyond the refusal bound of the checkpoint's
    /// normalisation, with a warning, instead of refusing them (see
    /// [`PredictOptions::accept_input_range`]).
    pub accept_input_range: bool,
    /// Routes per pixel (`false`, `--one-route`: one branch per scene from the modalities
    /// given, scoring only the pixels where every given input has data, as before routes per
    /// pixel), and their context margin and blend in pixels (see [`PredictOptions`]).
    pub per_pixel: bool,
    pub margin: usize,
    pub route_blend: usize,
    /// Test-time augmentation of the class maps scored (`--tta`, see [`PredictOptions::tta`]).
    pub tta: Tta,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            erode: 0,
            overlays: 0,
            attention_maps: None,
            attention_windows: 0,
            accept_input_range: false,
            per_pixel: true,
            margin: DEFAULT_CONTEXT_MARGIN,
            route_blend: DEFAULT_ROUTE_BLEND,
            tta: Tta::None,
        }
    }
}

/// What an evaluation found.
#[derive(Debug)]
pub struct EvalReport {
    /// `teacher`, `student[dsm]` or `teacher-fill[dsm]`.
    pub branch: String,
    pub class_names: Vec<String>,
    /// Indices of the classes left out of the means.
    pub excluded: Vec<usize>,
    pub confusion: ConfusionMatrix,
    pub scores: Scores,
    /// The confidence (maximum blended class probability) of the scored pixels against their
    /// accuracy: the reliability bins and the expected calibration error.
    pub calibration: Calibration,
    /// Radius of the eroded boundaries the scores were computed with (0: none).
    pub erode: usize,
    /// Overlay figures written (of the `--overlays` scenes [`overlay_scenes`] picks).
    pub overlays: Vec<PathBuf>,
    /// Scenes scored.
    pub scenes: usize,
    /// Attention figures written.
    pub attention_maps: Vec<PathBuf>,
    /// The split's labelled pixels grouped by the modalities without data there (whatever the
    /// run was given, so a run with `--drop sar` reports the pixels that lack SAR in the data):
    /// `complete`, `missing sar`, ..., `no input`.
    pub by_data: Vec<Group>,
    /// The split's labelled pixels grouped by the branch that classified them (its route label:
    /// `teacher`, `student[sar]`, `teacher-fill[dsm]`); pixels no branch classified are left
    /// out (they are in [`Self::by_data`]'s unscored counts).
    pub by_route: Vec<Group>,
    /// Scenes no branch could classify a pixel of (every input empty there, or no route for
    /// what they have), skipped with a line on stderr; their labelled pixels count as unscored.
    pub skipped: Vec<String>,
}

/// Scores `req.checkpoint` on every scene of the split and writes the reports into `req.out`.
///
/// # Errors
/// A checkpoint made for another model than `req.exp`, an unknown `--drop` modality or
/// `--exclude` class, a split without scenes or labels, unreadable inputs, unwritable outputs.
pub fn evaluate(req: &EvalRequest) -> Result<EvalReport> {
    let predictor = load_for(req)?;
    let work = InferenceWork::of(&predictor.info().model, PredictOptions::default().batch);
    let _settings = InferenceSettings::enter(req.device, &work);
    let info = predictor.info();
    let (given, route) = branch(&info.model, &req.drop)?;
    let label = route.label(&info.model);
    let table = info.class_table();
    let exclude = excluded_classes(&table, &req.exclude)?;
    let dataset = SceneDataset::open(&req.exp.data, &req.exp.model, req.split)?;
    if dataset.is_empty() {
        bail!(
            "split {} of {} has no scenes",
            req.split.as_str(),
            req.config.display()
        );
    }
    let out = &req.out;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    if !req.quiet {
        eprintln!(
            "evaluating {} on {} scenes of the {} split: {}",
            req.checkpoint.display(),
            dataset.len(),
            req.split.as_str(),
            route.describe(&info.model)
        );
    }
    let scored = score_scenes(req, &predictor, &dataset, &given)?;
    let by_data = scored
        .by_data
        .report(&exclude, |bits| pattern_label(bits, &info.model.modalities));
    let routes = RouteTable::of(&info.model)?;
    let by_route = scored
        .by_route
        .report(&exclude, |code| routes.label(code).to_string());
    let (confusion, labelled, overlays) = (scored.confusion, scored.labelled, scored.overlays);
    let calibration = scored.calibration;
    let attention_maps = match &req.options.attention_maps {
        Some(dir) => write_attention_maps(
            &predictor,
            &dataset,
            &route,
            dir,
            req.options.attention_windows,
        )?,
        None => Vec::new(),
    };
    let class_names: Vec<String> = table.iter().map(|c| c.name.clone()).collect();
    // The class set comes from every labelled pixel, so a branch that lacks an input somewhere
    // averages the same classes as the full model.
    let scores = confusion.scores_over(&labelled, &exclude);
    // Named by the experiment, not the file: a sweep scores one split from many run folders.
    let context = format!(
        "the {} split of experiment {}",
        req.split.as_str(),
        req.exp.name
    );
    crate::metrics::warn_absent_classes(&context, &class_names, &scores);
    let report = EvalReport {
        branch: label,
        class_names,
        scores,
        excluded: exclude,
        confusion,
        calibration,
        erode: req.options.erode,
        overlays,
        scenes: dataset.len(),
        attention_maps,
        by_data,
        by_route,
        skipped: scored.skipped,
    };
    write_reports(req, &report)?;
    Ok(report)
}

/// Loads `req.checkpoint` and checks that it was made for the model of `req.exp`.
fn load_for(req: &EvalRequest) -> Result<Predictor> {
    let predictor = Predictor::load_in(&req.checkpoint, req.device, req.precision)?;
    let diffs = network_differences(&predictor.info().model, &req.exp.model);
    if !diffs.is_empty() {
        bail!(
            "--checkpoint {} was made for another model than {}:\n  {}",
            req.checkpoint.display(),
            req.config.display(),
            diffs.join("\n  ")
        );
    }
    Ok(predictor)
}

/// The modalities given (all but `drop`, by model index) and the branch that runs for them:
/// the student of that missing set, or the teacher with them filled.
fn branch(cfg: &ModelConfig, drop: &[String]) -> Result<(Vec<bool>, Route)> {
    let mut given = vec![true; cfg.modalities.len()];
    for name in drop {
        given[cfg.modality_index(name).context("--drop")?] = false;
    }
    let route = Route::choose(cfg, &given, true)?;
    Ok((given, route))
}

/// The indices of the `--exclude` classes in `table`.
fn excluded_classes(table: &[ClassInfo], names: &[String]) -> Result<Vec<usize>> {
    names
        .iter()
        .map(|name| {
            table.iter().position(|c| &c.name == name).with_context(|| {
                let names: Vec<&str> = table.iter().map(|c| c.name.as_str()).collect();
                format!(
                    "--exclude {name:?}: not a class; the classes are {}",
                    names.join(", ")
                )
            })
        })
        .collect()
}

/// What [`score_scenes`] found: the confusion matrix, the split's reference pixels of each
/// class (labels as scored, also where an input has no data), the groups by what the data
/// lacks, and the overlay files.
struct Scored {
    confusion: ConfusionMatrix,
    calibration: Calibration,
    labelled: Vec<u64>,
    by_data: Groups,
    by_route: Groups,
    overlays: Vec<PathBuf>,
    /// Scenes where no branch could classify a pixel.
    skipped: Vec<String>,
}

/// Predicts every scene of `dataset` with the `given` modalities (blended windows, as
/// `dis2 predict`, into a scratch folder of `req.out`) and scores the class map's rows as
/// prediction writes them: a pixel counts where its label is a class and the prediction
/// classified it (the validity prediction used, never decoded from the class map's nodata
/// value). Draws the overlays of the `req.options.overlays` scenes [`overlay_scenes`] picks.
fn score_scenes(
    req: &EvalRequest,
    predictor: &Predictor,
    dataset: &SceneDataset,
    given: &[bool],
) -> Result<Scored> {
    let mut options = PredictOptions {
        overlap: req.overlap,
        allow_fill: true,
        // The branch is named once by `evaluate` and in every output.
        announce_fill: false,
        quiet: req.quiet,
        grid: req.exp.data.grid.clone(),
        // Said when the dataset was opened, in the configuration's terms.
        announce_grid: false,
        accept_input_range: req.options.accept_input_range,
        alpha: AlphaRule::data_if(req.exp.data.alpha_as_data),
        per_pixel: req.options.per_pixel,
        margin: req.options.margin,
        route_blend: req.options.route_blend,
        tta: req.options.tta,
        ..PredictOptions::default()
    };
    let table = predictor.info().class_table();
    let scratch = tempfile_dir(&req.out)?;
    let mut overlays = Vec::new();
    let mut cm = ConfusionMatrix::new(table.len());
    let mut calibration = Calibration::default();
    let mut labelled = ConfusionMatrix::new(table.len());
    let mut by_data = Groups::new(table.len());
    let mut by_route = Groups::new(table.len());
    let mut skipped = Vec::new();
    let places: Vec<String> = dataset.scenes.iter().map(place).collect();
    let drawn = overlay_scenes(&places, req.options.overlays);
    for (index, scene) in dataset.scenes.iter().enumerate() {
        if scene.label.is_none() {
            bail!("scene {}: no labels to score against", scene.id);
        }
        // The class map on the scene's grid, also when its reference modality is dropped.
        options.grid_file = Some(scene.grid.info.path.clone());
        let job = class_map_job(&predictor.info().model, scene, given, &scratch, index);
        let mut scorer = SceneScorer {
            dataset,
            index,
            erode: req.options.erode,
            cm: &mut cm,
            calibration: &mut calibration,
            labelled: &mut labelled,
            by_data: &mut by_data,
            by_route: &mut by_route,
            overlay: drawn
                .contains(&index)
                .then(|| OverlaySampler::new(scene.width(), scene.height())),
        };
        let predicted =
            predict_scene_with(predictor, &job, &options, &mut |rows| scorer.rows(rows));
        match predicted {
            Err(e) if e.downcast_ref::<NothingToClassify>().is_some() => {
                // Its labelled pixels stay counted, as unscored, in the groups by data.
                eprintln!("skipped scene {}: {e}", scene.id);
                skipped.push(scene.id.clone());
            }
            other => {
                other.with_context(|| format!("scene {}", scene.id))?;
            }
        }
        let _ = std::fs::remove_file(&job.out);
        if let Some(o) = scorer.overlay {
            let path = req
                .out
                .join("overlays")
                .join(format!("{}.png", file_stem(&scene.id)));
            o.write(&path, &table)
                .with_context(|| format!("overlay of scene {}", scene.id))?;
            overlays.push(path);
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(Scored {
        confusion: cm,
        calibration,
        labelled: labelled.support(),
        by_data,
        by_route,
        overlays,
        skipped,
    })
}

/// Scores one scene's class map, band of rows by band of rows as prediction finishes them.
struct SceneScorer<'a> {
    dataset: &'a SceneDataset,
    index: usize,
    /// Radius of the eroded boundaries (0: none).
    erode: usize,
    cm: &'a mut ConfusionMatrix,
    /// The scored pixels' confidence against their accuracy.
    calibration: &'a mut Calibration,
    /// Every labelled pixel against itself: the split's class counts.
    labelled: &'a mut ConfusionMatrix,
    /// Pixels by the modalities without data there.
    by_data: &'a mut Groups,
    /// Pixels by the route code that classified them.
    by_route: &'a mut Groups,
    overlay: Option<OverlaySampler>,
}

impl SceneScorer<'_> {
    /// Adds finished rows to the confusion matrix and the calibration (labels eroded by `erode`
    /// pixels; pixels without a prediction, where a given input has no data, are not scored)
    /// and samples them into the overlay.
    fn rows(&mut self, rows: &ClassRows) -> Result<()> {
        let scene = &self.dataset.scenes[self.index];
        let (w, h) = (rows.width, scene.height());
        let (decoded, labels) = band_labels(
            self.dataset,
            self.index,
            (w, h),
            rows.first_row,
            rows.rows,
            self.erode,
        )?;
        debug_assert!(
            (rows.routes.iter().zip(rows.valid)).all(|(&r, &v)| v == (r != ROUTE_NODATA)),
            "the route codes are nodata exactly where no branch classified"
        );
        let scored = scored_labels(&labels, rows.valid, self.dataset.ignore_index);
        self.labelled
            .add_pairs(&labels, &labels, self.dataset.ignore_index)
            .with_context(|| format!("scene {}", scene.id))?;
        let preds: Vec<i64> = rows.classes.iter().map(|&p| i64::from(p)).collect();
        self.cm
            .add_pairs(&scored, &preds, self.dataset.ignore_index)
            .with_context(|| format!("scene {}", scene.id))?;
        (self.calibration)
            .add_pixels(rows.confidence, &scored, &preds, self.dataset.ignore_index)
            .with_context(|| format!("scene {}", scene.id))?;
        (self.by_route)
            .add_band(
                rows.routes,
                &scored,
                &preds,
                rows.confidence,
                rows.valid,
                self.dataset.ignore_index,
            )
            .with_context(|| format!("scene {}", scene.id))?;
        let patterns = self.data_patterns(rows)?;
        (self.by_data)
            .add_band(
                &patterns,
                &labels,
                &preds,
                rows.confidence,
                rows.valid,
                self.dataset.ignore_index,
            )
            .with_context(|| format!("scene {}", scene.id))?;
        if let Some(o) = self.overlay.as_mut() {
            let window = Window::new(0, rows.first_row as i64, w, rows.rows);
            let image = self.dataset.read_modality(self.index, 0, window)?;
            o.add_band(
                rows.first_row,
                &image,
                &decoded,
                &preds,
                rows.valid,
                &scored,
            );
        }
        Ok(())
    }
}

impl SceneScorer<'_> {
    /// Each pixel's data pattern ([`data_pattern`]) over the band of `rows`: every modality's
    /// validity read from the dataset, also those the run was not given.
    fn data_patterns(&self, rows: &ClassRows) -> Result<Vec<u8>> {
        let window = Window::new(0, rows.first_row as i64, rows.width, rows.rows);
        let modalities = self.dataset.modalities.len();
        let read: Vec<Pixels> = (0..modalities)
            .map(|m| self.dataset.read_modality(self.index, m, window))
            .collect::<Result<_>>()?;
        let valid: Vec<&[bool]> = read.iter().map(|p| p.valid.as_slice()).collect();
        Ok((0..window.width * window.height)
            .map(|i| data_pattern(&valid, i))
            .collect())
    }
}

/// The `dis2 predict` job of a scene of the split: its `given` modalities, the class map into
/// `scratch` (named by the scene's `index`), nothing else.
fn class_map_job(
    cfg: &ModelConfig,
    scene: &Scene,
    given: &[bool],
    scratch: &Path,
    index: usize,
) -> SceneJob {
    SceneJob {
        inputs: cfg
            .modalities
            .iter()
            .zip(&scene.modalities)
            .zip(given)
            .filter(|(_, g)| **g)
            .map(|((m, source), _)| (m.name.clone(), source.path.clone()))
            .collect(),
        missing_masks: (cfg.modalities.iter().zip(&scene.missing_masks).zip(given))
            .filter_map(|((m, mask), g)| {
                Some((m.name.clone(), mask.as_ref()?.path.clone())).filter(|_| *g)
            })
            .collect(),
        out: scratch.join(format!("{index}.tif")),
        ..SceneJob::default()
    }
}

/// The labels as scored: `labels` where the class map has a prediction (`predicted`),
/// `ignore_index` elsewhere.
fn scored_labels(labels: &[i64], predicted: &[bool], ignore_index: i64) -> Vec<i64> {
    labels
        .iter()
        .zip(predicted)
        .map(|(&l, &ok)| if ok { l } else { ignore_index })
        .collect()
}

/// The labels of rows `first..first + rows` of scene `index` of `size` (width, height): as
/// decoded, and as scored, with the boundaries eroded by `erode` pixels. Erosion reads `erode`
/// rows of context above and below the band, so bands give the same result as the whole scene.
fn band_labels(
    dataset: &SceneDataset,
    index: usize,
    size: (usize, usize),
    first: usize,
    rows: usize,
    erode: usize,
) -> Result<(Vec<i64>, Vec<i64>)> {
    let (width, height) = size;
    let (top, count) = erosion_context(first, rows, height, erode);
    let context = dataset.read_labels(index, Window::new(0, top as i64, width, count))?;
    let start = (first - top) * width;
    let decoded = context[start..start + rows * width].to_vec();
    if erode == 0 {
        return Ok((decoded.clone(), decoded));
    }
    let eroded = erode_band(
        &context,
        width,
        top,
        first,
        rows,
        erode,
        dataset.ignore_index,
    );
    Ok((decoded, eroded))
}

/// A scene id as a file name (path separators and odd characters replaced).
fn file_stem(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// An overlay figure's pixels, sampled every `step` rows and columns while the scene is scored
/// band by band (so a large scene is never held whole): the long side stays within
/// [`crate::predict::PREVIEW_SIDE`].
struct OverlaySampler {
    step: usize,
    width: usize,
    height: usize,
    /// Up to three image bands.
    bands: Vec<Vec<f32>>,
    valid: Vec<bool>,
    labels: Vec<i64>,
    /// Predicted class, `None` where a given input has no data.
    preds: Vec<Option<i64>>,
    scored: Vec<i64>,
}

impl OverlaySampler {
    fn new(width: usize, height: usize) -> Self {
        let step = width
            .max(height)
            .div_ceil(crate::predict::PREVIEW_SIDE)
            .max(1);
        let (w, h) = (width.div_ceil(step), height.div_ceil(step));
        Self {
            step,
            width: w,
            height: h,
            bands: Vec::new(),
            valid: Vec::with_capacity(w * h),
            labels: Vec::with_capacity(w * h),
            preds: Vec::with_capacity(w * h),
            scored: Vec::with_capacity(w * h),
        }
    }

    /// Samples the band of scene rows starting at `first` (every slice covers the band;
    /// `predicted` says where `preds` holds a prediction).
    fn add_band(
        &mut self,
        first: usize,
        image: &Pixels,
        labels: &[i64],
        preds: &[i64],
        predicted: &[bool],
        scored: &[i64],
    ) {
        let full = image.width;
        if self.bands.is_empty() {
            self.bands = vec![Vec::new(); image.bands.min(3)];
        }
        for r in 0..image.height {
            if !(first + r).is_multiple_of(self.step) {
                continue;
            }
            for x in (0..full).step_by(self.step) {
                let at = r * full + x;
                for (b, plane) in self.bands.iter_mut().enumerate() {
                    plane.push(image.band(b)[at]);
                }
                self.valid.push(image.valid[at]);
                self.labels.push(labels[at]);
                self.preds.push(predicted[at].then_some(preds[at]));
                self.scored.push(scored[at]);
            }
        }
    }

    fn write(&self, path: &Path, table: &[ClassInfo]) -> Result<()> {
        let image = figures::stretch_rgb(&self.bands, &self.valid);
        // The figure draws a value of no class black: unpredicted pixels.
        let preds: Vec<i64> = self.preds.iter().map(|p| p.unwrap_or(-1)).collect();
        let data = OverlayData {
            width: self.width,
            height: self.height,
            image: &image,
            labels: &self.labels,
            preds: &preds,
            scored: &self.scored,
        };
        figures::overlay_png(path, &data, table)
    }
}

/// `--attention-maps`: for the first `windows` windows of the split's window grid at the model's
/// crop, the CFLM class-wise spatial attention of the teacher and, with `--drop`, of `route`
/// (the student, or the teacher with the dropped modalities filled), upsampled bilinearly to the
/// crop; one figure per window (see [`figures::attention_png`]).
fn write_attention_maps(
    predictor: &Predictor,
    dataset: &SceneDataset,
    route: &Route,
    dir: &Path,
    windows: usize,
) -> Result<Vec<PathBuf>> {
    let info = predictor.info();
    let cfg = &info.model;
    let table = info.class_table();
    if windows == 0 {
        bail!(
            "--attention-windows 0: nothing to draw; give at least 1 or leave out --attention-maps"
        );
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("--attention-maps {}: cannot create it", dir.display()))?;
    let norm = predictor.info().normaliser()?;
    let specs: Vec<_> = SlidingWindowSampler {
        crop: [cfg.crop[0] as usize, cfg.crop[1] as usize],
        stride: [cfg.crop[0] as usize, cfg.crop[1] as usize],
    }
    .windows(dataset)
    .into_iter()
    .take(windows)
    .collect();
    let mut written = Vec::new();
    for spec in specs {
        let sample = load_sample(dataset, &spec, &norm)?;
        let columns = attention_columns(predictor, route, &sample.inputs)?;
        let bands: Vec<Vec<f32>> = sample.inputs[0]
            .chunks(sample.width * sample.height)
            .map(<[f32]>::to_vec)
            .collect();
        let image = figures::stretch_rgb(&bands, &sample.masks[0]);
        let scene = &dataset.scenes[spec.scene];
        let (x, y) = (spec.window.x, spec.window.y);
        let data = AttentionData {
            width: sample.width,
            height: sample.height,
            image: &image,
            labels: &sample.labels,
            columns,
            title: format!(
                "CFLM class-wise attention, scene {} at x {x}, y {y}",
                scene.id
            ),
        };
        let path = dir.join(format!("{}_x{x}_y{y}.png", file_stem(&scene.id)));
        figures::attention_png(&path, &data, &table)?;
        written.push(path);
    }
    Ok(written)
}

/// The columns of one window's attention figure: the teacher's maps and, unless `route` is the
/// teacher, `route`'s (labelled as in the reports). `inputs`: one normalised `C_i x H x W` crop
/// per modality.
fn attention_columns(
    predictor: &Predictor,
    route: &Route,
    inputs: &[Vec<f32>],
) -> Result<Vec<(String, Vec<Vec<f32>>)>> {
    let cfg = &predictor.info().model;
    let (h, w) = (cfg.crop[0], cfg.crop[1]);
    let inputs: Vec<tch::Tensor> = cfg
        .modalities
        .iter()
        .zip(inputs)
        .map(|(m, x)| {
            tch::Tensor::from_slice(x)
                .view([1, m.channels, h, w])
                .to_device(predictor.device)
        })
        .collect();
    let all: Vec<Option<&tch::Tensor>> = inputs.iter().map(Some).collect();
    let mut columns = vec![("teacher".to_string(), attention(predictor, None, &all)?)];
    if *route != Route::Teacher {
        let branch = route.inputs(&all, &cfg.modalities)?;
        let branch: Vec<Option<&tch::Tensor>> = branch.iter().map(Option::as_ref).collect();
        let maps = attention(predictor, route.student(), &branch)?;
        columns.push((route.label(cfg), maps));
    }
    Ok(columns)
}

/// One branch's attention maps for a single window, upsampled to the crop: K planes.
fn attention(
    predictor: &Predictor,
    scenario: Option<&Scenario>,
    inputs: &[Option<&tch::Tensor>],
) -> Result<Vec<Vec<f32>>> {
    let crop = predictor.info().model.crop;
    let maps = predictor.net().attention_maps(scenario, inputs)?;
    let up = maps
        .upsample_bilinear2d([crop[0], crop[1]], false, None, None)
        .to_device(tch::Device::Cpu)
        .to_kind(tch::Kind::Float)
        .contiguous();
    let k = up.size()[1];
    (0..k)
        .map(|c| Ok(Vec::<f32>::try_from(up.get(0).get(c).view([-1]))?))
        .collect()
}

/// Where a scene lies: its grid's size and geotransform, so that the acquisitions of one block
/// (`dis2 blocks`) are one place; a scene without a geotransform is a place of its own.
fn place(scene: &crate::data::dataset::Scene) -> String {
    let info = &scene.grid.info;
    match info.geo_transform {
        Some(gt) => format!("{}x{} {gt:?}", info.width, info.height),
        None => format!("scene {}", scene.id),
    }
}

/// The scenes (indices, ascending) `--overlays n` draws from a split whose scenes lie at
/// `places`: different places first, spread evenly over the split's order, so that four
/// acquisitions of one block never fill the figures while other blocks have none; when the
/// split has fewer places than `n`, further scenes in split order. Deterministic.
pub(crate) fn overlay_scenes(places: &[String], n: usize) -> Vec<usize> {
    let mut firsts: Vec<usize> = Vec::new();
    for (i, p) in places.iter().enumerate() {
        if !firsts.iter().any(|&f| places[f] == *p) {
            firsts.push(i);
        }
    }
    let mut picked: Vec<usize> = if firsts.len() >= n {
        (0..n).map(|i| firsts[i * firsts.len() / n]).collect()
    } else {
        let more = (0..places.len()).filter(|i| !firsts.contains(i));
        let extra = n.min(places.len()) - firsts.len();
        firsts.iter().copied().chain(more.take(extra)).collect()
    };
    picked.sort_unstable();
    picked
}

/// A scratch folder for the predicted class maps, inside the output folder.
fn tempfile_dir(out: &Path) -> Result<PathBuf> {
    let dir = out.join(format!(".scratch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// The groups of [`EvalReport::by_data`] as `metrics.json` lists them.
fn groups_json(groups: &[Group], names: &[String]) -> serde_json::Value {
    let group = |g: &Group| {
        let iou: serde_json::Map<String, serde_json::Value> = (names.iter())
            .zip(&g.scores.per_class)
            .map(|(n, c)| (n.clone(), json!(c.iou)))
            .collect();
        json!({
            "pixels": g.label,
            "labelled": g.labelled,
            "scored": g.scores.pixels,
            "miou": g.scores.miou,
            "mean_f1": g.scores.mean_f1,
            "overall_accuracy": g.scores.overall_accuracy,
            "ece": g.calibration.ece(),
            "classes_in_means": g.scores.mean_classes.iter().map(|&c| &names[c]).collect::<Vec<_>>(),
            "iou": iou,
        })
    };
    groups.iter().map(group).collect()
}

fn write_reports(req: &EvalRequest, r: &EvalReport) -> Result<()> {
    let (out, label, names, cm, s) = (&req.out, &r.branch, &r.class_names, &r.confusion, &r.scores);
    let per_class: Vec<serde_json::Value> = names
        .iter()
        .zip(&s.per_class)
        .map(|(n, c)| json!({"class": n, "iou": c.iou, "f1": c.f1, "precision": c.precision, "recall": c.recall, "support": c.support}))
        .collect();
    let doc = json!({
        "branch": label,
        "checkpoint": req.checkpoint.display().to_string(),
        "split": req.split.as_str(),
        "dropped": req.drop,
        "excluded_from_means": req.exclude,
        "classes_in_means": s.mean_classes.iter().map(|&c| &names[c]).collect::<Vec<_>>(),
        "classes_absent": s.absent_classes.iter().map(|&c| &names[c]).collect::<Vec<_>>(),
        "erode": r.erode,
        "erode_shape": "disk",
        "miou": s.miou,
        "mean_f1": s.mean_f1,
        "overall_accuracy": s.overall_accuracy,
        "pixels": s.pixels,
        "per_class": per_class,
        "confusion_matrix": cm.rows(),
        "by_data": groups_json(&r.by_data, names),
        "by_route": groups_json(&r.by_route, names),
        "skipped_scenes": r.skipped,
        "routes": if req.options.per_pixel { "per pixel" } else { "one per scene" },
        "tta": req.options.tta.as_str(),
        "score_unit": crate::metrics::SCORE_UNIT,
        "calibration": {
            "measure": CONFIDENCE_MEASURE,
            "ece": r.calibration.ece(),
            "pixels": r.calibration.pixels(),
            "bins": r.calibration.bins(),
        },
    });
    let text = serde_json::to_string_pretty(&doc)?;
    crate::fsutil::write_atomic(&out.join("metrics.json"), text.as_bytes())?;
    let mut csv = format!(
        "branch,class,{}\n",
        ["iou", "f1", "precision", "recall"]
            .map(crate::metrics::score_column)
            .join(",")
            + ",support"
    );
    let cell = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
    for (n, c) in names.iter().zip(&s.per_class) {
        csv.push_str(&format!(
            "{label},{n},{},{},{},{},{}\n",
            cell(c.iou),
            cell(c.f1),
            cell(c.precision),
            cell(c.recall),
            c.support
        ));
    }
    csv.push_str(&format!(
        "{label},mean,{},{},,,{}\n",
        cell(s.miou),
        cell(s.mean_f1),
        s.pixels
    ));
    csv.push_str(&format!(
        "{label},overall_accuracy,{},,,,\n",
        cell(s.overall_accuracy)
    ));
    csv.push_str(&format!(
        "{label},expected_calibration_error,{},,,,{}\n",
        cell(r.calibration.ece()),
        r.calibration.pixels()
    ));
    let route_rows = r
        .by_route
        .iter()
        .map(|g| (format!("pixels of {}", g.label), g));
    let data_rows = r.by_data.iter().map(|g| (format!("{} pixels", g.label), g));
    for (what, g) in route_rows.chain(data_rows) {
        csv.push_str(&format!(
            "{label},mean of {what},{},{},,,{}\n",
            cell(g.scores.miou),
            cell(g.scores.mean_f1),
            g.scores.pixels
        ));
    }
    crate::fsutil::write_atomic(&out.join("metrics.csv"), csv.as_bytes())?;
    crate::report::confusion_matrix_png(&out.join("confusion.png"), cm, names)?;
    let title = format!(
        "{} ({label}), {} split",
        req.checkpoint.display(),
        req.split.as_str()
    );
    crate::report::reliability_png(&out.join(RELIABILITY_PNG), &title, &r.calibration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Vec<ClassInfo> {
        [[255, 255, 255], [0, 0, 255]]
            .into_iter()
            .enumerate()
            .map(|(i, colour)| ClassInfo {
                name: format!("class {i}"),
                colour,
            })
            .collect()
    }

    /// Pixels of the error colour in the overlay of one band of 4 x 1 pixels, two of them
    /// wrongly predicted; `predicted` says where the class map has a prediction.
    fn magenta_pixels(predicted: [bool; 4]) -> (usize, OverlaySampler) {
        let image = Pixels {
            bands: 1,
            width: 4,
            height: 1,
            data: vec![1.0, 2.0, 3.0, 4.0],
            valid: vec![true; 4],
        };
        let labels = [0, 1, 1, 0];
        let preds = [0, 0, 0, 0];
        let scored = scored_labels(&labels, &predicted, 255);
        let mut overlay = OverlaySampler::new(4, 1);
        overlay.add_band(0, &image, &labels, &preds, &predicted, &scored);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.png");
        overlay.write(&path, &table()).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let n = img
            .pixels()
            .filter(|p| p.0 == figures::ERROR_COLOUR)
            .count();
        (n, overlay)
    }

    #[test]
    fn overlay_errors_leave_out_pixels_without_a_prediction() {
        // Both wrong pixels have no prediction (an input has no data there): no error drawn,
        // not scored, and the prediction panel has nothing there.
        let (n, overlay) = magenta_pixels([true, false, false, true]);
        assert_eq!(n, 0);
        assert_eq!(overlay.preds, vec![Some(0), None, None, Some(0)]);
        assert_eq!(overlay.scored, vec![0, 255, 255, 0]);
        // With predictions there, the same pixels are errors.
        let (n, _) = magenta_pixels([true; 4]);
        assert!(n >= 2, "{n}");
    }

    /// Four acquisitions per block: the overlays take one scene of each of four blocks, spread
    /// over the split, not the four acquisitions of the first; fewer places than asked: every
    /// place, then further scenes.
    #[test]
    fn overlays_pick_different_places_first() {
        let places: Vec<String> = (0..6)
            .flat_map(|b| (0..4).map(move |_| format!("block {b}")))
            .collect();
        assert_eq!(overlay_scenes(&places, 4), vec![0, 4, 12, 16]);
        assert_eq!(overlay_scenes(&places, 6), vec![0, 4, 8, 12, 16, 20]);
        assert_eq!(overlay_scenes(&places, 7), vec![0, 1, 4, 8, 12, 16, 20]);
        assert_eq!(overlay_scenes(&places, 0), Vec::<usize>::new());
        assert_eq!(overlay_scenes(&places, 99).len(), 24);
        let distinct: Vec<String> = (0..3).map(|i| format!("scene {i}")).collect();
        assert_eq!(overlay_scenes(&distinct, 4), vec![0, 1, 2]);
    }
}
