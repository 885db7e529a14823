//! Segmentation metrics from one confusion matrix accumulated over a whole split: per-class IoU,
//! F1, precision and recall, mean IoU, mean F1 and overall accuracy.
//!
//! Conventions: rows are reference labels, columns predictions; pixels whose label is the ignore
//! index are not counted. A class that appears neither in the labels nor in the predictions has no
//! IoU or F1 (`None`) and stays out of the means; classes listed in `exclude_from_mean` (ISPRS:
//! clutter) are reported but not averaged. Overall accuracy counts every class.

use anyhow::{ensure, Result};
use serde::Serialize;
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
    /// Mean over the classes that have an IoU and are not excluded; `None` when there is none.
    pub miou: Option<f64>,
    pub mean_f1: Option<f64>,
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

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The count of pixels labelled `label` and predicted `pred`.
    pub fn get(&self, label: usize, pred: usize) -> u64 {
        self.counts[label * self.classes + pred]
    }

    /// Adds label/prediction pairs; labels equal to `ignore_index` are skipped, anything else out
    /// of range is an error.
    pub fn add_pairs(&mut self, labels: &[i64], preds: &[i64], ignore_index: i64) -> Result<()> {
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
    pub fn add_tensors(
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

    pub fn merge(&mut self, other: &ConfusionMatrix) -> Result<()> {
        ensure!(
            self.classes == other.classes,
            "merging {} and {} classes",
            self.classes,
            other.classes
        );
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
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

    pub fn scores(&self, exclude_from_mean: &[usize]) -> Scores {
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
        let mean = |f: fn(&ClassScores) -> Option<f64>| {
            let vals: Vec<f64> = per_class
                .iter()
                .enumerate()
                .filter(|(c, _)| !exclude_from_mean.contains(c))
                .filter_map(|(_, s)| f(s))
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
            pixels,
        }
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
        let mut merged = a.clone();
        merged.merge(&b).unwrap();
        assert_eq!(merged.get(1, 1), 2 * a.get(1, 1));
    }
}
