//! Segmentation metrics from one confusion matrix accumulated over a whole split: per-class IoU,
//! F1, precision and recall, mean IoU, mean F1 and overall accuracy; and the calibration of the
//! predictions' confidence ([`Calibration`]: reliability bins, expected calibration error).
//!
//! Conventions: rows are reference labels, columns predictions; pixels whose label is the ignore
//! index are not counted. The means (mIoU, mean F1) average one fixed set of classes: those
//! present in the split's reference labels, less the classes listed in `exclude_from_mean`
//! (ISPRS: clutter). The set depends on the labels only ([`ConfusionMatrix::scores_over`] takes
//! their class counts, whatever pixels a branch could score where its inputs have data), so every
//! checkpoint, branch and method scored on a split is averaged over the same classes. A class
//! absent from the labels keeps its row: no IoU (`None`) when never predicted, IoU 0 when
//! predicted somewhere, and stays out of the means either way (docs/eval.md compares this with
//! mmsegmentation's and the ISPRS benchmark's conventions). Overall accuracy counts every class.
//!
//! Units (docs/eval.md, "Units"): scores are fractions in [0, 1] here and in every file written
//! for programs (which says so by [`SCORE_UNIT`]); whatever a person reads (logs, tables, charts,
//! TensorBoard) shows them in percent through [`percent`].

use anyhow::{ensure, Result};
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::Mutex;
use tch::{Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    classes: usize,
    /// Row-major `classes x classes` counts.
    counts: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassScores {
    pub iou: Option<f64>,
    pub f1: Option<f64>,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    /// Reference pixels of this class.
    pub support: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scores {
    pub per_class: Vec<ClassScores>,
    /// Mean IoU over [`Scores::mean_classes`]; `None` when that set is empty.
    pub miou: Option<f64>,
    /// Mean F1 over [`Scores::mean_classes`].
    pub mean_f1: Option<f64>,
    /// The classes the means average: present in the split's reference labels and not excluded.
    pub mean_classes: Vec<usize>,
    /// Classes with no reference pixel (and not excluded): reported, not averaged.
    pub absent_classes: Vec<usize>,
    /// Correct pixels over counted pixels; `None` when every pixel was ignored.
    pub overall_accuracy: Option<f64>,
    pub pixels: u64,
}

impl ConfusionMatrix {
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            counts: vec![0; classes * classes],
        }
    }

    /// A matrix of `rows` of counts (as [`ConfusionMatrix::rows`] returns them); errors unless
    /// they are square.
    pub(crate) fn from_rows(rows: &[Vec<u64>]) -> Result<Self> {
        let classes = rows.len();
        ensure!(
            rows.iter().all(|r| r.len() == classes),
            "confusion matrix rows: expected {classes} x {classes} counts"
        );
        Ok(Self {
            classes,
            counts: rows.concat(),
        })
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The count of pixels labelled `label` and predicted `pred`.
    pub fn get(&self, label: usize, pred: usize) -> u64 {
        self.counts[label * self.classes + pred]
    }

    /// Adds label/prediction pairs; labels equal to `ignore_index` are skipped, anything else out
    /// of range is an error.
    pub(crate) fn add_pairs(
        &mut self,
        labels: &[i64],
        preds: &[i64],
        ignore_index: i64,
    ) -> Result<()> {
        ensure!(
            labels.len() == preds.len(),
            "{} labels for {} predictions",
            labels.len(),
            preds.len()
        );
        let k = self.classes as i64;
        for (&l, &p) in labels.iter().zip(preds) {
            if l == ignore_index {
                continue;
            }
            ensure!((0..k).contains(&l), "label {l} out of range 0..{k}");
            ensure!((0..k).contains(&p), "prediction {p} out of range 0..{k}");
            self.counts[(l * k + p) as usize] += 1;
        }
        Ok(())
    }

    /// Adds integer tensors of equal shape (any device), counting on that device.
    pub(crate) fn add_tensors(
        &mut self,
        labels: &Tensor,
        preds: &Tensor,
        ignore_index: i64,
    ) -> Result<()> {
        ensure!(
            labels.size() == preds.size(),
            "labels {:?} and predictions {:?} differ in shape",
            labels.size(),
            preds.size()
        );
        let k = self.classes as i64;
        let labels = labels.to_kind(Kind::Int64).flatten(0, -1);
        let preds = preds.to_kind(Kind::Int64).flatten(0, -1);
        let keep = labels.ne(ignore_index);
        let labels = labels.masked_select(&keep);
        let preds = preds.masked_select(&keep);
        if labels.numel() == 0 {
            return Ok(());
        }
        let bad = labels
            .lt(0)
            .logical_or(&labels.ge(k))
            .any()
            .int64_value(&[])
            != 0;
        ensure!(
            !bad,
            "labels outside 0..{k} (other than the ignore index {ignore_index})"
        );
        let bad = preds.lt(0).logical_or(&preds.ge(k)).any().int64_value(&[]) != 0;
        ensure!(!bad, "predictions outside 0..{k}");
        let counts = (labels * k + preds)
            .bincount::<Tensor>(None, k * k)
            .to_kind(Kind::Int64);
        let counts = Vec::<i64>::try_from(counts.to_device(tch::Device::Cpu))?;
        for (total, c) in self.counts.iter_mut().zip(counts) {
            *total += c as u64;
        }
        Ok(())
    }

    /// Rows of counts, for reports and plots.
    pub fn rows(&self) -> Vec<Vec<u64>> {
        self.counts
            .chunks(self.classes)
            .map(|r| r.to_vec())
            .collect()
    }

    /// Reference pixels of each class (the row sums), `[classes]`.
    pub(crate) fn support(&self) -> Vec<u64> {
        self.rows().iter().map(|r| r.iter().sum()).collect()
    }

    /// Per-class scores and the means over the classes present in this matrix's labels, less
    /// `exclude_from_mean`: [`Self::scores_over`] with this matrix's own support.
    pub fn scores(&self, exclude_from_mean: &[usize]) -> Scores {
        self.scores_over(&self.support(), exclude_from_mean)
    }

    /// Per-class scores and the means over the classes with a pixel in `labelled` (the split's
    /// reference pixels of each class, `[classes]`, also where a branch's inputs have no data and
    /// so nothing was scored), less `exclude_from_mean` (see the module documentation). A class
    /// of the set that this matrix never saw nor predicted counts 0 in the means.
    pub(crate) fn scores_over(&self, labelled: &[u64], exclude_from_mean: &[usize]) -> Scores {
        let k = self.classes;
        let ratio = |num: u64, den: u64| (den > 0).then(|| num as f64 / den as f64);
        let per_class: Vec<ClassScores> = (0..k)
            .map(|c| {
                let tp = self.get(c, c);
                let support: u64 = (0..k).map(|p| self.get(c, p)).sum();
                let predicted: u64 = (0..k).map(|l| self.get(l, c)).sum();
                let union = support + predicted - tp;
                ClassScores {
                    iou: ratio(tp, union),
                    f1: ratio(2 * tp, support + predicted),
                    precision: ratio(tp, predicted),
                    recall: ratio(tp, support),
                    support,
                }
            })
            .collect();
        let counted = |c: &usize| !exclude_from_mean.contains(c);
        let (mean_classes, absent_classes): (Vec<usize>, Vec<usize>) = (0..k)
            .filter(counted)
            .partition(|&c| labelled.get(c).is_some_and(|&n| n > 0));
        let mean = |f: fn(&ClassScores) -> Option<f64>| {
            let vals: Vec<f64> = mean_classes
                .iter()
                .map(|&c| f(&per_class[c]).unwrap_or(0.0))
                .collect();
            (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64)
        };
        let pixels: u64 = self.counts.iter().sum();
        let correct: u64 = (0..k).map(|c| self.get(c, c)).sum();
        Scores {
            miou: mean(|s| s.iou),
            mean_f1: mean(|s| s.f1),
            overall_accuracy: ratio(correct, pixels),
            per_class,
            mean_classes,
            absent_classes,
            pixels,
        }
    }
}

/// Contexts already warned about by [`warn_absent_classes`].
static WARNED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// The note [`warn_absent_classes`] prints, or `None` when no class is absent.
pub(crate) fn absent_classes_note(
    context: &str,
    names: &[String],
    scores: &Scores,
) -> Option<String> {
    if scores.absent_classes.is_empty() {
        return None;
    }
    let list = |classes: &[usize]| -> String {
        let named: Vec<&str> = classes
            .iter()
            .map(|&c| names.get(c).map_or("?", String::as_str))
            .collect();
        named.join(", ")
    };
    Some(format!(
        "note: {context} has no reference pixels of {}; they keep their rows but stay out of \
         mIoU and mean F1, which average the {} classes present: {}",
        list(&scores.absent_classes),
        scores.mean_classes.len(),
        list(&scores.mean_classes)
    ))
}

/// Prints (to stderr) which classes `context` (a split, e.g. `the test split of experiment x`) lacks,
/// once per process and context: a sweep or a training run scores the same split many times.
pub(crate) fn warn_absent_classes(context: &str, names: &[String], scores: &Scores) {
    let Some(note) = absent_classes_note(context, names, scores) else {
        return;
    };
    let first = WARNED
        .lock()
        .map(|mut seen| seen.insert(context.to_string()))
        .unwrap_or(true);
    if first {
        eprintln!("{note}");
    }
}

/// The ISPRS "eroded boundary" convention: a copy of the `width x height` label map in which
/// every labelled pixel that has a pixel of another class within a disk of `radius` pixels
/// (`dx² + dy² <= radius²`, the ISPRS disk of radius 3 for `radius` 3) becomes `ignore_index`.
/// Both sides of a boundary are left out, a band of about `2 * radius` pixels. Ignored pixels
/// stay ignored and never make a boundary; the map's edge is no boundary. `radius` 0: unchanged.
pub fn erode_boundaries(
    labels: &[i64],
    width: usize,
    height: usize,
    radius: usize,
    ignore_index: i64,
) -> Vec<i64> {
    assert_eq!(
        labels.len(),
        width * height,
        "labels of a {width}x{height} map"
    );
    if radius == 0 {
        return labels.to_vec();
    }
    let r = radius as isize;
    let disk: Vec<(isize, isize)> = (-r..=r)
        .flat_map(|dy| (-r..=r).map(move |dx| (dx, dy)))
        .filter(|&(dx, dy)| dx * dx + dy * dy <= r * r && (dx, dy) != (0, 0))
        .collect();
    let (w, h) = (width as isize, height as isize);
    let at = |x: isize, y: isize| labels[(y * w + x) as usize];
    let mut out = labels.to_vec();
    for y in 0..h {
        for x in 0..w {
            let own = at(x, y);
            if own == ignore_index {
                continue;
            }
            let boundary = disk.iter().any(|&(dx, dy)| {
                let (nx, ny) = (x + dx, y + dy);
                (0..w).contains(&nx) && (0..h).contains(&ny) && {
                    let other = at(nx, ny);
                    other != ignore_index && other != own
                }
            });
            if boundary {
                out[(y * w + x) as usize] = ignore_index;
            }
        }
    }
    out
}

/// The rows to read around the band `first..first + rows` of a map of `height` rows so that
/// [`erode_boundaries`] with `radius` sees every pixel it needs: `radius` rows above and below,
/// clipped to the map. Returns `(top, count)`.
pub(crate) fn erosion_context(
    first: usize,
    rows: usize,
    height: usize,
    radius: usize,
) -> (usize, usize) {
    let top = first.saturating_sub(radius);
    let bottom = (first + rows + radius).min(height);
    (top, bottom - top)
}

/// Erodes a band read with [`erosion_context`]: `context` holds rows `top..` of the map
/// (`width` wide); returns the eroded rows `first..first + rows` only.
pub(crate) fn erode_band(
    context: &[i64],
    width: usize,
    top: usize,
    first: usize,
    rows: usize,
    radius: usize,
    ignore_index: i64,
) -> Vec<i64> {
    let context_rows = context.len() / width.max(1);
    let eroded = erode_boundaries(context, width, context_rows, radius, ignore_index);
    let start = (first - top) * width;
    eroded[start..start + rows * width].to_vec()
}

/// The unit of the scores in files written for programs (JSON, CSV, JSONL): the value of their
/// `score_unit` key, the suffix of their CSV score columns.
pub(crate) const SCORE_UNIT: &str = "fraction";

/// The header of a CSV column of scores: its name with the unit (`iou` -> `iou_fraction`).
pub(crate) fn score_column(name: &str) -> String {
    format!("{name}_{SCORE_UNIT}")
}

/// A score in [0, 1] as people read it: percent with two decimals, no sign (`0.1794` ->
/// `17.94`); the caller's header or label says `%`.
pub(crate) fn percent(v: f64) -> String {
    format!("{:.2}", 100.0 * v)
}

/// [`percent`] of a score that may be missing: `-` where there is none.
pub(crate) fn percent_or_dash(v: Option<f64>) -> String {
    v.map_or("-".to_string(), percent)
}

/// Bins of [`Calibration`]: 15 equal-width bins of the confidence, as in Guo et al., "On
/// Calibration of Modern Neural Networks" (ICML 2017), whose expected calibration error dis2
/// reports.
pub const CALIBRATION_BINS: usize = 15;

/// How well a branch's confidence (the maximum class probability of each pixel) matches its
/// accuracy, accumulated over scored pixels in [`CALIBRATION_BINS`] equal-width bins of the
/// confidence: bin `b` holds confidences in `(b / 15, (b + 1) / 15]` (the first also 0, the
/// last also values a float rounding above 1). Pixels whose label is the ignore index are not
/// counted, as in [`ConfusionMatrix::add_pairs`].
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    pixels: [u64; CALIBRATION_BINS],
    correct: [u64; CALIBRATION_BINS],
    /// Sum of the confidences of each bin's pixels.
    confidence: [f64; CALIBRATION_BINS],
}

/// One bin of a [`Calibration`], as reports list it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrationBin {
    /// The bin's confidences lie in `(lower, upper]` (probabilities, 0 to 1).
    pub lower: f64,
    pub upper: f64,
    /// Scored pixels in the bin.
    pub pixels: u64,
    /// Mean confidence of those pixels; `None` for an empty bin.
    pub confidence: Option<f64>,
    /// Share of those pixels classified correctly; `None` for an empty bin.
    pub accuracy: Option<f64>,
}

impl Default for Calibration {
    fn default() -> Self {
        Self {
            pixels: [0; CALIBRATION_BINS],
            correct: [0; CALIBRATION_BINS],
            confidence: [0.0; CALIBRATION_BINS],
        }
    }
}

impl Calibration {
    /// The bin of `confidence` (see [`Calibration`]).
    fn bin(confidence: f32) -> usize {
        let upper = (f64::from(confidence) * CALIBRATION_BINS as f64).ceil();
        (upper.max(1.0) as usize - 1).min(CALIBRATION_BINS - 1)
    }

    /// Adds a band of pixels: `confidence[i]` (the maximum class probability, 0 to 1) of the
    /// prediction `preds[i]` of a pixel labelled `labels[i]`; pixels labelled `ignore_index`
    /// are left out.
    ///
    /// # Errors
    /// Slices of different lengths; a counted pixel whose confidence is not a number in [0, 1]
    /// (up to float rounding).
    pub fn add_pixels(
        &mut self,
        confidence: &[f32],
        labels: &[i64],
        preds: &[i64],
        ignore_index: i64,
    ) -> Result<()> {
        ensure!(
            confidence.len() == labels.len() && preds.len() == labels.len(),
            "{} confidences and {} predictions for {} labels",
            confidence.len(),
            preds.len(),
            labels.len()
        );
        for ((&c, &label), &pred) in confidence.iter().zip(labels).zip(preds) {
            if label == ignore_index {
                continue;
            }
            ensure!(
                (0.0..=1.0 + 1e-5).contains(&c),
                "a scored pixel has confidence {c}; expected a probability in [0, 1]"
            );
            let b = Self::bin(c);
            self.pixels[b] += 1;
            self.correct[b] += u64::from(label == pred);
            self.confidence[b] += f64::from(c);
        }
        Ok(())
    }

    /// Adds the counts of `other`.
    pub fn merge(&mut self, other: &Calibration) {
        for b in 0..CALIBRATION_BINS {
            self.pixels[b] += other.pixels[b];
            self.correct[b] += other.correct[b];
            self.confidence[b] += other.confidence[b];
        }
    }

    /// Pixels counted.
    pub fn pixels(&self) -> u64 {
        self.pixels.iter().sum()
    }

    /// The bins, lowest confidence first.
    pub fn bins(&self) -> Vec<CalibrationBin> {
        (0..CALIBRATION_BINS)
            .map(|b| {
                let n = self.pixels[b];
                let share = |v: f64| (n > 0).then(|| v / n as f64);
                CalibrationBin {
                    lower: b as f64 / CALIBRATION_BINS as f64,
                    upper: (b + 1) as f64 / CALIBRATION_BINS as f64,
                    pixels: n,
                    confidence: share(self.confidence[b]),
                    accuracy: share(self.correct[b] as f64),
                }
            })
            .collect()
    }

    /// The expected calibration error, a fraction (0 to 1): `sum_b n_b / N |acc_b - conf_b|`,
    /// the gap between each bin's accuracy and mean confidence weighted by its share of the
    /// pixels (Guo et al. 2017, Eq. 3); `None` when no pixel was counted.
    pub fn ece(&self) -> Option<f64> {
        let total = self.pixels();
        if total == 0 {
            return None;
        }
        let gaps = self.bins().into_iter().filter_map(|b| {
            let gap = (b.accuracy? - b.confidence?).abs();
            Some(b.pixels as f64 / total as f64 * gap)
        });
        Some(gaps.sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn hand_computed_three_classes() {
        // labels: 0 0 0 1 1 2 | preds: 0 0 1 1 2 2, plus one ignored pixel
        let mut cm = ConfusionMatrix::new(3);
        cm.add_pairs(&[0, 0, 0, 1, 1, 2, 255], &[0, 0, 1, 1, 2, 2, 0], 255)
            .unwrap();
        assert_eq!(cm.rows(), vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]);
        let s = cm.scores(&[]);
        // class 0: tp 2, fn 1, fp 0 -> IoU 2/3, F1 4/5
        assert!(close(s.per_class[0].iou, 2.0 / 3.0) && close(s.per_class[0].f1, 0.8));
        // class 1: tp 1, fn 1, fp 1 -> IoU 1/3, F1 1/2
        assert!(close(s.per_class[1].iou, 1.0 / 3.0) && close(s.per_class[1].f1, 0.5));
        // class 2: tp 1, fn 0, fp 1 -> IoU 1/2, F1 2/3
        assert!(close(s.per_class[2].iou, 0.5) && close(s.per_class[2].f1, 2.0 / 3.0));
        assert!(close(s.miou, (2.0 / 3.0 + 1.0 / 3.0 + 0.5) / 3.0));
        assert!(close(s.overall_accuracy, 4.0 / 6.0));
        assert_eq!(s.pixels, 6);
        // ISPRS: class 2 (say clutter) out of the means, still in OA
        let s = cm.scores(&[2]);
        assert!(close(s.miou, 0.5) && close(s.mean_f1, 0.65));
        assert!(close(s.overall_accuracy, 4.0 / 6.0));
    }

    #[test]
    fn absent_class_has_no_score_and_leaves_the_mean() {
        let mut cm = ConfusionMatrix::new(3);
        cm.add_pairs(&[0, 1, 1], &[0, 1, 0], -1).unwrap();
        let s = cm.scores(&[]);
        assert_eq!(s.per_class[2].iou, None);
        assert_eq!(s.per_class[2].f1, None);
        assert!(close(s.miou, (0.5 + 0.5) / 2.0));
    }

    #[test]
    fn class_only_predicted_scores_zero_and_stays_out_of_the_mean() {
        // Class 1 is never a label but predicted once: IoU 0, F1 0, precision 0, no recall; the
        // means average the classes of the labels only.
        let mut cm = ConfusionMatrix::new(2);
        cm.add_pairs(&[0, 0, 0, 0], &[0, 0, 0, 1], 255).unwrap();
        let s = cm.scores(&[]);
        let c1 = &s.per_class[1];
        assert_eq!(
            (c1.iou, c1.f1, c1.precision, c1.recall, c1.support),
            (Some(0.0), Some(0.0), Some(0.0), None, 0)
        );
        assert!(close(s.miou, 0.75));
        assert!(close(s.overall_accuracy, 0.75));
        assert_eq!((s.mean_classes, s.absent_classes), (vec![0], vec![1]));
    }

    #[test]
    fn the_set_comes_from_the_split_labels_not_the_pixels_a_branch_scored() {
        // The split labels classes 0, 1 and 2; a branch whose inputs lack data on every pixel
        // of class 2 scores only classes 0 and 1, yet its mean keeps class 2 (IoU 0).
        let mut split = ConfusionMatrix::new(3);
        split.add_pairs(&[0, 1, 2, 2], &[0, 1, 2, 2], 255).unwrap();
        let mut branch = ConfusionMatrix::new(3);
        branch
            .add_pairs(&[0, 1, 255, 255], &[0, 1, 2, 2], 255)
            .unwrap();
        let s = branch.scores_over(&split.support(), &[]);
        assert_eq!(split.support(), vec![1, 1, 2]);
        assert_eq!((s.mean_classes, s.absent_classes), (vec![0, 1, 2], vec![]));
        assert_eq!(s.per_class[2].iou, None);
        assert!(close(s.miou, 2.0 / 3.0));
        assert!(
            close(branch.scores(&[]).miou, 1.0),
            "its own support: 2 classes"
        );
    }

    #[test]
    fn the_mean_averages_the_same_classes_whatever_is_predicted() {
        // Labels hold classes 0 and 2 (class 1 absent, class 3 excluded). Two predictions: one
        // never predicts class 1, one does; before the fix their means had 2 and 3 terms.
        let labels = [0i64, 0, 2, 2, 3, 3];
        let mut never = ConfusionMatrix::new(4);
        never.add_pairs(&labels, &[0, 0, 2, 0, 3, 3], 255).unwrap();
        let mut sometimes = ConfusionMatrix::new(4);
        sometimes
            .add_pairs(&labels, &[0, 1, 2, 2, 3, 3], 255)
            .unwrap();
        let (a, b) = (never.scores(&[3]), sometimes.scores(&[3]));
        assert_eq!(a.mean_classes, vec![0, 2]);
        assert_eq!(b.mean_classes, a.mean_classes);
        assert_eq!(a.absent_classes, vec![1]);
        assert_eq!(a.per_class[1].iou, None);
        assert_eq!(b.per_class[1].iou, Some(0.0), "the row is kept");
        // never: class 0 IoU 2/3, class 2 IoU 1/2; sometimes: 1/2 and 1.
        assert!(close(a.miou, (2.0 / 3.0 + 0.5) / 2.0));
        assert!(close(b.miou, (0.5 + 1.0) / 2.0));
        // F1: never 0.8 and 2/3; sometimes 2/3 and 1.
        assert!(close(a.mean_f1, (0.8 + 2.0 / 3.0) / 2.0));
        assert!(close(b.mean_f1, (2.0 / 3.0 + 1.0) / 2.0));
        let names: Vec<String> = ["road", "car", "tree", "clutter"].map(String::from).into();
        let note = absent_classes_note("the val split", &names, &a).unwrap();
        assert!(
            note.contains("the val split has no reference pixels of car")
                && note.contains("the 2 classes present: road, tree"),
            "{note}"
        );
        assert!(absent_classes_note("x", &names, &never.scores(&[1, 3])).is_none());
    }

    #[test]
    fn all_ignored_gives_no_scores() {
        let mut cm = ConfusionMatrix::new(2);
        cm.add_pairs(&[7, 7], &[0, 1], 7).unwrap();
        let s = cm.scores(&[]);
        assert_eq!(
            (s.miou, s.mean_f1, s.overall_accuracy, s.pixels),
            (None, None, None, 0)
        );
    }

    #[test]
    fn tensors_and_slices_agree_and_bad_values_fail() {
        let labels = [0i64, 2, 1, 1, 255, 2, 0, 1];
        let preds = [0i64, 2, 2, 1, 1, 0, 0, 1];
        let mut a = ConfusionMatrix::new(3);
        a.add_pairs(&labels, &preds, 255).unwrap();
        let mut b = ConfusionMatrix::new(3);
        let shape = [2i64, 4];
        b.add_tensors(
            &Tensor::from_slice(&labels).view(shape),
            &Tensor::from_slice(&preds).view(shape),
            255,
        )
        .unwrap();
        assert_eq!(a, b);
        let err = b.add_tensors(
            &Tensor::from_slice(&[5i64]),
            &Tensor::from_slice(&[0i64]),
            255,
        );
        assert!(err.unwrap_err().to_string().contains("labels outside"));
        assert!(a.add_pairs(&[0], &[3], 255).is_err());
    }

    /// Rows of a small map written as strings: digits are classes, `.` the ignore index 9.
    fn map(rows: &[&str]) -> (Vec<i64>, usize, usize) {
        let cells = rows
            .iter()
            .flat_map(|r| r.chars().map(|c| c.to_digit(10).map_or(9, i64::from)))
            .collect();
        (cells, rows[0].len(), rows.len())
    }

    #[test]
    fn erosion_ignores_both_sides_of_a_boundary_within_the_disk() {
        let (labels, w, h) = map(&["000111", "000111", "000111"]);
        assert_eq!(erode_boundaries(&labels, w, h, 0, 9), labels);
        assert_eq!(
            erode_boundaries(&labels, w, h, 1, 9),
            map(&["00..11", "00..11", "00..11"]).0
        );
        assert_eq!(
            erode_boundaries(&labels, w, h, 2, 9),
            map(&["0....1", "0....1", "0....1"]).0
        );
        // A disk, not a square: at radius 1 the diagonal neighbour of a corner pixel is kept.
        let (labels, w, h) = map(&["100", "000", "000"]);
        assert_eq!(
            erode_boundaries(&labels, w, h, 1, 9),
            map(&["..0", ".00", "000"]).0
        );
        // radius 2 reaches (1, 1) (1 + 1 <= 4) but not (2, 1) (4 + 1 > 4).
        assert_eq!(
            erode_boundaries(&labels, w, h, 2, 9),
            map(&["...", "..0", ".00"]).0
        );
    }

    #[test]
    fn ignored_pixels_make_no_boundary_and_stay_ignored() {
        let (labels, w, h) = map(&["00.11", "00.11"]);
        // One ignored column apart: no pixel has another class within radius 1.
        assert_eq!(erode_boundaries(&labels, w, h, 1, 9), labels);
        // Radius 2 reaches across the ignored column.
        assert_eq!(
            erode_boundaries(&labels, w, h, 2, 9),
            map(&["0...1", "0...1"]).0
        );
        let all = vec![9i64; 6];
        assert_eq!(erode_boundaries(&all, 3, 2, 3, 9), all);
    }

    #[test]
    fn band_erosion_with_context_equals_whole_map_erosion() {
        // A pseudo-random 5-class map with ignored pixels, eroded in bands of 7 rows.
        let (w, h) = (23usize, 40usize);
        let mut state = 12345u64;
        let labels: Vec<i64> = (0..w * h)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // Blocks of 4 x 3 pixels so that there are regions, not noise.
                let block = (i % w) / 4 + 7 * ((i / w) / 3);
                let v = ((block as u64 * 2654435761) >> 7) % 6;
                // Value 5 and a scattering of single pixels: ignored (9).
                if (state >> 60) == 0 || v == 5 {
                    9
                } else {
                    v as i64
                }
            })
            .collect();
        for radius in [1, 3] {
            let whole = erode_boundaries(&labels, w, h, radius, 9);
            let mut banded = Vec::new();
            for first in (0..h).step_by(7) {
                let rows = 7.min(h - first);
                let (top, count) = erosion_context(first, rows, h, radius);
                let context = &labels[top * w..(top + count) * w];
                banded.extend(erode_band(context, w, top, first, rows, radius, 9));
            }
            assert_eq!(banded, whole, "radius {radius}");
            assert!(
                whole.iter().filter(|&&l| l == 9).count()
                    > labels.iter().filter(|&&l| l == 9).count()
            );
        }
    }

    #[test]
    fn ece_of_a_hand_made_case_is_the_weighted_gap() {
        // Bin 13 (0.867, 0.933]: confidences 0.9, 0.9, 0.9, 0.9, 3 of 4 correct.
        // Bin 8 (0.533, 0.6]: 0.55, 0.58, 2 correct. Bin 0: 0.0 counts in the first bin, wrong.
        // One ignored pixel (label 9) and its NaN confidence are left out.
        let confidence = [0.9, 0.9, 0.9, 0.9, 0.55, 0.58, 0.0, f32::NAN];
        let labels = [1, 1, 1, 1, 2, 2, 0, 9];
        let preds = [1, 1, 1, 0, 2, 2, 1, 1];
        let mut cal = Calibration::default();
        cal.add_pixels(&confidence, &labels, &preds, 9).unwrap();
        assert_eq!(cal.pixels(), 7);
        let bins = cal.bins();
        assert_eq!(bins.len(), 15);
        assert_eq!((bins[13].pixels, bins[8].pixels, bins[0].pixels), (4, 2, 1));
        assert_eq!(bins[13].accuracy, Some(0.75));
        assert!(bins[1].confidence.is_none() && bins[1].accuracy.is_none());
        let conf = |values: &[f32]| {
            values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64
        };
        let want = 4.0 / 7.0 * (0.75 - conf(&[0.9; 4])).abs()
            + 2.0 / 7.0 * (1.0 - conf(&[0.55, 0.58])).abs()
            + 1.0 / 7.0 * (0.0 - 0.0f64).abs();
        assert!(
            (cal.ece().unwrap() - want).abs() < 1e-12,
            "{:?} vs {want}",
            cal.ece()
        );
        // Merging two halves gives the whole.
        let mut halves = Calibration::default();
        for range in [0..3, 3..8] {
            let mut part = Calibration::default();
            (part.add_pixels(
                &confidence[range.clone()],
                &labels[range.clone()],
                &preds[range],
                9,
            ))
            .unwrap();
            halves.merge(&part);
        }
        assert_eq!(halves, cal);
        assert_eq!(Calibration::default().ece(), None);
        // A scored pixel without a confidence is an error, not a silent bin.
        let err = cal.add_pixels(&[f32::NAN], &[1], &[1], 9).unwrap_err();
        assert!(err.to_string().contains("confidence NaN"), "{err}");
        assert!(cal.add_pixels(&[0.5], &[1, 2], &[1], 9).is_err());
    }
}
