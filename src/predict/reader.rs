//! Reading a scene's windows for `dis2 predict`: one strip of rows per row of windows from every
//! input (the inputs in parallel), cut, normalised and padded by reflection per window (in
//! parallel), handed over in batches, on a background thread ahead of the model or in turn
//! with it. Each strip is also measured against the checkpoint's normalisation
//! ([`RangeSurvey`]): a scene beyond the refusal bound stops at the first strip that shows it.
//! Strips are read with the context margin's and the route blend's rows above and below
//! (clamped to the scene), so each pixel's pattern of available modalities and its mix of
//! routes near a boundary ([`super::routes`]) are its own, whichever window covers it.

use anyhow::Result;
use rayon::prelude::*;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::data::grid::{GridSource, OpenSource};
use crate::data::input_range::RangeSurvey;
use crate::data::normalise::Normaliser;
use crate::data::raster::{Pixels, Window};
use crate::model::ROUTE_NODATA;
use crate::tiling::{pad_reflect, WindowLayout};

use super::routes::{apply_masks, strip_blend, strip_patterns, Blend, MaskInput, Routing};

/// One given input, checked against the model and placed on the scene's grid.
pub(super) struct Input {
    pub(super) index: usize,
    pub(super) source: GridSource,
    pub(super) channels: usize,
}

/// Windows ready for the model: per given input, `B x C x H x W` normalised values; per
/// window, its `H x W` patterns (bitmask of the modalities unavailable at each pixel) and route
/// codes ([`crate::model::ROUTE_NODATA`] where no branch runs), padded like the inputs, and
/// the mix with a poorer route near a route boundary (`None` for a window without one).
pub(super) struct Prepared {
    pub(super) windows: Vec<Window>,
    pub(super) inputs: Vec<Vec<f32>>,
    pub(super) patterns: Vec<Vec<u8>>,
    pub(super) codes: Vec<Vec<u8>>,
    pub(super) blends: Vec<Option<Blend>>,
}

/// One window cut from the strips of its row.
struct WindowData {
    window: Window,
    inputs: Vec<Vec<f32>>,
    patterns: Vec<u8>,
    codes: Vec<u8>,
    blend: Option<Blend>,
}

/// The strips of one row of windows: every input's pixels (full width) from scene row `top`,
/// `top_pad` context rows above the windows' first row, and the patterns of the `rows` rows of
/// the windows, and their mix of routes near a boundary.
struct Strips {
    pixels: Vec<Pixels>,
    top_pad: usize,
    rows: usize,
    patterns: Vec<u8>,
    blend: Option<Blend>,
}

/// A `u8` plane padded by reflection like the inputs.
fn pad_codes(plane: &[u8], rows: usize, cols: usize, crop: (usize, usize)) -> Vec<u8> {
    if (rows, cols) == crop {
        return plane.to_vec();
    }
    let values: Vec<f32> = plane.iter().map(|&c| f32::from(c)).collect();
    let padded = pad_reflect(&values, 1, rows, cols, crop.0, crop.1);
    padded.into_iter().map(|v| v as u8).collect()
}

/// Cuts `window` (of the model's crop size) from `strips`, normalises it (0 where an input is
/// nodata) and pads it to the crop by reflection, with its patterns and route codes.
fn cut_window(
    strips: &Strips,
    inputs: &[Input],
    routing: &Routing,
    norm: &Normaliser,
    window: Window,
) -> WindowData {
    let width = strips.pixels[0].width;
    let (rows, top) = (strips.rows, strips.top_pad);
    let (col, crop) = (window.x as usize, (window.height, window.width));
    let cols = crop.1.min(width - col);
    let mut out = Vec::with_capacity(inputs.len());
    for (strip, input) in strips.pixels.iter().zip(inputs) {
        let mut block = Vec::with_capacity(input.channels * rows * cols);
        for b in 0..input.channels {
            let plane = strip.band(b);
            for y in 0..rows {
                let at = (top + y) * width + col;
                let (values, ok) = (&plane[at..at + cols], &strip.valid[at..at + cols]);
                norm.extend_band(input.index, b, &mut block, values, ok);
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
    let mut patterns = Vec::with_capacity(rows * cols);
    for y in 0..rows {
        patterns.extend_from_slice(&strips.patterns[y * width + col..][..cols]);
    }
    let codes: Vec<u8> = patterns.iter().map(|&p| routing.code(p)).collect();
    WindowData {
        window,
        inputs: out,
        patterns: pad_codes(&patterns, rows, cols, crop),
        codes: pad_codes(&codes, rows, cols, crop),
        blend: strips
            .blend
            .as_ref()
            .and_then(|b| cut_blend(b, width, rows, col, cols, crop)),
    }
}

/// The window's part (`rows x cols` from column `col` of a strip `width` wide) of a strip's
/// `blend`, padded to the crop like the inputs; `None` when none of its pixels mixes.
fn cut_blend(
    blend: &Blend,
    width: usize,
    rows: usize,
    col: usize,
    cols: usize,
    crop: (usize, usize),
) -> Option<Blend> {
    let mut partners = Vec::with_capacity(rows * cols);
    let mut weights = Vec::with_capacity(rows * cols);
    for y in 0..rows {
        partners.extend_from_slice(&blend.partners[y * width + col..][..cols]);
        weights.extend_from_slice(&blend.weights[y * width + col..][..cols]);
    }
    if partners.iter().all(|&c| c == ROUTE_NODATA) {
        return None;
    }
    if (rows, cols) != crop {
        weights = pad_reflect(&weights, 1, rows, cols, crop.0, crop.1);
    }
    Some(Blend {
        partners: pad_codes(&partners, rows, cols, crop),
        weights,
    })
}

fn to_batch(windows: Vec<WindowData>, n_inputs: usize) -> Prepared {
    let mut p = Prepared {
        windows: Vec::with_capacity(windows.len()),
        inputs: vec![Vec::new(); n_inputs],
        patterns: Vec::with_capacity(windows.len()),
        codes: Vec::with_capacity(windows.len()),
        blends: Vec::with_capacity(windows.len()),
    };
    for w in windows {
        p.windows.push(w.window);
        for (dst, src) in p.inputs.iter_mut().zip(w.inputs) {
            dst.extend(src);
        }
        p.patterns.push(w.patterns);
        p.codes.push(w.codes);
        p.blends.push(w.blend);
    }
    p
}

/// Reads one strip per row of windows from every input (in parallel) and cuts and normalises
/// that row's windows (in parallel); yields batches in the layout's row-major order.
pub(super) struct BatchReader {
    inputs: Arc<Vec<Input>>,
    masks: Vec<MaskInput>,
    routing: Arc<Routing>,
    norm: Arc<Normaliser>,
    layout: WindowLayout,
    batch: usize,
    datasets: Vec<OpenSource>,
    mask_datasets: Vec<OpenSource>,
    next_row: usize,
    /// The scene's rows above this one have been measured by `survey`.
    measured_to: usize,
    survey: Arc<Mutex<RangeSurvey>>,
    pending: Vec<WindowData>,
    failed: bool,
}

impl BatchReader {
    /// A reader of `layout`'s windows from `inputs`, with the missing `masks`, routed by
    /// `routing`, in batches of `batch`.
    pub(super) fn open(
        inputs: Arc<Vec<Input>>,
        masks: Vec<MaskInput>,
        routing: Arc<Routing>,
        norm: Arc<Normaliser>,
        layout: WindowLayout,
        batch: usize,
        survey: Arc<Mutex<RangeSurvey>>,
    ) -> Result<Self> {
        let datasets = inputs
            .iter()
            .map(|i| i.source.open())
            .collect::<Result<_>>()?;
        let mask_datasets = masks
            .iter()
            .map(|m| m.source.open())
            .collect::<Result<_>>()?;
        Ok(Self {
            inputs,
            masks,
            routing,
            norm,
            layout,
            batch: batch.max(1),
            datasets,
            mask_datasets,
            next_row: 0,
            measured_to: 0,
            survey,
            pending: Vec::new(),
            failed: false,
        })
    }

    fn read_row(&mut self) -> Result<()> {
        let (height, width) = self.layout.scene;
        let row = self.layout.rows[self.next_row];
        self.next_row += 1;
        let rows = self.layout.window.0.min(height - row);
        // Context for the margin's erosion, then for the blend's distances to other patterns.
        let context = self.routing.margin + self.routing.blend;
        let top = row.saturating_sub(context);
        let read = Window::new(
            0,
            top as i64,
            width,
            (row + rows + context).min(height) - top,
        );
        let mut strips: Vec<Pixels> = self
            .datasets
            .par_iter_mut()
            .map(|source| source.read(read))
            .collect::<Result<_>>()?;
        let masks: Vec<(usize, Pixels)> = (self.masks.iter().zip(&self.mask_datasets))
            .map(|(m, source)| Ok((m.index, source.read(read)?)))
            .collect::<Result<_>>()?;
        let indices: Vec<usize> = self.inputs.iter().map(|i| i.index).collect();
        apply_masks(&mut strips, &indices, &masks);
        self.measure(&strips, top)?;
        let patterns = strip_patterns(&strips, &indices, &self.routing);
        let top_pad = row - top;
        let read_rows = patterns.len() / width;
        let window_rows = top_pad * width..(top_pad + rows) * width;
        let blend = strip_blend(&patterns, width, read_rows, &self.routing).map(|b| Blend {
            partners: b.partners[window_rows.clone()].to_vec(),
            weights: b.weights[window_rows.clone()].to_vec(),
        });
        let strips = Strips {
            pixels: strips,
            top_pad,
            rows,
            patterns: patterns[window_rows].to_vec(),
            blend,
        };
        let (inputs, norm, layout) = (&self.inputs, &self.norm, &self.layout);
        let routing = &self.routing;
        let made: Vec<WindowData> = layout
            .cols
            .par_iter()
            .map(|&col| cut_window(&strips, inputs, routing, norm, layout.window_at(row, col)))
            .collect();
        self.pending.extend(made);
        Ok(())
    }

    /// Adds the rows of `strips` (starting at scene row `row`) not measured yet to the survey,
    /// and refuses the scene when it lies beyond the refusal bound.
    fn measure(&mut self, strips: &[Pixels], row: usize) -> Result<()> {
        let skip = self.measured_to.saturating_sub(row);
        let mut survey = self.survey.lock().unwrap_or_else(|e| e.into_inner());
        for (slot, strip) in strips.iter().enumerate() {
            survey.add(slot, strip, skip);
        }
        self.measured_to = row + strips[0].height;
        survey.check(self.next_row == self.layout.rows.len())
    }
}

impl Iterator for BatchReader {
    type Item = Result<Prepared>;

    fn next(&mut self) -> Option<Result<Prepared>> {
        if self.failed {
            return None;
        }
        while self.pending.len() < self.batch && self.next_row < self.layout.rows.len() {
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

/// Batches from `reader`: on a background thread through a queue of `prefetch` batches (cutting
/// windows in the pipeline's pool of the inference settings, when held), or, with `prefetch`
/// 0, read in turn with the model on the calling thread.
pub(super) fn batches(
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
    let pool = super::settings::pipeline_pool();
    let handle = std::thread::spawn(move || {
        let read = move || {
            for batch in reader {
                let failed = batch.is_err();
                if tx.send(batch).is_err() || failed {
                    return;
                }
            }
        };
        // Within the inference settings' own pool, so the reader keeps to its share of the
        // cores (`settings::ThreadSplit`).
        match pool {
            Some(pool) => pool.install(read),
            None => read(),
        }
    });
    (Box::new(rx.into_iter()), Some(handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Experiment;
    use crate::data::dataset::SceneDataset;
    use crate::data::layouts::Split;
    use crate::data::loader::load_sample;
    use crate::data::sampling::SampleSpec;
    use crate::data::synth::{self, SynthOptions};

    /// Training and inference read the same pixels into the same model inputs: every window of
    /// predict's reader that lies inside its scene equals the training sample of that window
    /// (no augmentation), value for value, nodata pixels included.
    #[test]
    fn predict_windows_equal_training_samples() {
        let dir = tempfile::tempdir().unwrap();
        let options = SynthOptions {
            out: dir.path().to_path_buf(),
            scenes: 6,
            size: 96,
            seed: 9,
            gaps: false,
        };
        synth::generate(&options).unwrap();
        let yaml = crate::prepare::write_synthetic_experiment(&options).unwrap();
        let exp = Experiment::load(&yaml, &[]).unwrap();
        let dataset = SceneDataset::open(&exp.data, &exp.model, Split::Train).unwrap();
        // A nodata corner in the first scene's SAR: invalid pixels are filled the same way too.
        let sar = gdal::Dataset::open_ex(
            &dataset.scenes[0].modalities[2].path,
            gdal::DatasetOptions {
                open_flags: gdal::GdalOpenFlags::GDAL_OF_UPDATE,
                ..Default::default()
            },
        )
        .unwrap();
        let corner = vec![synth::SAR_NODATA; 40 * 40];
        let mut buffer = gdal::raster::Buffer::new((40, 40), corner);
        let mut band = sar.rasterband(1).unwrap();
        band.write((10, 30), (40, 40), &mut buffer).unwrap();
        sar.close().unwrap();
        let norm = Arc::new(Normaliser::from_config(&exp.data, &exp.model).unwrap());
        let crop = (exp.model.crop[0] as usize, exp.model.crop[1] as usize);
        let (mut compared, mut with_nodata) = (0, 0);
        for (s, scene) in dataset.scenes.iter().enumerate() {
            let inputs: Vec<Input> = (scene.modalities.iter().enumerate())
                .map(|(index, source)| Input {
                    index,
                    source: source.clone(),
                    channels: exp.model.modalities[index].channels as usize,
                })
                .collect();
            let layout = WindowLayout::new((scene.height(), scene.width()), crop, 16).unwrap();
            let surveyed: Vec<_> = (inputs.iter())
                .map(|i| (i.index, format!("m{}", i.index), i.source.path.clone()))
                .collect();
            let survey = Arc::new(Mutex::new(RangeSurvey::new(&norm, &surveyed, false)));
            let given = vec![true; inputs.len()];
            let routing = Routing::per_pixel(&exp.model, &given, false, 0, 0).unwrap();
            let reader = BatchReader::open(
                Arc::new(inputs),
                Vec::new(),
                Arc::new(routing),
                norm.clone(),
                layout,
                4,
                survey,
            )
            .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                for (i, window) in batch.windows.iter().enumerate() {
                    let inside = window.x as usize + crop.1 <= scene.width()
                        && window.y as usize + crop.0 <= scene.height();
                    if !inside {
                        continue;
                    }
                    let spec = SampleSpec {
                        scene: s,
                        window: *window,
                        out_width: crop.1,
                        out_height: crop.0,
                        augment: Default::default(),
                    };
                    let sample = load_sample(&dataset, &spec, &norm).unwrap();
                    for (m, trained) in sample.inputs.iter().enumerate() {
                        let n = trained.len();
                        assert_eq!(
                            &batch.inputs[m][i * n..(i + 1) * n],
                            &trained[..],
                            "scene {s}, window {window:?}, modality {m}"
                        );
                    }
                    let valid: Vec<bool> = batch.patterns[i].iter().map(|&p| p == 0).collect();
                    assert_eq!(valid, sample.valid);
                    compared += 1;
                    with_nodata += usize::from(sample.valid.contains(&false));
                }
            }
        }
        assert!(compared >= 4, "only {compared} windows compared");
        assert!(
            with_nodata > 0,
            "no window had a nodata pixel: the fill was not compared"
        );
    }
}
