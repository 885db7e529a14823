//! PNG figures for reports: the confusion matrix and the reliability diagram of an evaluation,
//! and the grouped bar chart of a sweep.
//! Drawn with plotters into memory, encoded with `image`, and written atomically.

use anyhow::{anyhow, ensure, Context, Result};
use image::ImageEncoder;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

use crate::metrics::{Calibration, CalibrationBin, ConfusionMatrix, CALIBRATION_BINS};

/// Encodes `width x height` RGB bytes as PNG and writes them through a temporary file.
pub(crate) fn write_png(path: &Path, rgb: &[u8], width: u32, height: u32) -> Result<()> {
    ensure!(
        rgb.len() == (width * height * 3) as usize,
        "{} bytes for a {width}x{height} RGB image",
        rgb.len()
    );
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(rgb, width, height, image::ExtendedColorType::Rgb8)
        .with_context(|| format!("cannot encode {}", path.display()))?;
    crate::fsutil::write_atomic(path, &bytes)
}

/// The width in pixels of `text` drawn at `size` in the figures' font (plus a pixel either side),
/// so that layouts make room for whole names instead of cutting them.
pub(crate) fn text_width(text: &str, size: u32) -> usize {
    let fallback = text.chars().count() * size as usize * 6 / 10;
    let measured = ("sans-serif", size)
        .into_font()
        .box_size(text)
        .map_or(fallback, |(w, _)| w as usize);
    measured + 2
}

fn draw_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e:?}")
}

/// Title of the confusion matrix figure.
const CONFUSION_TITLE: &str = "Confusion matrix (rows: reference, share of the row)";

/// The layout of a confusion matrix figure: the left margin (row names), the bottom margin
/// (column names, rotated) and the whole size, wide and tall enough for every name in full.
pub(crate) fn confusion_layout(class_names: &[String]) -> (u32, u32, (u32, u32)) {
    let cell = 64u32;
    let k = class_names.len() as u32;
    let longest = |size: u32| {
        class_names
            .iter()
            .map(|n| text_width(n, size) as u32)
            .max()
            .unwrap_or(0)
    };
    let left = 180.max(10 + longest(15) + 12);
    let bottom = 130.max(10 + longest(14) + 40);
    let width = (left + cell * k + 40).max(20 + text_width(CONFUSION_TITLE, 18) as u32 + 20);
    (left, bottom, (width, 70 + cell * k + bottom))
}

/// The confusion matrix as a heat map, rows normalised (recall), with the counts' share printed
/// in each cell. Rows: reference; columns: prediction. Class names are never cut: the margins
/// grow with the longest ([`confusion_layout`]).
pub(crate) fn confusion_matrix_png(
    path: &Path,
    cm: &ConfusionMatrix,
    class_names: &[String],
) -> Result<()> {
    let k = cm.classes();
    ensure!(
        class_names.len() == k,
        "{} class names for {k} classes",
        class_names.len()
    );
    let cell = 64u32;
    let (left, _, (width, height)) = confusion_layout(class_names);
    let mut rgb = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        root.draw(&Text::new(
            CONFUSION_TITLE,
            (20, 20),
            ("sans-serif", 18).into_font(),
        ))
        .map_err(draw_err)?;
        let rows = cm.rows();
        let (x0, y0) = (left as i32, 70i32);
        for (r, row) in rows.iter().enumerate() {
            let total: u64 = row.iter().sum();
            for (c, &count) in row.iter().enumerate() {
                let share = if total > 0 {
                    count as f64 / total as f64
                } else {
                    0.0
                };
                let (x, y) = (x0 + (c as i32) * cell as i32, y0 + (r as i32) * cell as i32);
                let shade = (255.0 * (1.0 - share)) as u8;
                let colour = RGBColor(shade, shade, 255);
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell as i32, y + cell as i32)],
                    colour.filled(),
                ))
                .map_err(draw_err)?;
                let text_colour = if share > 0.5 { WHITE } else { BLACK };
                let label = if total > 0 {
                    format!("{:.2}", share)
                } else {
                    "-".into()
                };
                root.draw(&Text::new(
                    label,
                    (x + 14, y + 24),
                    ("sans-serif", 15).into_font().color(&text_colour),
                ))
                .map_err(draw_err)?;
            }
            root.draw(&Text::new(
                class_names[r].as_str(),
                (10, y0 + (r as i32) * cell as i32 + 24),
                ("sans-serif", 15).into_font(),
            ))
            .map_err(draw_err)?;
        }
        for (c, name) in class_names.iter().enumerate() {
            let x = x0 + (c as i32) * cell as i32 + 8;
            let y = y0 + (k as i32) * cell as i32 + 10;
            let style = ("sans-serif", 14)
                .into_font()
                .transform(FontTransform::Rotate90);
            root.draw(&Text::new(name.as_str(), (x + 20, y), style))
                .map_err(draw_err)?;
        }
        root.draw(&Text::new(
            "prediction",
            (x0, height as i32 - 24),
            ("sans-serif", 15).into_font(),
        ))
        .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    write_png(path, &rgb, width, height)
}

/// Height of a bar chart's title line, drawn over the whole width.
const BAR_TITLE: u32 = 34;
/// Font size of a bar chart's title.
const BAR_TITLE_SIZE: u32 = 17;
/// Font sizes of a bar chart's legend: the series names, the key to the marks.
const LEGEND_SIZE: u32 = 14;
const LEGEND_KEY_SIZE: u32 = 13;
/// The key to a bar chart's marks, below the series names.
const BAR_KEY: [&str; 3] = ["bar: mean over seeds", "whisker: ± 1 sd", "dot: one seed"];

/// The width of the legend column right of a bar chart: the swatch and the longest name or key
/// line, with a small margin, so that the column holds every name whole and nothing more.
fn bar_legend_width(series: &[(String, Vec<Vec<f64>>)]) -> u32 {
    let names = series.iter().map(|(n, _)| 26 + text_width(n, LEGEND_SIZE));
    let keys = BAR_KEY.iter().map(|k| 6 + text_width(k, LEGEND_KEY_SIZE));
    names.chain(keys).max().unwrap_or(0) as u32 + 12
}

/// The value axis of a bar chart fitted to `series` (percent): from below the lowest dot or
/// whisker to above the highest, with a margin of a sixth of their range (at least 2 points),
/// on multiples of 5 within [0, 100]; [0, 100] when there is no value.
pub(crate) fn bar_axis(series: &[(String, Vec<Vec<f64>>)]) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in series.iter().flat_map(|(_, groups)| groups) {
        let Some(stat) = crate::stats::summarize(v) else {
            continue;
        };
        let sd = stat.sd.unwrap_or(0.0);
        for x in v.iter().copied().chain([stat.mean - sd, stat.mean + sd]) {
            (lo, hi) = (lo.min(x), hi.max(x));
        }
    }
    if !lo.is_finite() {
        return (0.0, 100.0);
    }
    let margin = ((hi - lo) / 6.0).max(2.0);
    let bottom = (5.0 * ((lo - margin) / 5.0).floor()).clamp(0.0, 95.0);
    let top = (5.0 * ((hi + margin) / 5.0).ceil()).clamp(bottom + 5.0, 100.0);
    (bottom, top)
}

/// Heights of the reliability diagram's parts: the two title lines, the accuracy chart and the
/// histogram of pixels beneath it.
const RELIABILITY_TITLE: u32 = 62;
const RELIABILITY_CHART: u32 = 470;
const RELIABILITY_HISTOGRAM: u32 = 230;
/// Smallest width of the reliability diagram (wider for a longer title).
const RELIABILITY_WIDTH: u32 = 760;
/// The x axis of both charts of the reliability diagram.
const CONFIDENCE_AXIS: &str = "confidence: maximum class probability (%)";
/// Colours of the reliability diagram: accuracy bars, their outline, the gap to the confidence.
const ACCURACY_BAR: RGBColor = RGBColor(31, 119, 180);
const ACCURACY_EDGE: RGBColor = RGBColor(16, 60, 110);
const CALIBRATION_GAP: RGBColor = RGBColor(214, 39, 40);

/// The size of [`reliability_png`]'s figure for these title lines: wide enough for both.
pub(crate) fn reliability_size(title: &str, subtitle: &str) -> (u32, u32) {
    let text = text_width(title, 17).max(text_width(subtitle, 15)) as u32;
    (
        RELIABILITY_WIDTH.max(text + 40),
        RELIABILITY_TITLE + RELIABILITY_CHART + RELIABILITY_HISTOGRAM,
    )
}

/// The second title line of [`reliability_png`]: the ECE in percent, the pixels and bins.
pub(crate) fn reliability_subtitle(calibration: &Calibration) -> String {
    let ece = (calibration.ece()).map_or("-".to_string(), |e| {
        format!("{} %", crate::metrics::percent(e))
    });
    format!(
        "expected calibration error (ECE) {ece} over {} scored pixels, {CALIBRATION_BINS} bins",
        calibration.pixels()
    )
}

/// The reliability diagram of `calibration` (Guo et al., ICML 2017, Fig. 1): per bin of the
/// confidence, the accuracy of its pixels as a bar against the diagonal of perfect calibration,
/// the gap to the bin's mean confidence shaded red; beneath, each bin's share of the scored
/// pixels. Both axes in percent. `title` (the model and split) heads the figure, the ECE the
/// line below it; the size is [`reliability_size`].
///
/// # Errors
/// Drawing or writing failures.
pub(crate) fn reliability_png(path: &Path, title: &str, calibration: &Calibration) -> Result<()> {
    let subtitle = reliability_subtitle(calibration);
    let (width, height) = reliability_size(title, &subtitle);
    let mut rgb = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        root.draw(&Text::new(title, (20, 12), ("sans-serif", 17).into_font()))
            .map_err(draw_err)?;
        let line = Text::new(subtitle.as_str(), (20, 38), ("sans-serif", 15).into_font());
        root.draw(&line).map_err(draw_err)?;
        let (_, body) = root.split_vertically(RELIABILITY_TITLE);
        let (top, bottom) = body.split_vertically(RELIABILITY_CHART);
        let bins = calibration.bins();
        draw_reliability(&top, &bins)?;
        draw_bin_shares(&bottom, &bins)?;
        root.present().map_err(draw_err)?;
    }
    write_png(path, &rgb, width, height)
}

/// A chart of both reliability panels: x the confidence in percent, y `0..y_max` described by
/// `y_desc`; the same margins, so that the two x axes line up.
fn confidence_chart<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    y_max: f64,
    y_desc: &str,
) -> Result<ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>> {
    let mut chart = ChartBuilder::on(area)
        .margin(14)
        .margin_right(24)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..100.0, 0.0..y_max)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_labels(11)
        .y_labels(6)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .light_line_style(WHITE)
        .x_desc(CONFIDENCE_AXIS)
        .y_desc(y_desc)
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(draw_err)?;
    Ok(chart)
}

/// The upper panel of [`reliability_png`]: accuracy bars, the gap to each bin's mean
/// confidence, the diagonal, and their legend.
fn draw_reliability(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    bins: &[CalibrationBin],
) -> Result<()> {
    let mut chart = confidence_chart(area, 100.0, "accuracy: pixels classified correctly (%)")?;
    let filled: Vec<(f64, f64, f64, f64)> = (bins.iter())
        .filter_map(|b| {
            Some((
                100.0 * b.lower,
                100.0 * b.upper,
                100.0 * b.accuracy?,
                100.0 * b.confidence?,
            ))
        })
        .collect();
    let bars = (filled.iter())
        .map(|&(x0, x1, acc, _)| Rectangle::new([(x0, 0.0), (x1, acc)], ACCURACY_BAR.filled()));
    chart
        .draw_series(bars)
        .map_err(draw_err)?
        .label("accuracy of the bin's pixels")
        .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], ACCURACY_BAR.filled()));
    let edges = (filled.iter()).map(|&(x0, x1, acc, _)| {
        Rectangle::new([(x0, 0.0), (x1, acc)], ACCURACY_EDGE.stroke_width(1))
    });
    chart.draw_series(edges).map_err(draw_err)?;
    let gaps = (filled.iter()).map(|&(x0, x1, acc, conf)| {
        Rectangle::new(
            [(x0, acc.min(conf)), (x1, acc.max(conf))],
            CALIBRATION_GAP.mix(0.35).filled(),
        )
    });
    let gap_legend = CALIBRATION_GAP.mix(0.35).filled();
    chart
        .draw_series(gaps)
        .map_err(draw_err)?
        .label("gap to the bin's mean confidence")
        .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], gap_legend));
    let diagonal = DashedLineSeries::new([(0.0, 0.0), (100.0, 100.0)], 8, 5, BLACK.stroke_width(2));
    chart
        .draw_series(diagonal)
        .map_err(draw_err)?
        .label("perfect calibration: accuracy = confidence")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err)
}

/// The lower panel of [`reliability_png`]: each bin's share of the scored pixels, printed
/// above its bar.
fn draw_bin_shares(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    bins: &[CalibrationBin],
) -> Result<()> {
    let total = bins.iter().map(|b| b.pixels).sum::<u64>().max(1) as f64;
    let shares: Vec<f64> = bins
        .iter()
        .map(|b| 100.0 * b.pixels as f64 / total)
        .collect();
    // Room above the highest bar for its printed share.
    let y_max = (shares.iter().copied().fold(0.0, f64::max) * 1.25).clamp(1.0, 100.0);
    let mut chart = confidence_chart(area, y_max, "pixels (% of scored)")?;
    let bars = (bins.iter().zip(&shares)).map(|(b, &share)| {
        Rectangle::new(
            [(100.0 * b.lower, 0.0), (100.0 * b.upper, share)],
            RGBColor(150, 150, 150).filled(),
        )
    });
    chart.draw_series(bars).map_err(draw_err)?;
    let labels = (bins.iter().zip(&shares))
        .filter(|(b, _)| b.pixels > 0)
        .map(|(b, &share)| {
            let text = format!("{share:.1}");
            let style = TextStyle::from(("sans-serif", 12).into_font())
                .pos(Pos::new(HPos::Center, VPos::Bottom));
            Text::new(
                text,
                (50.0 * (b.lower + b.upper), share + 0.02 * y_max),
                style,
            )
        });
    chart.draw_series(labels).map_err(draw_err)?;
    Ok(())
}

/// A grouped bar chart: one group per entry of `groups` (for instance scenarios), one bar per
/// series (for instance methods) at the mean of its values (for instance one per seed), a
/// whisker of ± one sample standard deviation when there are two or more, and a dot per value;
/// a group without values leaves a gap. Values in percent; the value axis is fitted to them
/// ([`bar_axis`]), so that differences of a few points show. The title spans the whole width
/// (the figure widens for a long one); the legend sits in its own column right of the plot,
/// as wide as its longest name.
///
/// # Errors
/// No group or no series, a series whose group count differs, drawing or writing failures.
pub(crate) fn grouped_bars_png(
    path: &Path,
    title: &str,
    groups: &[String],
    series: &[(String, Vec<Vec<f64>>)],
    y_label: &str,
) -> Result<()> {
    ensure!(!groups.is_empty() && !series.is_empty(), "nothing to plot");
    for (name, values) in series {
        ensure!(
            values.len() == groups.len(),
            "series {name:?} has {} values for {} groups",
            values.len(),
            groups.len()
        );
    }
    let legend = bar_legend_width(series);
    let plot_w = (110 * groups.len() as u32 * (series.len() as u32).max(2) / 2).max(300);
    let title_w = 20 + text_width(title, BAR_TITLE_SIZE) as u32;
    let (width, height) = ((80 + plot_w + legend).max(title_w), 480u32);
    let mut rgb = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let title_font = ("sans-serif", BAR_TITLE_SIZE).into_font();
        root.draw(&Text::new(title, (10, 10), title_font))
            .map_err(draw_err)?;
        let (_, body) = root.split_vertically(BAR_TITLE);
        let (left, right) = body.split_horizontally(width - legend);
        draw_bars(&left, groups, series, y_label)?;
        draw_bar_legend(&right, series)?;
        root.present().map_err(draw_err)?;
    }
    write_png(path, &rgb, width, height)
}

/// The bars, whiskers and dots of [`grouped_bars_png`] on `area`.
fn draw_bars(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    groups: &[String],
    series: &[(String, Vec<Vec<f64>>)],
    y_label: &str,
) -> Result<()> {
    let n = groups.len() as f64;
    let (bottom, top) = bar_axis(series);
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..n, bottom..top)
        .map_err(draw_err)?;
    let labels = groups.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 1e-6 && i < labels.len() {
                labels[i].clone()
            } else {
                String::new()
            }
        })
        .y_desc(y_label)
        .draw()
        .map_err(draw_err)?;
    let bar_w = 0.8 / series.len() as f64;
    let clamp = |y: f64| y.clamp(bottom, top);
    for (s, (_, values)) in series.iter().enumerate() {
        let colour = Palette99::pick(s).to_rgba();
        for (g, v) in values.iter().enumerate() {
            let Some(stat) = crate::stats::summarize(v) else {
                continue;
            };
            let x = g as f64 + 0.1 + s as f64 * bar_w;
            let centre = x + bar_w * 0.475;
            let mean = clamp(stat.mean);
            chart
                .draw_series([Rectangle::new(
                    [(x, bottom), (x + bar_w * 0.95, mean)],
                    colour.filled(),
                )])
                .map_err(draw_err)?;
            if let Some(sd) = stat.sd {
                let (lo, hi) = (clamp(stat.mean - sd), clamp(stat.mean + sd));
                let cap = bar_w * 0.2;
                let whisker = [
                    vec![(centre, lo), (centre, hi)],
                    vec![(centre - cap, lo), (centre + cap, lo)],
                    vec![(centre - cap, hi), (centre + cap, hi)],
                ];
                chart
                    .draw_series(
                        whisker
                            .into_iter()
                            .map(|p| PathElement::new(p, BLACK.stroke_width(2))),
                    )
                    .map_err(draw_err)?;
            }
            let spread = bar_w * 0.5 / v.len().max(1) as f64;
            let dots = v.iter().enumerate().map(|(i, &y)| {
                let dx = (i as f64 - (v.len() - 1) as f64 / 2.0) * spread;
                Circle::new((centre + dx, clamp(y)), 3, BLACK.filled())
            });
            chart.draw_series(dots).map_err(draw_err)?;
        }
    }
    Ok(())
}

/// The legend column of [`grouped_bars_png`]: a swatch and the full name per series, and a key
/// to the marks.
fn draw_bar_legend(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    series: &[(String, Vec<Vec<f64>>)],
) -> Result<()> {
    let font = ("sans-serif", LEGEND_SIZE).into_font();
    let mut y = 16i32;
    for (s, (name, _)) in series.iter().enumerate() {
        let colour = Palette99::pick(s).to_rgba();
        area.draw(&Rectangle::new([(6, y), (20, y + 14)], colour.filled()))
            .map_err(draw_err)?;
        area.draw(&Text::new(name.as_str(), (26, y), font.clone()))
            .map_err(draw_err)?;
        y += 22;
    }
    y += 12;
    for line in BAR_KEY {
        let key_font = ("sans-serif", LEGEND_KEY_SIZE).into_font();
        area.draw(&Text::new(line, (6, y), key_font))
            .map_err(draw_err)?;
        y += 18;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_matrix_figure_is_a_png_of_the_expected_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut cm = ConfusionMatrix::new(3);
        cm.add_pairs(&[0, 0, 1, 2, 2, 2], &[0, 1, 1, 2, 2, 0], -1)
            .unwrap();
        let names: Vec<String> = ["impervious", "building", "tree"]
            .map(String::from)
            .to_vec();
        let path = dir.path().join("cm.png");
        confusion_matrix_png(&path, &cm, &names).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        // Short names: the default margins, wide enough for the title.
        let (left, bottom, size) = confusion_layout(&names);
        assert_eq!((left, bottom), (180, 130));
        assert_eq!((img.width(), img.height()), size);
        assert_eq!(size.1, 70 + 192 + 130);
        assert!(
            size.0 >= 180 + 192 + 40 && size.0 as usize >= text_width(CONFUSION_TITLE, 18) + 20
        );
        // A long name widens the left and bottom margins instead of being cut.
        let long: Vec<String> = ["impervious surfaces and roads", "building", "tree"]
            .map(String::from)
            .to_vec();
        let (left, bottom, (w, h)) = confusion_layout(&long);
        let name = text_width(&long[0], 15) as u32;
        assert!(
            left >= name + 10 && bottom > 130 && w >= left + 192 + 40,
            "{left} {bottom} {w}"
        );
        assert_eq!(h, 70 + 192 + bottom);
        // The (0,0) cell holds 0.5 of its row: a mid blue.
        let p = img.get_pixel(180 + 2, 70 + 2).0;
        assert_eq!(p, [127, 127, 255]);
        assert!(confusion_matrix_png(&path, &cm, &names[..2]).is_err());
    }

    #[test]
    fn reliability_diagram_is_a_png_of_its_size_with_bars_where_pixels_are() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reliability.png");
        let mut cal = Calibration::default();
        // 0.95: 10 pixels, 6 correct (over-confident); 0.5: 4 pixels, all correct.
        let confidence: Vec<f32> = [vec![0.95; 10], vec![0.5; 4]].concat();
        let labels = vec![1i64; 14];
        let preds: Vec<i64> = (0..14)
            .map(|i| if (6..10).contains(&i) { 0 } else { 1 })
            .collect();
        cal.add_pixels(&confidence, &labels, &preds, 255).unwrap();
        let title = "runs/demo/teacher/checkpoints/best (teacher), test split";
        reliability_png(&path, title, &cal).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let want = reliability_size(title, &reliability_subtitle(&cal));
        assert_eq!((img.width(), img.height()), want);
        let blue = |p: &image::Rgb<u8>| p.0 == [31, 119, 180];
        assert!(
            img.pixels().filter(|p| blue(p)).count() > 1000,
            "accuracy bars drawn"
        );
        // A title too long for the smallest width widens the figure.
        let long = "x".repeat(200);
        assert!(reliability_size(&long, "").0 > RELIABILITY_WIDTH);
        assert!(
            reliability_subtitle(&cal).contains("(ECE) 39.29 %"),
            "{}",
            reliability_subtitle(&cal)
        );
    }

    #[test]
    fn grouped_bars_draw_each_series() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bars.png");
        let groups: Vec<String> = ["full", "-dsm"].map(String::from).to_vec();
        let series = vec![
            (
                "teacher".to_string(),
                vec![vec![80.0, 78.0, 83.0], vec![50.0]],
            ),
            (
                "dis2@a-long-variant-name".to_string(),
                vec![vec![80.0], vec![]],
            ),
        ];
        grouped_bars_png(&path, "mIoU", &groups, &series, "mIoU").unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let coloured = img
            .pixels()
            .filter(|p| p.0[0] != p.0[1] || p.0[1] != p.0[2])
            .count();
        assert!(
            coloured > 1000,
            "bars are drawn: {coloured} coloured pixels"
        );
        let bad = vec![("x".to_string(), vec![vec![0.1]])];
        assert!(grouped_bars_png(&path, "t", &groups, &bad, "y").is_err());
    }

    /// Dark pixels of `img` in the columns `x0..x1` and rows `y0..y1`.
    fn dark(img: &image::RgbImage, (x0, x1): (u32, u32), (y0, y1): (u32, u32)) -> usize {
        let dark = |x, y| img.get_pixel(x, y).0.iter().all(|&c| c < 128);
        (x0..x1)
            .flat_map(|x| (y0..y1).map(move |y| (x, y)))
            .filter(|&(x, y)| dark(x, y))
            .count()
    }

    /// One narrow group with a long title: the figure widens to hold the whole title from its
    /// left edge, the axis fits the data (a few points apart, not 0 to 100) and the legend column
    /// ends close to the longest name.
    #[test]
    fn bar_chart_title_is_whole_axis_fits_and_no_empty_margin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bars.png");
        let title = "mIoU (%) by missing modality (test split; bars: mean, whiskers: ± sd, dots: \
                     seeds)";
        let series = vec![
            ("teacher-fill".to_string(), vec![vec![76.1, 77.0, 76.4]]),
            ("dis2".to_string(), vec![vec![78.9, 79.3, 79.0]]),
        ];
        grouped_bars_png(&path, title, &["-dsm".into()], &series, "mIoU (%)").unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let title_w = text_width(title, BAR_TITLE_SIZE) as u32;
        assert!(img.width() >= title_w + 20, "{} < {title_w}", img.width());
        // The title's first letters are drawn right of the left edge, in its line.
        assert!(dark(&img, (0, 10), (0, BAR_TITLE)) == 0);
        assert!(
            dark(&img, (10, 40), (0, BAR_TITLE)) > 20,
            "the title starts at x = 10"
        );
        assert!(
            dark(&img, (title_w - 30, title_w + 10), (0, BAR_TITLE)) > 10,
            "its end"
        );
        let (lo, hi) = bar_axis(&series);
        assert!(
            (70.0..76.0).contains(&lo) && (80.0..=85.0).contains(&hi),
            "{lo} {hi}"
        );
        assert_eq!(bar_axis(&[("x".into(), vec![vec![]])]), (0.0, 100.0));
        assert_eq!(
            bar_axis(&[("x".into(), vec![vec![1.0, 99.5]])]),
            (0.0, 100.0)
        );
        // Nothing but white in the last 8 columns, and something drawn just before them in the
        // legend: the right margin is small.
        let w = img.width();
        assert_eq!(dark(&img, (w - 8, w), (0, img.height())), 0);
        let names = bar_legend_width(&series);
        assert!(names < 200, "{names}");
    }
}
