//! `dis2 predict`: a trained model over whole scenes of any size.
//!
//! A scene is cut into windows of the model's crop size on a regular grid with `overlap` pixels
//! shared between neighbours (see [`crate::tiling`]); windows reaching past the scene, and scenes
//! smaller than a window, are filled by reflection. A background thread reads one strip of rows
//! per row of windows from every input (the inputs in parallel), cuts and normalises the windows
//! in parallel (rayon) and hands them over in batches through a bounded queue while the model
//! runs the previous batch. Window probabilities are blended with a cosine ramp by a
//! [`BandStitcher`], which holds only the band of rows still being written; finished rows go
//! straight to the output GeoTIFFs ([`writer::StreamingTiff`]). Memory therefore depends on the
//! scene's width, never on its height.
//!
//! Which branch runs follows from the inputs given: all of them, the teacher; otherwise the
//! student for the missing set, or, with `allow_fill`, the teacher with the missing modalities
//! filled with zeros in normalised space (the training mean).

pub mod writer;

use anyhow::{anyhow, bail, Context, Result};
use gdal::Dataset;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{CheckpointInfo, Loaded};
use crate::data::config::ClassInfo;
use crate::data::raster::WriteOptions;
use crate::data::raster::{self, GeoRef, Pixels, RasterInfo};
use crate::model::scenario::Scenario;
use crate::model::Dis2Net;
use crate::tiling::{pad_reflect, BandStitcher, FinishedRows, Window, WindowGrid};
use writer::StreamingTiff;

/// Class value of unclassified pixels (any given input is nodata there).
pub const NODATA_CLASS: u8 = 255;
/// Largest side of a `--preview` image in pixels.
pub const PREVIEW_SIDE: usize = 1024;

/// Pixel type of the probability raster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbsType {
    /// round(255 x p); no nodata value (the class map says where the inputs were nodata).
    U8,
    /// p as it is; NaN (the band's nodata) where any input is nodata.
    F32,
}

/// One scene to predict: its input file per modality (by name) and its outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SceneJob {
    pub inputs: Vec<(String, PathBuf)>,
    pub out: PathBuf,
    pub probs: Option<PathBuf>,
    pub preview: Option<PathBuf>,
}

/// How to predict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PredictOptions {
    /// Pixels shared by neighbouring windows; `None`: a quarter of the crop.
    pub overlap: Option<usize>,
    /// Windows per model call.
    pub batch: usize,
    /// Run the teacher with missing modalities filled when the checkpoint has no student for them.
    pub allow_fill: bool,
    pub probs_type: ProbsType,
    /// Batches prepared ahead of the model on a background thread; 0: read each batch on the
    /// calling thread, in turn with the model (no overlap).
    pub prefetch: usize,
    /// Plain progress lines only, at most one a minute.
    pub quiet: bool,
    /// Say on stderr, per scene, that the teacher runs with filled inputs (off where the caller
    /// labels the branch itself, as `dis2 eval` does).
    pub announce_fill: bool,
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
        }
    }
}

/// Which branch of the model runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Every modality given.
    Teacher,
    /// The student of this scenario.
    Student(Scenario),
    /// The teacher, with these modalities (indices) filled with the training mean.
    Fill(Vec<usize>),
}

impl Route {
    /// For messages: `teacher`, `student (missing: sar)`, `teacher with sar filled ...`.
    pub fn describe(&self, info: &CheckpointInfo) -> String {
        let names = |idx: &[usize]| {
            idx.iter()
                .map(|&i| info.model.modalities[i].name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Route::Teacher => "teacher (all modalities given)".to_string(),
            Route::Student(s) => format!("student ({})", s.describe(&info.model)),
            Route::Fill(missing) => format!(
                "teacher with {} filled with the training mean (--allow-fill; the checkpoint has no student for missing: {})",
                names(missing),
                names(missing)
            ),
        }
    }
}

/// The branch for the given modalities (`given[i]` for model modality `i`).
pub fn route(info: &CheckpointInfo, given: &[bool], allow_fill: bool) -> Result<Route> {
    let cfg = &info.model;
    let missing: Vec<usize> = (0..given.len()).filter(|&i| !given[i]).collect();
    if missing.is_empty() {
        return Ok(Route::Teacher);
    }
    if missing.len() == given.len() {
        bail!("no input given; this model takes {}", modality_flags(info));
    }
    let scenario = Scenario::new(missing.clone(), cfg.modalities.len())?;
    let have = cfg.scenario_list()?;
    if have.contains(&scenario) {
        return Ok(Route::Student(scenario));
    }
    if allow_fill {
        return Ok(Route::Fill(missing));
    }
    let list: Vec<String> = have
        .iter()
        .map(|s| format!("[{}]", s.describe(cfg)))
        .collect();
    bail!(
        "the checkpoint has no student for {}; its students are {}. Give the missing modalities, \
         or pass --allow-fill to run the teacher with them filled with the training mean",
        scenario.describe(cfg),
        list.join(", ")
    )
}

/// `--optical FILE (4 bands), --dsm FILE (1 band)`, for messages.
fn modality_flags(info: &CheckpointInfo) -> String {
    info.model
        .modalities
        .iter()
        .map(|m| format!("--{} FILE ({} band(s))", m.name, m.channels))
        .collect::<Vec<_>>()
        .join(", ")
}

/// On the CPU, gives libtorch half of its threads (at least one) and leaves the rest to reading
/// and cutting windows. Measured on 2 cores (docs/predict.md): libtorch's intra-op threads
/// competing with the reader made prediction about 9 times slower than with one libtorch thread.
pub fn share_cpu_threads(device: Device) {
    if device == Device::Cpu {
        tch::set_num_threads((tch::get_num_threads() / 2).max(1));
    }
}

/// A loaded model ready to predict, with the normalisation it was trained with.
pub struct Predictor {
    pub loaded: Loaded,
    pub device: Device,
}

impl Predictor {
    pub fn load(checkpoint: &Path, device: Device) -> Result<Self> {
        let loaded = crate::checkpoint::load(checkpoint, device)
            .with_context(|| format!("--checkpoint {}", checkpoint.display()))?;
        Ok(Self { loaded, device })
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
    pub route: String,
}

impl Summary {
    pub fn megapixels_per_s(&self) -> f64 {
        (self.width * self.height) as f64 / 1e6 / self.seconds.max(1e-9)
    }
}

/// One given input, checked against the model.
struct Input {
    index: usize,
    path: PathBuf,
    channels: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
}

/// Checks the inputs of a scene against the checkpoint and each other; returns them in model
/// order with the header of the first.
fn check_inputs(info: &CheckpointInfo, job: &SceneJob) -> Result<(Vec<Input>, RasterInfo)> {
    let cfg = &info.model;
    let mut inputs: Vec<Input> = Vec::new();
    let mut first: Option<RasterInfo> = None;
    for (name, path) in &job.inputs {
        let index = cfg.modality_index(name).map_err(|_| {
            anyhow!(
                "--{name} {}: the checkpoint has no modality {name:?}; it knows {}",
                path.display(),
                modality_flags(info)
            )
        })?;
        if inputs.iter().any(|i| i.index == index) {
            bail!("--{name} is given twice");
        }
        let header = RasterInfo::read(path).with_context(|| format!("--{name}"))?;
        let channels = cfg.modalities[index].channels as usize;
        if header.bands != channels {
            bail!(
                "--{name} {}: found {} band(s), expected {channels} (modality {name} of the checkpoint)",
                path.display(),
                header.bands
            );
        }
        match &first {
            None => first = Some(header),
            Some(f) => f.check_aligned(&header)?,
        }
        let norm = info.normalisation.get(name).ok_or_else(|| {
            anyhow!(
                "the checkpoint has no normalisation for modality {name}: it was saved without \
                 the training data's statistics (CheckpointInfo::with_data)"
            )
        })?;
        if norm.mean.len() != channels || norm.std.len() != channels {
            bail!("the checkpoint's normalisation of {name} does not have {channels} values");
        }
        inputs.push(Input {
            index,
            path: path.clone(),
            channels,
            mean: norm.mean.iter().map(|&v| v as f32).collect(),
            std: norm.std.iter().map(|&v| v as f32).collect(),
        });
    }
    let first = first
        .ok_or_else(|| anyhow!("no input given; this model takes {}", modality_flags(info)))?;
    inputs.sort_by_key(|i| i.index);
    Ok((inputs, first))
}

/// Windows ready for the model: per given input, `B x C x H x W` normalised values; per
/// window, its `H x W` validity (1 where every given input is valid).
struct Prepared {
    windows: Vec<Window>,
    inputs: Vec<Vec<f32>>,
    valid: Vec<Vec<f32>>,
}

/// One window cut from the strips of its row.
struct WindowData {
    window: Window,
    inputs: Vec<Vec<f32>>,
    valid: Vec<f32>,
}

/// Cuts the window at column `col` from `strips` (one per input, full width, `rows` rows),
/// normalises it (0 where an input is nodata) and pads it to `crop` by reflection.
fn cut_window(
    strips: &[Pixels],
    inputs: &[Input],
    row: usize,
    col: usize,
    crop: (usize, usize),
) -> WindowData {
    let width = strips[0].width;
    let rows = strips[0].height;
    let cols = crop.1.min(width - col);
    let mut valid = vec![1.0f32; rows * cols];
    let mut out = Vec::with_capacity(inputs.len());
    for (strip, input) in strips.iter().zip(inputs) {
        let mut block = Vec::with_capacity(input.channels * rows * cols);
        for b in 0..input.channels {
            let plane = strip.band(b);
            let (mean, std) = (input.mean[b], input.std[b]);
            for y in 0..rows {
                for x in 0..cols {
                    let at = y * width + col + x;
                    block.push(if strip.valid[at] {
                        (plane[at] - mean) / std
                    } else {
                        0.0
                    });
                }
            }
        }
        for y in 0..rows {
            for x in 0..cols {
                if !strip.valid[y * width + col + x] {
                    valid[y * cols + x] = 0.0;
                }
            }
        }
        out.push(pad_reflect(
            &block,
            input.channels,
            rows,
            cols,
            crop.0,
            crop.1,
        ));
    }
    WindowData {
        window: Window { row, col },
        inputs: out,
        valid: pad_reflect(&valid, 1, rows, cols, crop.0, crop.1),
    }
}

fn to_batch(windows: Vec<WindowData>, n_inputs: usize) -> Prepared {
    let mut p = Prepared {
        windows: Vec::with_capacity(windows.len()),
        inputs: vec![Vec::new(); n_inputs],
        valid: Vec::with_capacity(windows.len()),
    };
    for w in windows {
        p.windows.push(w.window);
        for (dst, src) in p.inputs.iter_mut().zip(w.inputs) {
            dst.extend(src);
        }
        p.valid.push(w.valid);
    }
    p
}

/// Reads one strip per row of windows from every input (in parallel) and cuts and normalises
/// that row's windows (in parallel); yields batches in the grid's row-major order.
struct BatchReader {
    inputs: Arc<Vec<Input>>,
    grid: WindowGrid,
    batch: usize,
    datasets: Vec<Dataset>,
    next_row: usize,
    pending: Vec<WindowData>,
    failed: bool,
}

impl BatchReader {
    fn open(inputs: Arc<Vec<Input>>, grid: WindowGrid, batch: usize) -> Result<Self> {
        let datasets = inputs
            .iter()
            .map(|i| raster::open(&i.path))
            .collect::<Result<_>>()?;
        Ok(Self {
            inputs,
            grid,
            batch: batch.max(1),
            datasets,
            next_row: 0,
            pending: Vec::new(),
            failed: false,
        })
    }

    fn read_row(&mut self) -> Result<()> {
        let (height, width) = self.grid.scene;
        let row = self.grid.rows[self.next_row];
        self.next_row += 1;
        let rows = self.grid.window.0.min(height - row);
        let inputs = &self.inputs;
        let strips: Vec<Pixels> = self
            .datasets
            .par_iter_mut()
            .zip(inputs.par_iter())
            .map(|(ds, input)| {
                raster::read_window(
                    ds,
                    &input.path,
                    raster::Window::new(0, row as i64, width, rows),
                )
            })
            .collect::<Result<_>>()?;
        let crop = self.grid.window;
        let made: Vec<WindowData> = self
            .grid
            .cols
            .par_iter()
            .map(|&col| cut_window(&strips, inputs, row, col, crop))
            .collect();
        self.pending.extend(made);
        Ok(())
    }
}

impl Iterator for BatchReader {
    type Item = Result<Prepared>;

    fn next(&mut self) -> Option<Result<Prepared>> {
        if self.failed {
            return None;
        }
        while self.pending.len() < self.batch && self.next_row < self.grid.rows.len() {
            if let Err(e) = self.read_row() {
                self.failed = true;
                return Some(Err(e));
            }
        }
        if self.pending.is_empty() {
            return None;
        }
        let rest = self.pending.split_off(self.batch.min(self.pending.len()));
        let full = std::mem::replace(&mut self.pending, rest);
        Some(Ok(to_batch(full, self.inputs.len())))
    }
}

/// Batches from `reader`: on a background thread through a queue of `prefetch` batches, or,
/// with `prefetch` 0, read in turn with the model on the calling thread.
fn batches(
    reader: BatchReader,
    prefetch: usize,
) -> (
    Box<dyn Iterator<Item = Result<Prepared>>>,
    Option<JoinHandle<()>>,
) {
    if prefetch == 0 {
        return (Box::new(reader), None);
    }
    let (tx, rx) = sync_channel::<Result<Prepared>>(prefetch);
    let handle = std::thread::spawn(move || {
        for batch in reader {
            let failed = batch.is_err();
            if tx.send(batch).is_err() || failed {
                return;
            }
        }
    });
    (Box::new(rx.into_iter()), Some(handle))
}

/// Where finished rows go: the class map, the probabilities, the preview.
struct Sink {
    classes: usize,
    width: usize,
    class_map: StreamingTiff<u8>,
    probs: Option<ProbsOut>,
    preview: Option<Preview>,
    valid_pixels: u64,
}

enum ProbsOut {
    U8(StreamingTiff<u8>),
    F32(StreamingTiff<f32>),
}

/// A nearest-neighbour, downsampled colour rendering of the class map.
struct Preview {
    path: PathBuf,
    step: usize,
    width: usize,
    height: usize,
    rgb: Vec<u8>,
    colours: Vec<[u8; 3]>,
}

impl Preview {
    fn new(path: &Path, width: usize, height: usize, colours: Vec<[u8; 3]>) -> Self {
        let step = width.max(height).div_ceil(PREVIEW_SIDE).max(1);
        let (pw, ph) = (width.div_ceil(step), height.div_ceil(step));
        Self {
            path: path.to_path_buf(),
            step,
            width: pw,
            height: ph,
            rgb: vec![0; pw * ph * 3],
            colours,
        }
    }

    fn add_row(&mut self, scene_row: usize, classes: &[u8]) {
        if !scene_row.is_multiple_of(self.step) {
            return;
        }
        let y = scene_row / self.step;
        for x in 0..self.width {
            let c = classes[x * self.step];
            let colour = self.colours.get(c as usize).copied().unwrap_or([0, 0, 0]);
            self.rgb[(y * self.width + x) * 3..][..3].copy_from_slice(&colour);
        }
    }

    fn write(&self) -> Result<()> {
        let (w, h) = (u32::try_from(self.width)?, u32::try_from(self.height)?);
        crate::fsutil::write_atomic_with(&self.path, |tmp| {
            image::save_buffer_with_format(
                tmp,
                &self.rgb,
                w,
                h,
                image::ExtendedColorType::Rgb8,
                image::ImageFormat::Png,
            )
            .with_context(|| format!("cannot write {}", tmp.display()))
        })
    }
}

impl Sink {
    fn rows(&mut self, done: &FinishedRows) -> Result<()> {
        let (k, w, rows) = (self.classes, self.width, done.rows);
        let plane = rows * w;
        let valid = &done.probs[k * plane..(k + 1) * plane];
        let mut classes = vec![NODATA_CLASS; plane];
        for (i, class) in classes.iter_mut().enumerate() {
            if valid[i] < 0.5 {
                continue;
            }
            let mut best = 0;
            for c in 1..k {
                if done.probs[c * plane + i] > done.probs[best * plane + i] {
                    best = c;
                }
            }
            *class = best as u8;
            self.valid_pixels += 1;
        }
        self.class_map
            .write_rows(0, done.first_row, rows, &classes)?;
        match &mut self.probs {
            Some(ProbsOut::U8(t)) => {
                for c in 0..k {
                    let v: Vec<u8> = done.probs[c * plane..(c + 1) * plane]
                        .iter()
                        .map(|p| (p.clamp(0.0, 1.0) * 255.0).round() as u8)
                        .collect();
                    t.write_rows(c, done.first_row, rows, &v)?;
                }
            }
            Some(ProbsOut::F32(t)) => {
                for c in 0..k {
                    let v: Vec<f32> = done.probs[c * plane..(c + 1) * plane]
                        .iter()
                        .zip(valid)
                        .map(|(&p, &ok)| if ok < 0.5 { f32::NAN } else { p })
                        .collect();
                    t.write_rows(c, done.first_row, rows, &v)?;
                }
            }
            None => {}
        }
        if let Some(preview) = &mut self.preview {
            for r in 0..rows {
                preview.add_row(done.first_row + r, &classes[r * w..(r + 1) * w]);
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        self.class_map.finish()?;
        match self.probs {
            Some(ProbsOut::U8(t)) => t.finish()?,
            Some(ProbsOut::F32(t)) => t.finish()?,
            None => {}
        }
        if let Some(p) = &self.preview {
            p.write()?;
        }
        Ok(())
    }
}

/// Progress over the windows of a scene: an indicatif bar on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: usize,
    done: usize,
    every: std::time::Duration,
    last: Instant,
    started: Instant,
    label: String,
}

impl Progress {
    fn new(total: usize, label: String, quiet: bool) -> Self {
        use std::io::IsTerminal;
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            let style = indicatif::ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} windows ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(label.clone());
            bar
        });
        let every = std::time::Duration::from_secs(if quiet { 60 } else { 10 });
        Self {
            bar,
            total,
            done: 0,
            every,
            last: Instant::now(),
            started: Instant::now(),
            label,
        }
    }

    fn add(&mut self, n: usize) {
        self.done += n;
        match &self.bar {
            Some(bar) => bar.set_position(self.done as u64),
            None => {
                if self.last.elapsed() >= self.every && self.done < self.total {
                    eprintln!(
                        "{}: {}/{} windows [{} s]",
                        self.label,
                        self.done,
                        self.total,
                        self.started.elapsed().as_secs()
                    );
                    self.last = Instant::now();
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Predicts one scene and writes its outputs. Nothing is left at the output paths on error.
pub fn predict_scene(
    predictor: &Predictor,
    job: &SceneJob,
    options: &PredictOptions,
) -> Result<Summary> {
    let started = Instant::now();
    let info = predictor.info();
    let cfg = &info.model;
    let (inputs, header) = check_inputs(info, job)?;
    let mut given = vec![false; cfg.modalities.len()];
    for i in &inputs {
        given[i.index] = true;
    }
    let route = route(info, &given, options.allow_fill)?;
    if options.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let crop = (cfg.crop[0] as usize, cfg.crop[1] as usize);
    let overlap = options.overlap.unwrap_or(crop.0.min(crop.1) / 4);
    let (width, height) = (header.width, header.height);
    let grid = WindowGrid::new((height, width), crop, overlap)
        .map_err(|e| anyhow!("--overlap {overlap}: {e}"))?;
    let georef = GeoRef::of(&header);
    let table: Vec<ClassInfo> = info.class_table();
    let k = table.len();
    if k > usize::from(NODATA_CLASS) {
        bail!("the checkpoint has {k} classes; a u8 class map holds at most 255");
    }
    let colours: Vec<[u8; 3]> = table.iter().map(|c| c.colour).collect();
    let class_map = StreamingTiff::<u8>::create(
        &job.out,
        width,
        height,
        1,
        georef.as_ref(),
        &WriteOptions {
            nodata: Some(f64::from(NODATA_CLASS)),
            colour_table: Some(colours.clone()),
            band_names: vec!["class".to_string()],
        },
    )?;
    let names: Vec<String> = table.iter().map(|c| c.name.clone()).collect();
    let probs = match &job.probs {
        None => None,
        Some(path) => Some(match options.probs_type {
            ProbsType::U8 => ProbsOut::U8(StreamingTiff::create(
                path,
                width,
                height,
                k,
                georef.as_ref(),
                &WriteOptions {
                    band_names: names,
                    ..Default::default()
                },
            )?),
            ProbsType::F32 => ProbsOut::F32(StreamingTiff::create(
                path,
                width,
                height,
                k,
                georef.as_ref(),
                &WriteOptions {
                    nodata: Some(f64::NAN),
                    band_names: names,
                    ..Default::default()
                },
            )?),
        }),
    };
    let mut sink = Sink {
        classes: k,
        width,
        class_map,
        probs,
        preview: job
            .preview
            .as_ref()
            .map(|p| Preview::new(p, width, height, colours)),
        valid_pixels: 0,
    };
    let label = job.out.display().to_string();
    if matches!(route, Route::Fill(_)) && options.announce_fill {
        eprintln!("{label}: {}", route.describe(info));
    }
    let windows = grid.len();
    let mut stitcher = BandStitcher::new(grid.clone(), k + 1);
    let mut progress = Progress::new(windows, label, options.quiet);
    let inputs = Arc::new(inputs);
    let reader = BatchReader::open(inputs.clone(), grid, options.batch)?;
    let (batches, reading) = batches(reader, options.prefetch);
    let result = (|| -> Result<()> {
        let plane = crop.0 * crop.1;
        for batch in batches {
            let batch = batch?;
            let b = batch.windows.len();
            let mut tensors: Vec<Option<Tensor>> =
                (0..cfg.modalities.len()).map(|_| None).collect();
            for (input, data) in inputs.iter().zip(&batch.inputs) {
                let t = Tensor::from_slice(data)
                    .view([
                        b as i64,
                        input.channels as i64,
                        crop.0 as i64,
                        crop.1 as i64,
                    ])
                    .to_device(predictor.device);
                tensors[input.index] = Some(t);
            }
            if let Route::Fill(missing) = &route {
                for &m in missing {
                    let c = cfg.modalities[m].channels;
                    tensors[m] = Some(Tensor::zeros(
                        [b as i64, c, crop.0 as i64, crop.1 as i64],
                        (Kind::Float, predictor.device),
                    ));
                }
            }
            let refs: Vec<Option<&Tensor>> = tensors.iter().map(|t| t.as_ref()).collect();
            let probs = tch::no_grad(|| match &route {
                Route::Student(s) => predictor.net().forward_student(s, &refs, false),
                Route::Teacher | Route::Fill(_) => predictor.net().forward_teacher(&refs, false),
            })?;
            let probs: Vec<f32> = Vec::<f32>::try_from(
                probs
                    .to_device(Device::Cpu)
                    .to_kind(Kind::Float)
                    .contiguous()
                    .view([-1]),
            )?;
            if probs.len() != b * k * plane {
                bail!(
                    "the model returned {} values for {b} windows of {k} classes",
                    probs.len()
                );
            }
            for (i, (window, valid)) in batch.windows.iter().zip(&batch.valid).enumerate() {
                let mut values = Vec::with_capacity((k + 1) * plane);
                values.extend_from_slice(&probs[i * k * plane..(i + 1) * k * plane]);
                values.extend_from_slice(valid);
                if let Some(done) = stitcher.add(*window, &values)? {
                    sink.rows(&done)?;
                }
            }
            progress.add(b);
        }
        Ok(())
    })();
    if let Some(handle) = reading {
        // The queue is closed (the loop consumed or dropped it), so the thread ends.
        handle
            .join()
            .map_err(|_| anyhow!("the reading thread panicked"))?;
    }
    progress.finish();
    result?;
    if sink.valid_pixels == 0 {
        let files: Vec<String> = inputs
            .iter()
            .map(|i| i.path.display().to_string())
            .collect();
        bail!(
            "every pixel is nodata in at least one input ({}): nothing to classify",
            files.join(", ")
        );
    }
    let valid_pixels = sink.valid_pixels;
    sink.finish()?;
    Ok(Summary {
        width,
        height,
        windows,
        seconds: started.elapsed().as_secs_f64(),
        valid_pixels,
        route: route.describe(info),
    })
}
