//! Scores of parts of a split: its pixels grouped by what the data lacks there (the modalities
//! without data at a pixel, whatever the run was given) or by the branch that classified them.
//!
//! The groups answer "how well does the map do where SAR is missing?" on the same pixels in
//! every run: the per-pixel composite, a run with SAR dropped from every scene, the teacher.

use anyhow::{ensure, Result};
use std::collections::BTreeMap;

use crate::metrics::{Calibration, ConfusionMatrix, Scores};
use crate::model::modality::ModalitySpec;
use crate::model::scenario::join_names;

/// The modalities without data at a pixel, as bits by model index (bit `i`: modality `i` lacks
/// data), from each modality's validity (nodata, masks, user masks, outside its coverage).
pub(crate) fn data_pattern(valid: &[&[bool]], pixel: usize) -> u8 {
    valid
        .iter()
        .enumerate()
        .filter(|(_, v)| !v[pixel])
        .fold(0u8, |bits, (i, _)| bits | (1 << i))
}

/// The name of a data pattern: `complete`, `missing sar`, `missing dsm+sar`, or `no input`
/// when no modality has data.
pub(crate) fn pattern_label(bits: u8, modalities: &[ModalitySpec]) -> String {
    if bits == 0 {
        return "complete".to_string();
    }
    let missing: Vec<&str> = (modalities.iter().enumerate())
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, m)| m.name.as_str())
        .collect();
    if missing.len() == modalities.len() {
        return "no input".to_string();
    }
    format!("missing {}", join_names(&missing))
}

/// A group's scored pixels in a band: labels, predictions and confidences.
type ScoredPixels = (Vec<i64>, Vec<i64>, Vec<f32>);

/// One confusion matrix and calibration per group, and the labelled pixels of each class in
/// each group (also those not scored), keyed by a small code (a data pattern, or a route code).
#[derive(Debug, Clone)]
pub(crate) struct Groups {
    classes: usize,
    scored: BTreeMap<u8, ConfusionMatrix>,
    calibration: BTreeMap<u8, Calibration>,
    labelled: BTreeMap<u8, Vec<u64>>,
}

impl Groups {
    pub(crate) fn new(classes: usize) -> Self {
        Self {
            classes,
            scored: BTreeMap::new(),
            calibration: BTreeMap::new(),
            labelled: BTreeMap::new(),
        }
    }

    /// Adds a band of pixels: `keys[i]` is pixel `i`'s group, `labels[i]` its label
    /// (`ignore_index`: not labelled, left out), `preds[i]` its class and `confidence[i]` the
    /// class's probability where `scored[i]`.
    ///
    /// # Errors
    /// Slices of different lengths; a label or prediction out of range, a scored pixel without
    /// a confidence in [0, 1].
    pub(crate) fn add_band(
        &mut self,
        keys: &[u8],
        labels: &[i64],
        preds: &[i64],
        confidence: &[f32],
        scored: &[bool],
        ignore_index: i64,
    ) -> Result<()> {
        ensure!(
            keys.len() == labels.len()
                && scored.len() == labels.len()
                && confidence.len() == labels.len(),
            "{} group keys, {} scored flags and {} confidences for {} labels",
            keys.len(),
            scored.len(),
            confidence.len(),
            labels.len()
        );
        let mut by_key: BTreeMap<u8, ScoredPixels> = BTreeMap::new();
        for (i, &label) in labels.iter().enumerate() {
            if label == ignore_index {
                continue;
            }
            let classes = self.classes;
            let support = (self.labelled.entry(keys[i])).or_insert_with(|| vec![0; classes]);
            if let Some(n) = usize::try_from(label).ok().and_then(|c| support.get_mut(c)) {
                *n += 1;
            }
            if scored[i] {
                let (l, p, c) = by_key.entry(keys[i]).or_default();
                l.push(label);
                p.push(preds[i]);
                c.push(confidence[i]);
            }
        }
        for (key, (l, p, c)) in by_key {
            let classes = self.classes;
            (self.scored.entry(key))
                .or_insert_with(|| ConfusionMatrix::new(classes))
                .add_pairs(&l, &p, ignore_index)?;
            (self.calibration.entry(key).or_default()).add_pixels(&c, &l, &p, ignore_index)?;
        }
        Ok(())
    }

    /// The groups with a labelled pixel, in key order, named by `label`.
    pub(crate) fn report(&self, exclude: &[usize], label: impl Fn(u8) -> String) -> Vec<Group> {
        self.labelled
            .iter()
            .map(|(&key, support)| {
                let cm = (self.scored.get(&key).cloned())
                    .unwrap_or_else(|| ConfusionMatrix::new(self.classes));
                Group {
                    label: label(key),
                    labelled: support.iter().sum(),
                    scores: cm.scores_over(support, exclude),
                    calibration: self.calibration.get(&key).cloned().unwrap_or_default(),
                }
            })
            .collect()
    }
}

/// The scores of one group of pixels: means over the classes of the group's labelled pixels,
/// scored or not (a group without water is not marked down for it; a class the group has but
/// the run left unclassified counts 0), as the whole split's are over the split's.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// `complete`, `missing sar`, ... for data groups; a route label (`teacher`,
    /// `student[sar]`) for route groups.
    pub label: String,
    /// Labelled pixels of the group, scored or not (`scores.pixels` were scored).
    pub labelled: u64,
    pub scores: Scores,
    /// The calibration of the group's scored pixels (its expected calibration error).
    pub calibration: Calibration,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modalities() -> Vec<ModalitySpec> {
        ["optical", "dsm", "sar"]
            .iter()
            .map(|n| ModalitySpec {
                name: n.to_string(),
                channels: 1,
            })
            .collect()
    }

    #[test]
    fn patterns_are_named_by_what_the_data_lacks() {
        let m = modalities();
        let (a, b, c) = ([true, false], [true, true], [false, false]);
        let valid: Vec<&[bool]> = vec![&a, &b, &c];
        assert_eq!(data_pattern(&valid, 0), 0b100);
        assert_eq!(data_pattern(&valid, 1), 0b101);
        assert_eq!(pattern_label(0, &m), "complete");
        assert_eq!(pattern_label(0b100, &m), "missing sar");
        assert_eq!(pattern_label(0b110, &m), "missing dsm+sar");
        assert_eq!(pattern_label(0b111, &m), "no input");
    }

    #[test]
    fn groups_score_their_own_pixels_and_count_the_unscored() {
        let mut g = Groups::new(2);
        let (keys, labels) = ([0, 0, 4, 4, 4], [0, 1, 1, 1, 255]);
        let (preds, scored) = ([0, 1, 0, 255, 0], [true, true, true, false, true]);
        let confidence = [0.9, 0.6, 0.8, f32::NAN, 0.7];
        (g.add_band(&keys, &labels, &preds, &confidence, &scored, 255)).unwrap();
        let wrong = [0, 1, 7, 0, 0];
        assert!(Groups::new(2)
            .add_band(&keys, &labels, &wrong, &confidence, &scored, 255)
            .is_err());
        let r = g.report(&[], |k| format!("g{k}"));
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].label.as_str(), r[0].labelled), ("g0", 2));
        assert_eq!(r[0].scores.miou, Some(1.0));
        assert_eq!((r[1].labelled, r[1].scores.pixels), (2, 1));
        // Only class 1 is in group 4's labels: its IoU is 0, class 0 is not averaged.
        assert_eq!(r[1].scores.mean_classes, [1]);
        assert_eq!(r[1].scores.miou, Some(0.0));
        // Each group's calibration holds its own scored pixels: group 4's one pixel, wrong at
        // confidence 0.8, is off by 0.8.
        assert_eq!(r[0].calibration.pixels(), 2);
        assert_eq!(r[1].calibration.pixels(), 1);
        assert!((r[1].calibration.ece().unwrap() - 0.8).abs() < 1e-6);
    }
}
