//! Figures of `dis2 eval`: prediction overlays (image | reference | prediction | errors) and the
//! CFLM class-wise attention grids (the paper's qualitative figure); the validation images of a
//! training run's TensorBoard log; and the one mapping of class ids to colours, which the
//! predict preview uses too. Pixels are composed here as RGB bytes; plotters only writes the
//! text; `report::write_png` writes atomically.

use anyhow::{anyhow, ensure, Result};
use plotters::prelude::*;
use std::path::Path;
use tch::{Kind, Tensor};

use crate::data::config::ClassInfo;
use crate::data::synth::{SceneRasters, SAR_NODATA};
use crate::data::synth_gaps::DSM_NODATA;
use crate::report::text_width;

/// Pixels between panels.
const GAP: usize = 6;
/// Height of the title line above the panels.
const HEADER: usize = 26;
/// Smallest width of the class-name column of an attention grid (wider for longer names).
const NAME_COLUMN: usize = 130;
/// Height of one legend line / of the colour bar strip.
const LINE: usize = 22;
/// Smallest long side of an overlay panel: smaller scenes are enlarged by a whole factor
/// (nearest neighbour) so that their pixels and the panel titles stay legible.
const MIN_PANEL: usize = 192;
/// Font size of legend entries and class names.
const NAME_SIZE: u32 = 13;
/// Height of the column titles between the top row and the class rows of an attention grid.
const COLUMN_TITLE: usize = 18;
/// Colour of a wrongly classified pixel in the error panel.
pub(crate) const ERROR_COLOUR: [u8; 3] = [255, 0, 255];
/// Colour of unlabelled / unpredicted pixels.
const NONE_COLOUR: [u8; 3] = [0, 0, 0];

/// A text to draw: the text, x, y (top-left, pixels) and font size.
type TextItem = (String, usize, usize, u32);

/// An RGB image being composed.
pub(crate) struct Canvas {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            rgb: vec![255; width * height * 3],
        }
    }

    /// Copies a `w x h` RGB panel with its top-left corner at (x, y).
    fn paste(&mut self, x: usize, y: usize, w: usize, h: usize, panel: &[[u8; 3]]) {
        for (r, row) in panel.chunks(w).take(h).enumerate() {
            let at = ((y + r) * self.width + x) * 3;
            for (c, px) in row.iter().enumerate() {
                self.rgb[at + c * 3..at + c * 3 + 3].copy_from_slice(px);
            }
        }
    }

    /// A `side x side` square of `colour` with a grey outline (white classes stay visible).
    fn swatch(&mut self, x: usize, y: usize, side: usize, colour: [u8; 3]) {
        self.paste(x, y, side, side, &vec![[96, 96, 96]; side * side]);
        let inner = side.saturating_sub(2);
        self.paste(x + 1, y + 1, inner, inner, &vec![colour; inner * inner]);
    }

    /// Draws the swatches of a class legend flowing over the canvas's width from row `top`;
    /// returns the names as text items for [`Canvas::text`].
    fn legend(&mut self, entries: &[ClassInfo], top: usize) -> Vec<TextItem> {
        let (at, _) = legend_layout(entries, self.width);
        let mut text = Vec::with_capacity(entries.len());
        for (class, (x, y)) in entries.iter().zip(at) {
            let y = top + y;
            self.swatch(x, y + 3, 14, class.colour);
            text.push((class.name.clone(), x + 18, y + 3, NAME_SIZE));
        }
        text
    }

    /// Draws text items `(text, x, y, size)` in black.
    fn text(&mut self, items: &[TextItem]) -> Result<()> {
        let (w, h) = (u32::try_from(self.width)?, u32::try_from(self.height)?);
        let root = BitMapBackend::with_buffer(&mut self.rgb, (w, h)).into_drawing_area();
        for (text, x, y, size) in items {
            root.draw(&Text::new(
                text.as_str(),
                (*x as i32, *y as i32),
                ("sans-serif", *size).into_font(),
            ))
            .map_err(|e| anyhow!("drawing failed: {e:?}"))?;
        }
        root.present()
            .map_err(|e| anyhow!("drawing failed: {e:?}"))?;
        Ok(())
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        crate::report::write_png(
            path,
            &self.rgb,
            u32::try_from(self.width)?,
            u32::try_from(self.height)?,
        )
    }
}

/// A linear stretch of each band between its 2nd and 98th percentile over the valid pixels, to
/// RGB (one band: grey; two: the first). `bands` planes of `n` values; invalid pixels black.
pub(crate) fn stretch_rgb(bands: &[Vec<f32>], valid: &[bool]) -> Vec<[u8; 3]> {
    let n = valid.len();
    let stretched: Vec<Vec<u8>> = bands
        .iter()
        .take(3)
        .map(|plane| {
            let mut v: Vec<f32> = plane
                .iter()
                .zip(valid)
                .filter(|(x, &ok)| ok && x.is_finite())
                .map(|(&x, _)| x)
                .collect();
            if v.is_empty() {
                return vec![0; n];
            }
            v.sort_by(f32::total_cmp);
            let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
            let (lo, hi) = (at(0.02), at(0.98));
            let span = (hi - lo).max(f32::EPSILON);
            plane
                .iter()
                .map(|&x| ((x - lo) / span * 255.0).clamp(0.0, 255.0) as u8)
                .collect()
        })
        .collect();
    (0..n)
        .map(|i| {
            if !valid[i] {
                return NONE_COLOUR;
            }
            match stretched.len() {
                0 => NONE_COLOUR,
                1 | 2 => [stretched[0][i]; 3],
                _ => [stretched[0][i], stretched[1][i], stretched[2][i]],
            }
        })
        .collect()
}

/// The colour of class `id` in `table`; ids outside the table (ignore index, nodata, negative
/// values) black.
pub(crate) fn class_colour(id: i64, table: &[ClassInfo]) -> [u8; 3] {
    usize::try_from(id)
        .ok()
        .and_then(|c| table.get(c))
        .map_or(NONE_COLOUR, |t| t.colour)
}

/// Class colours of a label or prediction map (see [`class_colour`]).
pub(crate) fn class_colours(classes: &[i64], table: &[ClassInfo]) -> Vec<[u8; 3]> {
    classes.iter().map(|&c| class_colour(c, table)).collect()
}

/// The TensorBoard image of one validation window: input | reference | prediction side by side,
/// `(rgb, height, width)` with `rgb` the `height x width x 3` bytes (`width` three windows').
/// `input` is the normalised `[C, H, W]` window (its first three bands stretched between their
/// minimum and maximum, one band grey); `labels` and `preds` are `[H, W]` class ids (integer
/// tensors), coloured by `table` with ignored pixels black.
///
/// # Errors
/// When the tensors cannot be read back as bytes and class ids.
pub(crate) fn validation_panels(
    input: &Tensor,
    labels: &Tensor,
    preds: &Tensor,
    table: &[ClassInfo],
) -> Result<(Vec<u8>, usize, usize)> {
    let (h, w) = (labels.size()[0] as usize, labels.size()[1] as usize);
    let input_rgb = min_max_rgb(input)?;
    let flat = |ids: &Tensor| -> Result<Vec<u8>> {
        let ids = Vec::<i64>::try_from(ids.flatten(0, -1))?;
        Ok(class_colours(&ids, table).concat())
    };
    let (label_rgb, pred_rgb) = (flat(labels)?, flat(preds)?);
    let mut rgb = Vec::with_capacity(h * w * 9);
    for y in 0..h {
        for part in [&input_rgb, &label_rgb, &pred_rgb] {
            rgb.extend_from_slice(&part[y * w * 3..(y + 1) * w * 3]);
        }
    }
    Ok((rgb, h, 3 * w))
}

/// The first three bands of a normalised `[C, H, W]` input, stretched to 0..255 between their
/// minimum and maximum (a single band becomes grey); `H x W x 3` bytes.
fn min_max_rgb(x: &Tensor) -> Result<Vec<u8>> {
    let c = x.size()[0];
    let bands = if c >= 3 {
        x.narrow(0, 0, 3)
    } else {
        x.narrow(0, 0, 1).repeat([3, 1, 1])
    };
    let lo = bands.min().double_value(&[]);
    let hi = bands.max().double_value(&[]);
    let scaled = ((bands - lo) * (255.0 / (hi - lo).max(1e-6))).clamp(0.0, 255.0);
    let hwc = scaled.permute([1, 2, 0]).contiguous().to_kind(Kind::Uint8);
    Ok(Vec::<u8>::try_from(hwc.flatten(0, -1))?)
}

/// A darkened grey version of an RGB panel, the background of error and attention panels.
fn grey(rgb: &[[u8; 3]]) -> Vec<[u8; 3]> {
    rgb.iter()
        .map(|p| {
            let l = (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32) * 0.6;
            [l as u8; 3]
        })
        .collect()
}

/// Viridis at `t` in [0, 1] (linear between nine samples of matplotlib's table).
pub(crate) fn viridis(t: f32) -> [u8; 3] {
    const STOPS: [[f32; 3]; 9] = [
        [68.0, 1.0, 84.0],
        [71.0, 44.0, 122.0],
        [59.0, 81.0, 139.0],
        [44.0, 113.0, 142.0],
        [33.0, 144.0, 141.0],
        [39.0, 173.0, 129.0],
        [92.0, 200.0, 99.0],
        [170.0, 220.0, 50.0],
        [253.0, 231.0, 37.0],
    ];
    let x = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f32;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f32;
    let mix = |c: usize| (STOPS[i][c] * (1.0 - f) + STOPS[i + 1][c] * f).round() as u8;
    [mix(0), mix(1), mix(2)]
}

/// One attention map as a heat map over a grey background: min-max scaled per map (the maps
/// of one figure are not comparable in absolute terms; each sums to 1 over its pixels).
pub(crate) fn heat_panel(map: &[f32], background: &[[u8; 3]]) -> Vec<[u8; 3]> {
    let (lo, hi) = map
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let span = hi - lo;
    map.iter()
        .zip(grey(background))
        .map(|(&v, g)| {
            let t = if span > 0.0 { (v - lo) / span } else { 0.0 };
            let h = viridis(t);
            let mix = |c: usize| (0.65 * h[c] as f32 + 0.35 * g[c] as f32) as u8;
            [mix(0), mix(1), mix(2)]
        })
        .collect()
}

/// Where the entries of a class legend go when it flows over lines of `width` pixels: the
/// top-left corner of each entry (relative to the legend) and the number of lines.
fn legend_layout(table: &[ClassInfo], width: usize) -> (Vec<(usize, usize)>, usize) {
    let mut at = Vec::with_capacity(table.len());
    let (mut x, mut line) = (GAP, 0);
    for class in table {
        let entry = 18 + text_width(&class.name, NAME_SIZE) + 14;
        if x > GAP && x + entry > width {
            x = GAP;
            line += 1;
        }
        at.push((x, line * LINE));
        x += entry;
    }
    (at, if table.is_empty() { 0 } else { line + 1 })
}

/// `table` and, last, black with what it means in the figure (`no label or no prediction`,
/// `nodata`): the entries of a class legend.
pub(crate) fn with_black(table: &[ClassInfo], black: &str) -> Vec<ClassInfo> {
    let mut entries = table.to_vec();
    entries.push(ClassInfo {
        name: black.to_string(),
        colour: NONE_COLOUR,
    });
    entries
}

/// What black means in an overlay's reference and prediction panels.
const OVERLAY_BLACK: &str = "black: no label / no prediction";
/// What black means in a predict preview.
const PREVIEW_BLACK: &str = "nodata (no branch had data)";

/// The size of a class map preview of `w x h` pixels with its legend below ([`preview_png`]).
pub fn preview_size(w: usize, h: usize, table: &[ClassInfo]) -> (usize, usize) {
    let entries = with_black(table, PREVIEW_BLACK);
    let width = w.max(widest_entry(&entries) + 2 * GAP);
    let (_, lines) = legend_layout(&entries, width);
    (width, h + GAP + lines * LINE + GAP)
}

/// A class map (`w x h` pixels, already coloured; black where no branch classified) with a
/// legend below it: each class's colour and name from the checkpoint's `table`, and black as
/// nodata. The map sits at the top-left corner, at its own size.
///
/// # Errors
/// `rgb` not `w x h` pixels; drawing or writing failures (naming `path`).
pub(crate) fn preview_png(
    path: &Path,
    rgb: &[[u8; 3]],
    (w, h): (usize, usize),
    table: &[ClassInfo],
) -> Result<()> {
    ensure!(rgb.len() == w * h, "a preview of {w}x{h} pixels expected");
    let entries = with_black(table, PREVIEW_BLACK);
    let (width, height) = preview_size(w, h, table);
    let mut canvas = Canvas::new(width, height);
    canvas.paste(0, 0, w, h, rgb);
    let text = canvas.legend(&entries, h + GAP);
    canvas.text(&text)?;
    canvas.write(path)
}

/// The width of the widest legend entry (a swatch and the whole name).
fn widest_entry(table: &[ClassInfo]) -> usize {
    table
        .iter()
        .map(|c| 18 + text_width(&c.name, NAME_SIZE) + 14)
        .max()
        .unwrap_or(0)
}

/// The whole factor an overlay panel of `w x h` pixels is enlarged by (1 when large enough).
pub(crate) fn overlay_scale(w: usize, h: usize) -> usize {
    MIN_PANEL.div_ceil(w.max(h).max(1)).max(1)
}

/// Nearest-neighbour resampling of a `w x h` panel to `ow x oh`.
pub(crate) fn resize_nearest(
    panel: &[[u8; 3]],
    w: usize,
    h: usize,
    ow: usize,
    oh: usize,
) -> Vec<[u8; 3]> {
    (0..oh)
        .flat_map(|y| {
            let sy = (y * h / oh).min(h - 1);
            (0..ow).map(move |x| panel[sy * w + (x * w / ow).min(w - 1)])
        })
        .collect()
}

/// What an overlay shows, at its (possibly downsampled) size.
pub(crate) struct OverlayData<'a> {
    pub width: usize,
    pub height: usize,
    /// The stretched optical image.
    pub image: &'a [[u8; 3]],
    /// Reference class ids as read (ignore index and anything out of range drawn black).
    pub labels: &'a [i64],
    /// Predicted class ids (nodata drawn black).
    pub preds: &'a [i64],
    /// The labels as scored (after erosion and nodata): where they differ from `preds`, an
    /// error; where they are out of range, not scored.
    pub scored: &'a [i64],
}

/// The size of an overlay figure of `w x h` panels (before enlarging, see [`overlay_scale`])
/// with a legend of `table`'s classes.
pub fn overlay_size(w: usize, h: usize, table: &[ClassInfo]) -> (usize, usize) {
    let k = overlay_scale(w, h);
    let entries = with_black(table, OVERLAY_BLACK);
    let width = (4 * w * k + 5 * GAP).max(widest_entry(&entries) + 2 * GAP);
    let (_, lines) = legend_layout(&entries, width);
    (width, HEADER + h * k + GAP + lines * LINE + GAP)
}

/// Image | reference | prediction | errors (wrong pixels in magenta over the grey image), with
/// a legend of the class colours and of black (no label in the reference, no prediction where no
/// branch had data); panels of small scenes enlarged (see [`overlay_scale`]).
pub(crate) fn overlay_png(path: &Path, d: &OverlayData, table: &[ClassInfo]) -> Result<()> {
    let (w, h) = (d.width, d.height);
    let n = w * h;
    ensure!(
        d.image.len() == n && d.labels.len() == n && d.preds.len() == n && d.scored.len() == n,
        "overlay panels of {w}x{h} pixels expected"
    );
    let (width, height) = overlay_size(w, h, table);
    let k = overlay_scale(w, h);
    let (pw, ph) = (w * k, h * k);
    let mut canvas = Canvas::new(width, height);
    let k = table.len() as i64;
    let errors: Vec<[u8; 3]> = grey(d.image)
        .into_iter()
        .zip(d.scored.iter().zip(d.preds))
        .map(|(g, (&l, &p))| {
            if (0..k).contains(&l) && l != p {
                ERROR_COLOUR
            } else {
                g
            }
        })
        .collect();
    let panels = [
        ("image", d.image.to_vec()),
        ("reference", class_colours(d.labels, table)),
        ("prediction", class_colours(d.preds, table)),
        ("errors (magenta)", errors),
    ];
    let mut text = Vec::new();
    for (i, (title, panel)) in panels.iter().enumerate() {
        let x = GAP + i * (pw + GAP);
        canvas.paste(x, HEADER, pw, ph, &resize_nearest(panel, w, h, pw, ph));
        text.push((title.to_string(), x, 5, 15));
    }
    text.extend(canvas.legend(&with_black(table, OVERLAY_BLACK), HEADER + ph + GAP));
    canvas.text(&text)?;
    canvas.write(path)
}

/// Colours of the gaps figure's cloud mask: cloud, shadow.
const CLOUD_COLOURS: [[u8; 3]; 2] = [[0, 200, 255], [255, 140, 0]];
/// Colour of the gaps figure's nodata (black would hide among low heights and dark SAR).
const GAP_NODATA: [u8; 3] = [220, 0, 0];

/// One scene of `dis2 synth --gaps` ([`SceneRasters::draw_gaps`]) as a PNG: the
/// optical R, G, B with its clouds | the cloud mask (cloud cyan, shadow orange over the grey
/// image) | the SAR (dB, stretched) | the DSM (viridis over 0 to the highest metre), nodata red;
/// small scenes enlarged as overlays are (see [`overlay_scale`]).
///
/// # Errors
/// A scene without a cloud mask (drawn without gaps), or a file that cannot be written.
pub fn gaps_png(path: &Path, scene: &SceneRasters) -> Result<()> {
    let n = scene.size;
    let npx = n * n;
    let mask = scene
        .cloud_mask
        .as_ref()
        .ok_or_else(|| anyhow!("the scene has no cloud mask: draw its gaps first"))?;
    let image: Vec<[u8; 3]> = (0..npx)
        .map(|i| std::array::from_fn(|b| scene.optical[b * npx + i]))
        .collect();
    let masked: Vec<[u8; 3]> = grey(&image)
        .into_iter()
        .zip(mask)
        .map(|(g, &m)| match m {
            0 => g,
            m => CLOUD_COLOURS[usize::from(m.min(2)) - 1],
        })
        .collect();
    let sar_valid: Vec<bool> = scene.sar.iter().map(|&v| v != SAR_NODATA).collect();
    let sar: Vec<[u8; 3]> = stretch_rgb(std::slice::from_ref(&scene.sar), &sar_valid)
        .into_iter()
        .zip(&sar_valid)
        .map(|(c, &ok)| if ok { c } else { GAP_NODATA })
        .collect();
    let top = scene
        .dsm
        .iter()
        .filter(|&&v| v != DSM_NODATA)
        .fold(1.0f32, |a, &v| a.max(v));
    let dsm: Vec<[u8; 3]> = scene
        .dsm
        .iter()
        .map(|&v| {
            if v == DSM_NODATA {
                GAP_NODATA
            } else {
                viridis(v / top)
            }
        })
        .collect();
    let k = overlay_scale(n, n);
    let pw = n * k;
    let mut canvas = Canvas::new(GAP + 4 * (pw + GAP), HEADER + pw + GAP + LINE);
    let panels = [
        ("optical (R, G, B)", image),
        ("cloud mask", masked),
        ("SAR (dB)", sar),
        ("DSM (m)", dsm),
    ];
    let mut text = Vec::new();
    for (i, (title, panel)) in panels.iter().enumerate() {
        let x = GAP + i * (pw + GAP);
        canvas.paste(x, HEADER, pw, pw, &resize_nearest(panel, n, n, pw, pw));
        text.push((title.to_string(), x, 5, 15));
    }
    let legend = [
        ("cloud", CLOUD_COLOURS[0]),
        ("cloud shadow", CLOUD_COLOURS[1]),
        ("nodata", GAP_NODATA),
    ];
    let (mut x, y) = (GAP, HEADER + pw + GAP);
    for (name, colour) in legend {
        canvas.swatch(x, y + 3, 14, colour);
        text.push((name.to_string(), x + 18, y + 3, NAME_SIZE));
        x += 18 + text_width(name, NAME_SIZE) + 14;
    }
    canvas.text(&text)?;
    canvas.write(path)
}

/// One window of an attention figure.
pub(crate) struct AttentionData<'a> {
    /// Panel size (the crop).
    pub width: usize,
    pub height: usize,
    pub image: &'a [[u8; 3]],
    pub labels: &'a [i64],
    /// One `(column title, K maps of width x height)` per branch: the teacher, then the branch
    /// `--drop` selects.
    pub columns: Vec<(String, Vec<Vec<f32>>)>,
    pub title: String,
}

/// The side of a panel in an attention figure: the crop, scaled so that its long side lies in
/// 128..=256 pixels. Returns `(width, height)`.
pub fn attention_cell(width: usize, height: usize) -> (usize, usize) {
    let long = width.max(height).max(1);
    let target = long.clamp(128, 256);
    (width * target / long, height * target / long)
}

/// The width of the class-name column of an attention grid: room for a swatch and the longest
/// class name (at least [`NAME_COLUMN`]).
pub(crate) fn name_column(table: &[ClassInfo]) -> usize {
    let longest = table
        .iter()
        .map(|c| text_width(&c.name, NAME_SIZE))
        .max()
        .unwrap_or(0);
    NAME_COLUMN.max(GAP + 16 + longest + GAP)
}

/// The distance between the columns of an attention grid: a panel, or the widest column title
/// (branch labels such as `teacher-fill[dsm+sar]`) when that is wider, and a gap.
fn column_pitch(cell_width: usize, titles: &[String]) -> usize {
    let widest = titles.iter().map(|t| text_width(t, 13)).max().unwrap_or(0);
    cell_width.max(widest) + GAP
}

/// The size of an attention figure for a `width x height` crop, one column per branch titled
/// `titles`, and the classes of `table`.
pub fn attention_size(
    width: usize,
    height: usize,
    titles: &[String],
    table: &[ClassInfo],
) -> (usize, usize) {
    let (cw, ch) = attention_cell(width, height);
    let panels = titles.len().max(2);
    (
        name_column(table) + panels * column_pitch(cw, titles),
        HEADER + (table.len() + 1) * (ch + GAP) + COLUMN_TITLE + LINE + GAP,
    )
}

/// The qualitative CFLM figure: the input and the reference at the top, then one row per class
/// with that class's attention heat map of each branch over the grey input, and a colour bar.
pub(crate) fn attention_png(path: &Path, d: &AttentionData, table: &[ClassInfo]) -> Result<()> {
    let (w, h) = (d.width, d.height);
    let n = w * h;
    ensure!(
        d.image.len() == n && d.labels.len() == n,
        "attention figure panels of {w}x{h} pixels expected"
    );
    for (name, maps) in &d.columns {
        ensure!(
            maps.len() == table.len() && maps.iter().all(|m| m.len() == n),
            "{name}: {} maps of {w}x{h} expected",
            table.len()
        );
    }
    let (cw, ch) = attention_cell(w, h);
    let titles: Vec<String> = d.columns.iter().map(|(t, _)| t.clone()).collect();
    let (width, height) = attention_size(w, h, &titles, table);
    let names = name_column(table);
    let pitch = column_pitch(cw, &titles);
    let mut canvas = Canvas::new(width, height);
    let column_x = |c: usize| names + c * pitch;
    let row_y = |r: usize| HEADER + r * (ch + GAP) + if r > 0 { COLUMN_TITLE } else { 0 };
    let mut text = vec![(d.title.clone(), GAP, 5, 15)];
    canvas.paste(
        column_x(0),
        row_y(0),
        cw,
        ch,
        &resize_nearest(d.image, w, h, cw, ch),
    );
    let reference = class_colours(d.labels, table);
    canvas.paste(
        column_x(1),
        row_y(0),
        cw,
        ch,
        &resize_nearest(&reference, w, h, cw, ch),
    );
    text.push(("input | reference".to_string(), GAP, row_y(0) + ch / 2, 13));
    for (c, (name, maps)) in d.columns.iter().enumerate() {
        text.push((name.clone(), column_x(c), row_y(1) - COLUMN_TITLE + 1, 13));
        for (k, map) in maps.iter().enumerate() {
            let panel = heat_panel(map, d.image);
            canvas.paste(
                column_x(c),
                row_y(k + 1),
                cw,
                ch,
                &resize_nearest(&panel, w, h, cw, ch),
            );
        }
    }
    for (k, class) in table.iter().enumerate() {
        let y = row_y(k + 1) + ch / 2 - 7;
        canvas.swatch(GAP, y, 12, class.colour);
        text.push((class.name.clone(), GAP + 16, y, NAME_SIZE));
    }
    // Colour bar: low .. high of each map.
    let bar_y = row_y(table.len() + 1);
    let bar_w = width - names - GAP;
    let bar: Vec<[u8; 3]> = (0..12)
        .flat_map(|_| (0..bar_w).map(|x| viridis(x as f32 / (bar_w - 1).max(1) as f32)))
        .collect();
    canvas.paste(names, bar_y + 4, bar_w, 12, &bar);
    text.push(("attention: low .. high".to_string(), GAP, bar_y + 3, 12));
    canvas.text(&text)?;
    canvas.write(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(k: usize) -> Vec<ClassInfo> {
        (0..k)
            .map(|i| ClassInfo {
                name: format!("class {i}"),
                colour: [40 * i as u8, 200, 10],
            })
            .collect()
    }

    #[test]
    fn long_class_names_widen_legends_and_name_columns_instead_of_being_cut() {
        let long = vec![
            ClassInfo {
                name: "impervious surface with a very long name".into(),
                colour: [1, 2, 3],
            },
            ClassInfo {
                name: "car".into(),
                colour: [4, 5, 6],
            },
        ];
        let name = text_width(&long[0].name, NAME_SIZE);
        assert!(name > 200, "{name} px");
        // A legend line is at least as wide as its widest entry; the name column holds it.
        let (w, _) = overlay_size(2, 2, &long);
        assert!(w >= 18 + name + 2 * GAP, "{w}");
        assert!(name_column(&long) >= 16 + name + 2 * GAP);
        assert_eq!(name_column(&table(3)), NAME_COLUMN);
        // Entries flow onto a second line when the first is full.
        let (at, lines) = legend_layout(&long, 18 + name + 14 + GAP + 10);
        assert_eq!((lines, at[1]), (2, (GAP, LINE)));
        // A wide column title widens the attention grid's columns.
        let titles = [
            "teacher".to_string(),
            "teacher-fill[dsm+optical+sar]".to_string(),
        ];
        let (wide, _) = attention_size(64, 64, &titles, &table(3));
        let (narrow, _) = attention_size(64, 64, &titles[..1], &table(3));
        assert!(
            wide >= NAME_COLUMN + 2 * (text_width(&titles[1], 13) + GAP),
            "{wide}"
        );
        assert_eq!(narrow, NAME_COLUMN + 2 * (attention_cell(64, 64).0 + GAP));
    }

    #[test]
    fn class_ids_outside_the_table_are_black() {
        let t = table(3);
        assert_eq!(class_colour(2, &t), t[2].colour);
        for id in [-1, 3, 255] {
            assert_eq!(class_colour(id, &t), NONE_COLOUR, "id {id}");
        }
        assert_eq!(class_colours(&[0, 255], &t), vec![t[0].colour, NONE_COLOUR]);
    }

    #[test]
    fn validation_panels_put_input_reference_and_prediction_side_by_side() {
        let t = table(3);
        // One band, 1 x 2 pixels: its minimum black, its maximum white.
        let input = Tensor::from_slice(&[-1.0f32, 3.0]).reshape([1, 1, 2]);
        let labels = Tensor::from_slice(&[1i64, 255]).reshape([1, 2]);
        let preds = Tensor::from_slice(&[2i64, 0]).reshape([1, 2]);
        let (rgb, h, w) = validation_panels(&input, &labels, &preds, &t).unwrap();
        assert_eq!((h, w, rgb.len()), (1, 6, 18));
        let px: Vec<[u8; 3]> = rgb.chunks(3).map(|c| [c[0], c[1], c[2]]).collect();
        let want = [
            [0, 0, 0],
            [255, 255, 255],
            t[1].colour,
            NONE_COLOUR,
            t[2].colour,
            t[0].colour,
        ];
        assert_eq!(px, want);
    }

    #[test]
    fn stretch_maps_percentiles_to_the_byte_range() {
        let plane: Vec<f32> = (0..101).map(|i| i as f32).collect();
        let mut valid = vec![true; 101];
        valid[100] = false;
        let rgb = stretch_rgb(&[plane], &valid);
        assert_eq!(rgb[0], [0, 0, 0], "below the 2nd percentile");
        assert_eq!(rgb[99], [255, 255, 255], "above the 98th percentile");
        assert_eq!(rgb[100], NONE_COLOUR, "invalid");
        assert!(rgb[50][0] > 100 && rgb[50][0] < 155);
    }

    #[test]
    fn viridis_ends_and_heat_panel_scales_each_map() {
        assert_eq!(viridis(0.0), [68, 1, 84]);
        assert_eq!(viridis(1.0), [253, 231, 37]);
        let bg = vec![[0u8; 3]; 3];
        let p = heat_panel(&[0.1, 0.2, 0.7], &bg);
        assert_eq!(p[0], [(0.65f32 * 68.0) as u8, 0, (0.65f32 * 84.0) as u8]);
        assert_eq!(
            p[2],
            [
                (0.65f32 * 253.0) as u8,
                (0.65f32 * 231.0) as u8,
                (0.65f32 * 37.0) as u8
            ]
        );
    }

    /// A 2 x 2 overlay: two correct pixels, one error and one unscored (ignore index) pixel.
    fn two_by_two_overlay() -> OverlayData<'static> {
        OverlayData {
            width: 2,
            height: 2,
            image: &[[100u8; 3]; 4],
            labels: &[0, 1, 255, 1],
            preds: &[0, 0, 1, 1],
            scored: &[0, 1, 255, 1],
        }
    }

    #[test]
    fn overlay_marks_errors_and_has_the_documented_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.png");
        let data = two_by_two_overlay();
        overlay_png(&path, &data, &table(3)).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let (w, h) = overlay_size(2, 2, &table(3));
        assert_eq!((img.width() as usize, img.height() as usize), (w, h));
        // A 2 x 2 scene is drawn 96 times larger: each pixel a 96 x 96 square.
        let k = overlay_scale(2, 2);
        assert_eq!(k, 96);
        let err_x = (GAP + 3 * (2 * k + GAP)) as u32;
        let (top, k) = (HEADER as u32, k as u32);
        assert_eq!(
            img.get_pixel(err_x + k + k / 2, top + k / 2).0,
            ERROR_COLOUR,
            "1 predicted 0"
        );
        assert_ne!(img.get_pixel(err_x + k / 2, top).0, ERROR_COLOUR, "correct");
        assert_ne!(
            img.get_pixel(err_x, top + k + 1).0,
            ERROR_COLOUR,
            "not scored"
        );
        let bad = OverlayData {
            preds: &[0],
            ..data
        };
        assert!(overlay_png(&path, &bad, &table(3)).is_err());
    }

    /// The swatch colours of a legend drawn from row `top` of `img`, in entry order.
    fn swatches(img: &image::RgbImage, entries: &[ClassInfo], top: usize) -> Vec<[u8; 3]> {
        let (at, _) = legend_layout(entries, img.width() as usize);
        at.iter()
            .map(|&(x, y)| img.get_pixel((x + 7) as u32, (top + y + 10) as u32).0)
            .collect()
    }

    /// The preview: the map at the top-left at its own size, a legend below with every class's
    /// swatch and black explained as nodata, its names drawn beside the swatches.
    #[test]
    fn preview_has_the_map_and_a_legend_of_classes_and_nodata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        let t = table(3);
        let (w, h) = (40, 20);
        let rgb: Vec<[u8; 3]> = (0..w * h)
            .map(|i| if i % w < 20 { t[2].colour } else { NONE_COLOUR })
            .collect();
        preview_png(&path, &rgb, (w, h), &t).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let (width, height) = preview_size(w, h, &t);
        assert_eq!(
            (img.width() as usize, img.height() as usize),
            (width, height)
        );
        assert!(width > w && height > h + LINE, "{width}x{height}");
        assert_eq!(img.get_pixel(0, 0).0, t[2].colour);
        assert_eq!(img.get_pixel(39, 19).0, NONE_COLOUR);
        let entries = with_black(&t, PREVIEW_BLACK);
        assert_eq!(entries.last().unwrap().name, PREVIEW_BLACK);
        let colours: Vec<[u8; 3]> = entries.iter().map(|c| c.colour).collect();
        assert_eq!(swatches(&img, &entries, h + GAP), colours);
        // The names: dark text right of the first swatch.
        let (at, _) = legend_layout(&entries, width);
        let (x, y) = (at[0].0 + 18, h + GAP + at[0].1);
        let dark = (x..x + 40)
            .flat_map(|x| (y..y + LINE).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x as u32, y as u32).0.iter().all(|&c| c < 100))
            .count();
        assert!(dark > 20, "{dark} dark pixels where the first name is");
        assert!(preview_png(&path, &rgb[1..], (w, h), &t).is_err());
    }

    /// The overlay's legend ends with black, explained.
    #[test]
    fn overlay_legend_explains_black() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.png");
        let data = two_by_two_overlay();
        let t = table(3);
        overlay_png(&path, &data, &t).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let entries = with_black(&t, OVERLAY_BLACK);
        let top = HEADER + 2 * overlay_scale(2, 2) + GAP;
        let colours: Vec<[u8; 3]> = entries.iter().map(|c| c.colour).collect();
        assert_eq!(swatches(&img, &entries, top), colours);
        assert!(OVERLAY_BLACK.contains("no label") && OVERLAY_BLACK.contains("no prediction"));
    }

    #[test]
    fn gaps_figure_shows_the_mask_and_the_nodata_in_their_colours() {
        use crate::data::synth::generate_scene;
        use crate::data::synth_gaps::CLOUD;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.png");
        let clean = generate_scene(42, 1, 64);
        let err = gaps_png(&path, &clean).unwrap_err().to_string();
        assert!(err.contains("no cloud mask"), "{err}");
        let mut scene = clean;
        let gaps = scene.draw_gaps(42, 1);
        assert!(gaps.cloud_cover > 0.0 && gaps.sar_edge_fraction > 0.0);
        gaps_png(&path, &scene).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let k = overlay_scale(64, 64);
        let pw = 64 * k;
        assert_eq!(
            (img.width() as usize, img.height() as usize),
            (GAP + 4 * (pw + GAP), HEADER + pw + GAP + LINE)
        );
        let at = |panel: usize, i: usize| {
            let (x, y) = (
                GAP + panel * (pw + GAP) + (i % 64) * k,
                HEADER + (i / 64) * k,
            );
            img.get_pixel(x as u32 + 1, y as u32 + 1).0
        };
        let cloud = gaps.cloud_mask.iter().position(|&m| m == CLOUD).unwrap();
        assert_eq!(at(1, cloud), CLOUD_COLOURS[0]);
        let edge = scene.sar.iter().position(|&v| v == SAR_NODATA).unwrap();
        assert_eq!(at(2, edge), GAP_NODATA);
    }
}
