//! Sliding windows over a large scene, reflection padding at its edges, smooth blending of
//! overlapping window predictions, and a stitcher that keeps only the band of rows still being
//! written, so memory does not grow with the scene's height.
//!
//! Windows sit on a regular grid (stride = window - overlap) starting at the top-left corner; the
//! last row and column of windows reach past the scene and are filled by reflection. Each window's
//! prediction is weighted by a cosine ramp over its outer `overlap` pixels, so that
//! - where only one window covers a pixel, the result is that window's own prediction;
//! - where a window's weight is 1, no other window reaches: the result equals that window alone.

use anyhow::{ensure, Result};
use std::f32::consts::PI;

use crate::data::raster::Window;

/// The windows covering a scene, in row-major order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowLayout {
    pub scene: (usize, usize),
    pub window: (usize, usize),
    pub overlap: usize,
    pub rows: Vec<usize>,
    pub cols: Vec<usize>,
}

impl WindowLayout {
    /// `overlap` must leave a positive stride and be at most half a window, so that ramps of
    /// neighbouring windows never meet another window's full-weight centre.
    pub fn new(scene: (usize, usize), window: (usize, usize), overlap: usize) -> Result<Self> {
        ensure!(
            scene.0 > 0 && scene.1 > 0,
            "empty scene {}x{}",
            scene.0,
            scene.1
        );
        ensure!(window.0 > 0 && window.1 > 0, "empty window");
        let smallest = window.0.min(window.1);
        ensure!(
            2 * overlap <= smallest,
            "overlap {overlap} is more than half the window ({}x{})",
            window.0,
            window.1
        );
        Ok(Self {
            scene,
            window,
            overlap,
            rows: axis_starts(scene.0, window.0 - overlap, window.0),
            cols: axis_starts(scene.1, window.1 - overlap, window.1),
        })
    }

    pub fn len(&self) -> usize {
        self.rows.len() * self.cols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The windows in row-major order, each of the layout's window size (the last row and
    /// column reach past the scene).
    pub fn windows(&self) -> impl Iterator<Item = Window> + '_ {
        self.rows
            .iter()
            .flat_map(move |&row| self.cols.iter().map(move |&col| self.window_at(row, col)))
    }

    /// The window whose top-left corner is scene row `row`, column `col`.
    pub(crate) fn window_at(&self, row: usize, col: usize) -> Window {
        Window::new(col as i64, row as i64, self.window.1, self.window.0)
    }

    /// The blending weights of one window, row-major `window.0 x window.1`.
    pub fn weights(&self) -> Vec<f32> {
        let wy = ramp(self.window.0, self.overlap);
        let wx = ramp(self.window.1, self.overlap);
        wy.iter()
            .flat_map(|&a| wx.iter().map(move |&b| a * b))
            .collect()
    }
}

/// Window starts 0, stride, 2*stride, ... until the scene is covered.
fn axis_starts(len: usize, stride: usize, window: usize) -> Vec<usize> {
    let mut starts = vec![0];
    while starts[starts.len() - 1] + window < len {
        starts.push(starts[starts.len() - 1] + stride);
    }
    starts
}

/// 1-D weights: a raised cosine over the outer `overlap` pixels, 1 inside, always positive.
fn ramp(len: usize, overlap: usize) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let d = i.min(len - 1 - i);
            if d >= overlap {
                1.0
            } else {
                0.5 - 0.5 * (PI * (d as f32 + 0.5) / overlap as f32).cos()
            }
        })
        .collect()
}

/// Mirror index for reflection padding (`numpy.pad(mode="reflect")`), any distance outside.
pub fn reflect_index(i: isize, len: usize) -> usize {
    if len == 1 {
        return 0;
    }
    let period = 2 * (len as isize - 1);
    let m = i.rem_euclid(period);
    (if m < len as isize { m } else { period - m }) as usize
}

/// Pads `channels x h x w` data read at the scene's edge to `channels x out_h x out_w` by
/// reflection (the data occupies the top-left corner).
pub(crate) fn pad_reflect(
    data: &[f32],
    channels: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(channels * out_h * out_w);
    for c in 0..channels {
        let plane = &data[c * h * w..(c + 1) * h * w];
        for y in 0..out_h {
            let sy = reflect_index(y as isize, h);
            for x in 0..out_w {
                out.push(plane[sy * w + reflect_index(x as isize, w)]);
            }
        }
    }
    out
}

/// Rows of the scene that are final: `probs` is `classes x rows x width`, already normalised.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FinishedRows {
    pub first_row: usize,
    pub rows: usize,
    pub probs: Vec<f32>,
}

/// Accumulates weighted window predictions over a band of rows and hands back rows once no later
/// window can reach them. Feed windows in the layout's row-major order.
pub(crate) struct BandStitcher {
    layout: WindowLayout,
    classes: usize,
    weights: Vec<f32>,
    /// First scene row held in the band.
    band_start: usize,
    /// `classes x band_rows x width` weighted sums, and `band_rows x width` weight sums.
    sums: Vec<f32>,
    weight_sums: Vec<f32>,
    band_rows: usize,
    next_window: usize,
}

impl BandStitcher {
    pub fn new(layout: WindowLayout, classes: usize) -> Self {
        let band_rows = layout.window.0.min(layout.scene.0);
        let width = layout.scene.1;
        Self {
            weights: layout.weights(),
            classes,
            band_start: 0,
            sums: vec![0.0; classes * band_rows * width],
            weight_sums: vec![0.0; band_rows * width],
            band_rows,
            next_window: 0,
            layout,
        }
    }

    /// Adds the prediction of the next window (`classes x window.0 x window.1`) and returns the
    /// rows that became final (the last window flushes everything).
    pub fn add(&mut self, window: Window, probs: &[f32]) -> Result<Option<FinishedRows>> {
        let (wh, ww) = self.layout.window;
        let (sh, sw) = self.layout.scene;
        let ncols = self.layout.cols.len();
        let expected = self.layout.windows().nth(self.next_window).ok_or_else(|| {
            anyhow::anyhow!("all {} windows were already added", self.layout.len())
        })?;
        ensure!(
            window == expected,
            "window {window:?} out of order, expected {expected:?}"
        );
        // Grid windows start inside the scene.
        let (row, col) = (window.y as usize, window.x as usize);
        ensure!(
            probs.len() == self.classes * wh * ww,
            "window prediction has {} values",
            probs.len()
        );
        ensure!(row >= self.band_start, "window above the band");
        for y in 0..wh {
            let scene_row = row + y;
            if scene_row >= sh {
                break;
            }
            let band_row = scene_row - self.band_start;
            ensure!(band_row < self.band_rows, "window reaches below the band");
            for x in 0..ww.min(sw - col) {
                let w = self.weights[y * ww + x];
                let at = band_row * sw + col + x;
                self.weight_sums[at] += w;
                for c in 0..self.classes {
                    self.sums[c * self.band_rows * sw + at] += w * probs[(c * wh + y) * ww + x];
                }
            }
        }
        self.next_window += 1;
        let last_in_row = self.next_window.is_multiple_of(ncols);
        if !last_in_row {
            return Ok(None);
        }
        // Rows above the next window row are final.
        let done_until = match self.layout.rows.get(self.next_window / ncols) {
            Some(&next_row) => next_row,
            None => sh,
        };
        Ok(Some(self.take_rows(done_until)))
    }

    fn take_rows(&mut self, until: usize) -> FinishedRows {
        let width = self.layout.scene.1;
        let rows = until.saturating_sub(self.band_start).min(self.band_rows);
        let mut probs = Vec::with_capacity(self.classes * rows * width);
        for c in 0..self.classes {
            let plane = &self.sums[c * self.band_rows * width..][..rows * width];
            probs.extend(plane.iter().zip(&self.weight_sums).map(|(s, w)| s / w));
        }
        // Shift the band up by `rows`.
        let keep = self.band_rows - rows;
        for c in 0..self.classes {
            let plane = &mut self.sums[c * self.band_rows * width..][..self.band_rows * width];
            plane.copy_within(rows * width.., 0);
            plane[keep * width..].fill(0.0);
        }
        self.weight_sums.copy_within(rows * width.., 0);
        self.weight_sums[keep * width..].fill(0.0);
        let first_row = self.band_start;
        self.band_start += rows;
        FinishedRows {
            first_row,
            rows,
            probs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_covers_the_scene_with_regular_strides() {
        let g = WindowLayout::new((100, 40), (32, 32), 8).unwrap();
        assert_eq!(g.rows, vec![0, 24, 48, 72]);
        assert_eq!(g.cols, vec![0, 24]);
        let small = WindowLayout::new((10, 5), (32, 32), 8).unwrap();
        assert_eq!(small.len(), 1);
        assert!(WindowLayout::new((10, 10), (32, 32), 17).is_err());
    }

    #[test]
    fn reflection_mirrors_without_repeating_the_edge() {
        let idx: Vec<usize> = (-3..8).map(|i| reflect_index(i, 4)).collect();
        assert_eq!(idx, vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1]);
        let padded = pad_reflect(&[1.0, 2.0, 3.0, 4.0], 1, 2, 2, 3, 3);
        assert_eq!(padded, vec![1.0, 2.0, 1.0, 3.0, 4.0, 3.0, 1.0, 2.0, 1.0]);
    }

    /// A fake model whose output depends on the window, so blends are visible.
    fn fake_window(classes: usize, win: (usize, usize), w: Window) -> Vec<f32> {
        (0..classes * win.0 * win.1)
            .map(|i| ((w.y * 7 + w.x * 3) as usize + i) % 11)
            .map(|v| v as f32)
            .collect()
    }

    #[test]
    fn stitched_rows_equal_single_windows_where_weights_are_one() {
        let (classes, win, overlap) = (2, (8, 8), 2);
        let layout = WindowLayout::new((21, 17), win, overlap).unwrap();
        let weights = layout.weights();
        let mut stitcher = BandStitcher::new(layout.clone(), classes);
        let mut out = vec![f32::NAN; classes * 21 * 17];
        let mut emitted = 0;
        for w in layout.windows() {
            if let Some(done) = stitcher.add(w, &fake_window(classes, win, w)).unwrap() {
                assert_eq!(done.first_row, emitted, "rows come out in order, once");
                for c in 0..classes {
                    for r in 0..done.rows {
                        for x in 0..17 {
                            out[(c * 21 + done.first_row + r) * 17 + x] =
                                done.probs[(c * done.rows + r) * 17 + x];
                        }
                    }
                }
                emitted += done.rows;
            }
        }
        assert_eq!(emitted, 21);
        assert!(out.iter().all(|v| v.is_finite()));
        for w in layout.windows() {
            let own = fake_window(classes, win, w);
            for y in 0..win.0 {
                for x in 0..win.1 {
                    let (sy, sx) = (w.y as usize + y, w.x as usize + x);
                    if sy >= 21 || sx >= 17 || weights[y * win.1 + x] < 1.0 {
                        continue;
                    }
                    for c in 0..classes {
                        assert_eq!(
                            out[(c * 21 + sy) * 17 + sx],
                            own[(c * win.0 + y) * win.1 + x]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn constant_predictions_stay_constant_across_seams() {
        let layout = WindowLayout::new((30, 30), (16, 16), 4).unwrap();
        let mut stitcher = BandStitcher::new(layout.clone(), 1);
        for w in layout.windows() {
            if let Some(done) = stitcher.add(w, &vec![0.25; 256]).unwrap() {
                assert!(done.probs.iter().all(|p| (p - 0.25).abs() < 1e-6));
            }
        }
    }

    #[test]
    fn out_of_order_windows_are_refused() {
        let layout = WindowLayout::new((30, 30), (16, 16), 4).unwrap();
        let mut stitcher = BandStitcher::new(layout, 1);
        let err = stitcher
            .add(Window::new(0, 12, 16, 16), &[0.0; 256])
            .unwrap_err();
        assert!(err.to_string().contains("out of order"));
    }
}
