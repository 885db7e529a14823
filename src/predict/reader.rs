//! Reading a scene's windows for `dis2 predict`: one strip of rows per row of windows from every
//! input (the inputs in parallel), cut, normalised and padded by reflection per window (in
//! parallel), handed over in batches, on a background thread ahead of the model or in turn
//! with it.

use anyhow::Result;
use rayon::prelude::*;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::data::grid::{GridSource, OpenSource};
use crate::data::raster::{Pixels, Window};
use crate::tiling::{pad_reflect, WindowGrid};

/// One given input, checked against the model and placed on the scene's grid.
pub(super) struct Input {
    pub(super) index: usize,
    pub(super) source: GridSource,
    pub(super) channels: usize,
    pub(super) mean: Vec<f32>,
    pub(super) std: Vec<f32>,
}

/// Windows ready for the model: per given input, `B x C x H x W` normalised values; per
/// window, its `H x W` validity (1 where every given input is valid).
pub(super) struct Prepared {
    pub(super) windows: Vec<Window>,
    pub(super) inputs: Vec<Vec<f32>>,
    pub(super) valid: Vec<Vec<f32>>,
}

/// One window cut from the strips of its row.
struct WindowData {
    window: Window,
    inputs: Vec<Vec<f32>>,
    valid: Vec<f32>,
}

/// Cuts `window` (of the model's crop size) from `strips` (one per input, full width, starting
/// at the window's row), normalises it (0 where an input is nodata) and pads it to the crop by
/// reflection.
fn cut_window(strips: &[Pixels], inputs: &[Input], window: Window) -> WindowData {
    let width = strips[0].width;
    let rows = strips[0].height;
    let (col, crop) = (window.x as usize, (window.height, window.width));
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
        window,
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
pub(super) struct BatchReader {
    inputs: Arc<Vec<Input>>,
    grid: WindowGrid,
    batch: usize,
    datasets: Vec<OpenSource>,
    next_row: usize,
    pending: Vec<WindowData>,
    failed: bool,
}

impl BatchReader {
    pub(super) fn open(inputs: Arc<Vec<Input>>, grid: WindowGrid, batch: usize) -> Result<Self> {
        let datasets = inputs
            .iter()
            .map(|i| i.source.open())
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
            .map(|source| source.read(Window::new(0, row as i64, width, rows)))
            .collect::<Result<_>>()?;
        let grid = &self.grid;
        let made: Vec<WindowData> = grid
            .cols
            .par_iter()
            .map(|&col| cut_window(&strips, inputs, grid.window_at(row, col)))
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
