//! The training objectives of the three ways to train, built on the reference losses
//! (`model::losses`): weighted cross-entropy + Dice of every prediction, DLKD and orthogonality.
//!
//! Pixels whose label is the ignore index (or where an input has no data) are left out: their
//! one-hot target is all zeros and their predicted probabilities are zeroed before the losses,
//! so they count neither in the cross-entropy nor in the Dice sums.

use anyhow::Result;
use tch::{Kind, Tensor};

use crate::model::dis2::{TeacherOutputs, TrainOutputs};
use crate::model::losses::{one_hot, seg_losses, sum_scalars};

/// One-hot targets `[B, K, H, W]` with zero rows at ignored pixels, and the `[B, 1, H, W]` float
/// mask of counted pixels.
pub fn masked_target(labels: &Tensor, ignore_index: i64, classes: i64) -> Result<(Tensor, Tensor)> {
    let keep = labels.ne(ignore_index);
    let ids = labels.where_self(&keep, &labels.zeros_like());
    let mask = keep.unsqueeze(1).to_kind(Kind::Float);
    Ok((one_hot(&ids, classes)? * &mask, mask))
}

/// A loss and its named parts (detached scalars, for logs).
pub struct Objective {
    pub total: Tensor,
    pub terms: Vec<(String, Tensor)>,
}

/// Segmentation losses of named predictions, one batched computation; returns the per-name
/// losses (with graph) in order.
fn named_seg_losses(
    preds: &[(String, &Tensor)],
    target: &Tensor,
    mask: &Tensor,
) -> Vec<(String, Tensor)> {
    let masked: Vec<Tensor> = preds.iter().map(|(_, p)| *p * mask).collect();
    let refs: Vec<&Tensor> = masked.iter().collect();
    let losses = seg_losses(&refs, target);
    preds
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (name.clone(), losses.get(i as i64)))
        .collect()
}

/// Sums terms that belong together (e.g. the four deep-supervision scales) under one name.
fn group(terms: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    let mut out: Vec<(String, Vec<Tensor>)> = Vec::new();
    for (name, t) in terms {
        let key = name.split('#').next().unwrap_or(&name).to_string();
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(t),
            None => out.push((key, vec![t])),
        }
    }
    out.into_iter().map(|(k, v)| (k, sum_scalars(&v))).collect()
}

fn finish(weighted: Vec<(String, Tensor, f64)>) -> Objective {
    let parts: Vec<Tensor> = weighted
        .iter()
        .filter(|(_, _, w)| *w != 0.0)
        .map(|(_, t, w)| if *w == 1.0 { t.shallow_clone() } else { t * *w })
        .collect();
    Objective {
        total: sum_scalars(&parts),
        terms: weighted
            .into_iter()
            .map(|(n, t, _)| (n, t.detach()))
            .collect(),
    }
}

/// The teacher's full prediction, auxiliary predictions and deep-supervision scales.
fn teacher_preds<'a>(
    pred: &'a Tensor,
    aux: &'a [Tensor],
    scales: &'a [Tensor],
    modality_names: &[String],
) -> Vec<(String, &'a Tensor)> {
    let mut preds: Vec<(String, &Tensor)> = vec![("teacher".into(), pred)];
    for (name, p) in modality_names.iter().zip(aux) {
        preds.push((format!("aux_{name}"), p));
    }
    preds.extend(scales.iter().map(|p| ("teacher_scales#".to_string(), p)));
    preds
}

/// The student's prediction and deep-supervision scales.
fn student_preds(out: &TrainOutputs) -> Vec<(String, &Tensor)> {
    let mut preds: Vec<(String, &Tensor)> = vec![("student".into(), &out.student.pred)];
    preds.extend(
        out.student
            .scale_preds
            .iter()
            .map(|p| ("student_scales#".to_string(), p)),
    );
    preds
}

/// Segmentation terms of `preds` plus the weighted DLKD and orthogonality terms of `out`.
fn with_distillation(
    preds: &[(String, &Tensor)],
    out: &TrainOutputs,
    target: &Tensor,
    mask: &Tensor,
    kd_weight: f64,
    orth_weight: f64,
) -> Objective {
    let mut terms: Vec<(String, Tensor, f64)> = group(named_seg_losses(preds, target, mask))
        .into_iter()
        .map(|(n, t)| (n, t, 1.0))
        .collect();
    terms.push(("kd".into(), out.kd_loss.shallow_clone(), kd_weight));
    terms.push(("orth".into(), out.orth_loss.shallow_clone(), orth_weight));
    finish(terms)
}

/// `train-teacher`: the full prediction, each auxiliary prediction and each deep-supervision
/// scale (reference `cal_train_loss` restricted to the teacher).
pub fn teacher_objective(
    out: &TeacherOutputs,
    modality_names: &[String],
    target: &Tensor,
    mask: &Tensor,
) -> Objective {
    let t = &out.teacher;
    let preds = teacher_preds(&t.pred, &out.aux_preds, &t.scale_preds, modality_names);
    let terms = group(named_seg_losses(&preds, target, mask));
    finish(terms.into_iter().map(|(n, t)| (n, t, 1.0)).collect())
}

/// `distill`: the student's prediction and scales, `kd_weight` x DLKD and `orth_weight` x the
/// orthogonality loss.
pub fn distill_objective(
    out: &TrainOutputs,
    target: &Tensor,
    mask: &Tensor,
    kd_weight: f64,
    orth_weight: f64,
) -> Objective {
    let preds = student_preds(out);
    with_distillation(&preds, out, target, mask, kd_weight, orth_weight)
}

/// `distill --joint`: the reference objective, teacher and student together.
pub fn joint_objective(
    out: &TrainOutputs,
    modality_names: &[String],
    target: &Tensor,
    mask: &Tensor,
    kd_weight: f64,
    orth_weight: f64,
) -> Objective {
    let t = &out.teacher;
    let mut preds = teacher_preds(&t.pred, &out.aux_preds, &t.scale_preds, modality_names);
    preds.extend(student_preds(out));
    with_distillation(&preds, out, target, mask, kd_weight, orth_weight)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_pixels_have_zero_targets() {
        let labels = Tensor::from_slice(&[0i64, 1, 255, 2]).view([1, 2, 2]);
        let (target, mask) = masked_target(&labels, 255, 3).unwrap();
        assert_eq!(target.size(), vec![1, 3, 2, 2]);
        let per_pixel = Vec::<f32>::try_from(
            target
                .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
                .flatten(0, -1),
        )
        .unwrap();
        assert_eq!(per_pixel, vec![1.0, 1.0, 0.0, 1.0]);
        assert_eq!(
            Vec::<f32>::try_from(mask.flatten(0, -1)).unwrap(),
            vec![1.0, 1.0, 0.0, 1.0]
        );
    }

    #[test]
    fn ignored_pixels_do_not_change_the_loss() {
        // The same prediction with different values at an ignored pixel gives the same loss.
        let labels = Tensor::from_slice(&[0i64, 1, 255, 1]).view([1, 2, 2]);
        let (target, mask) = masked_target(&labels, 255, 2).unwrap();
        let a = Tensor::from_slice(&[0.9f32, 0.2, 0.5, 0.3, 0.1, 0.8, 0.5, 0.7]).view([1, 2, 2, 2]);
        let b =
            Tensor::from_slice(&[0.9f32, 0.2, 0.01, 0.3, 0.1, 0.8, 0.99, 0.7]).view([1, 2, 2, 2]);
        let la = named_seg_losses(&[("x".into(), &a)], &target, &mask)[0]
            .1
            .double_value(&[]);
        let lb = named_seg_losses(&[("x".into(), &b)], &target, &mask)[0]
            .1
            .double_value(&[]);
        assert!((la - lb).abs() < 1e-7, "{la} vs {lb}");
    }
}
