//! The training objectives of the three ways to train: weighted cross-entropy + Dice of every
//! prediction (`model::losses`) and, for a student, the weighted DLKD and orthogonality terms of
//! [`super::dlkd`]. The one copy of each: the trainer, the tests and `make bench-step` use these.
//!
//! - `train-teacher`: [`teacher_objective`].
//! - `distill`, a student against a frozen teacher: [`distill_objective`].
//! - `distill --joint`: [`joint_objective`], the reference's `cal_train_loss`
//!   (`run_experiment_35.py`): teacher + student + every auxiliary loss + `kd_weight · kd` +
//!   `orth_weight · orth` + both deep-supervision sums. With every pixel counted, no class weights
//!   and `orth_weight` 1 it is the reference's value.
//!
//! Pixels whose label is the ignore index (or where an input has no data) are left out: their
//! one-hot target is all zeros and their predicted probabilities are zeroed before the losses,
//! so they count neither in the cross-entropy nor in the Dice sums.

use anyhow::Result;
use tch::{Kind, Tensor};

use super::dlkd::{self, KdWeights};
use super::joint_backward::{JointForward, JointLoss, SplitInputs};
use crate::model::dis2::{TeacherOutputs, TrainOutputs};
use crate::model::losses::{one_hot, seg_losses_weighted, sum_scalars};

/// What the segmentation losses compare against.
pub struct Target {
    /// One-hot `[B, K, H, W]` with zero rows at ignored pixels.
    pub onehot: Tensor,
    /// `[B, 1, H, W]` float mask of the counted pixels; `None` when every pixel counts (then
    /// the predictions go into the losses as they are: multiplying by ones changes nothing but
    /// the time).
    pub mask: Option<Tensor>,
    /// Optional per-class weights `[K]` of the cross-entropy (`data.class_weights`).
    pub class_weights: Option<Tensor>,
}

/// The target of a batch of labels `[B, H, W]` (int64 class ids; `ignore_index` marks pixels left
/// out) for `classes` classes, with optional per-class weights `[K]`. Errors for labels of another
/// shape or ids outside `0..classes` (other than `ignore_index`).
pub fn masked_target(
    labels: &Tensor,
    ignore_index: i64,
    classes: i64,
    class_weights: Option<Tensor>,
) -> Result<Target> {
    let keep = labels.ne(ignore_index);
    let every_pixel = keep.all().int64_value(&[]) != 0;
    let ids = labels.where_self(&keep, &labels.zeros_like());
    let onehot = one_hot(&ids, classes)?;
    let (onehot, mask) = if every_pixel {
        (onehot, None)
    } else {
        let mask = keep.unsqueeze(1).to_kind(Kind::Float);
        (onehot * &mask, Some(mask))
    };
    Ok(Target {
        onehot,
        mask,
        class_weights: class_weights.map(|w| w.to_device(labels.device())),
    })
}

/// A loss and its named parts (detached scalars, for logs).
pub struct Objective {
    /// The loss: with its graph for the teacher and distillation objectives, its value alone for
    /// the joint one (whose backward pass runs by parts: use [`Objective::backward`]).
    pub total: Tensor,
    /// The unweighted parts, in order: `teacher`, `aux_{modality}`, `teacher_scales` (the four
    /// deep-supervision maps summed), `student`, `student_scales`, `kd`, `orth`, as far as the
    /// kind of run has them.
    pub terms: Vec<(String, Tensor)>,
    backward: Backward,
}

/// How [`Objective::backward`] runs.
enum Backward {
    /// One backward pass from `total`.
    Whole,
    /// The joint objective's parts ([`JointLoss::backward`]: the teacher's and the student's
    /// branches side by side where the forward pass split them).
    Joint(JointLoss, Option<SplitInputs>),
}

impl Objective {
    /// The part named `name` (see [`Objective::terms`]), if the objective has it.
    pub fn term(&self, name: &str) -> Option<&Tensor> {
        self.terms.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The tensors the backward pass starts from: the loss, or for a joint objective run side by
    /// side its three parts and the encoder features the branches' gradients flow back into
    /// (what a data-parallel reducer searches for the parameters the pass reaches).
    pub(crate) fn roots(&self) -> Vec<&Tensor> {
        match &self.backward {
            Backward::Whole => vec![&self.total],
            Backward::Joint(parts, inputs) => {
                let mut roots = vec![&parts.encoder, &parts.teacher, &parts.student];
                if let Some(inputs) = inputs {
                    roots.extend(inputs.encoder_features());
                }
                roots
            }
        }
    }

    /// The backward pass of `scale` times the loss, accumulating into the parameters' gradients.
    pub fn backward(&self, scale: f64) -> Result<()> {
        match &self.backward {
            Backward::Whole => Ok((&self.total * scale).f_backward()?),
            Backward::Joint(parts, inputs) => parts.backward(inputs.as_ref(), scale),
        }
    }
}

/// Segmentation losses of named predictions, one batched computation; returns the per-name
/// losses (with graph) in order.
fn named_seg_losses(preds: &[(String, &Tensor)], target: &Target) -> Vec<(String, Tensor)> {
    let masked: Vec<Tensor> = match &target.mask {
        Some(mask) => preds.iter().map(|(_, p)| *p * mask).collect(),
        None => Vec::new(),
    };
    let refs: Vec<&Tensor> = match &target.mask {
        Some(_) => masked.iter().collect(),
        None => preds.iter().map(|(_, p)| *p).collect(),
    };
    let losses = seg_losses_weighted(&refs, &target.onehot, target.class_weights.as_ref());
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
        backward: Backward::Whole,
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
    target: &Target,
    kd: KdWeights,
    orth_weight: f64,
) -> Objective {
    let mut terms: Vec<(String, Tensor, f64)> = group(named_seg_losses(preds, target))
        .into_iter()
        .map(|(n, t)| (n, t, 1.0))
        .collect();
    terms.extend(dlkd::weighted_terms(out, kd, orth_weight));
    finish(terms)
}

/// `train-teacher`: the full prediction, each auxiliary prediction and each deep-supervision
/// scale (reference `cal_train_loss` restricted to the teacher).
pub fn teacher_objective(
    out: &TeacherOutputs,
    modality_names: &[String],
    target: &Target,
) -> Objective {
    let t = &out.teacher;
    let preds = teacher_preds(&t.pred, &out.aux_preds, &t.scale_preds, modality_names);
    let terms = group(named_seg_losses(&preds, target));
    finish(terms.into_iter().map(|(n, t)| (n, t, 1.0)).collect())
}

/// `distill`: the student's prediction and scales, the DLKD parts weighted by `kd` and
/// `orth_weight` x the orthogonality loss.
pub fn distill_objective(
    out: &TrainOutputs,
    target: &Target,
    kd: KdWeights,
    orth_weight: f64,
) -> Objective {
    let preds = student_preds(out);
    with_distillation(&preds, out, target, kd, orth_weight)
}

/// `distill --joint`: the reference objective, teacher and student together, of a forward by
/// [`super::joint_backward::forward_joint`]. Its backward pass runs the two branches side by side
/// where that forward split them ([`super::joint_backward::JointBackward::SideBySide`]).
pub fn joint_objective(
    step: &JointForward,
    modality_names: &[String],
    target: &Target,
    kd: KdWeights,
    orth_weight: f64,
) -> Objective {
    let out = &step.outputs;
    let t = &out.teacher;
    let aux = teacher_preds(&t.pred, &out.aux_preds, &[], modality_names);
    let encoder = finish(
        group(named_seg_losses(&aux[1..], target))
            .into_iter()
            .map(|(n, t)| (n, t, 1.0))
            .collect(),
    );
    let teacher = finish(
        group(named_seg_losses(
            &teacher_preds(&t.pred, &[], &t.scale_preds, &[]),
            target,
        ))
        .into_iter()
        .map(|(n, t)| (n, t, 1.0))
        .collect(),
    );
    let student = with_distillation(&student_preds(out), out, target, kd, orth_weight);
    let parts = JointLoss {
        encoder: encoder.total,
        teacher: teacher.total,
        student: student.total,
    };
    // The terms in the order of the other objectives: teacher, auxiliaries, scales, student.
    let mut terms = teacher.terms;
    terms.splice(1..1, encoder.terms);
    terms.extend(student.terms);
    Objective {
        total: parts.total(),
        terms,
        backward: Backward::Joint(parts, step.split_inputs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_pixels_have_zero_targets() {
        let labels = Tensor::from_slice(&[0i64, 1, 255, 2]).view([1, 2, 2]);
        let target = masked_target(&labels, 255, 3, None).unwrap();
        assert_eq!(target.onehot.size(), vec![1, 3, 2, 2]);
        let per_pixel = Vec::<f32>::try_from(
            target
                .onehot
                .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
                .flatten(0, -1),
        )
        .unwrap();
        assert_eq!(per_pixel, vec![1.0, 1.0, 0.0, 1.0]);
        assert_eq!(
            Vec::<f32>::try_from(target.mask.as_ref().unwrap().flatten(0, -1)).unwrap(),
            vec![1.0, 1.0, 0.0, 1.0]
        );
    }

    #[test]
    fn ignored_pixels_do_not_change_the_loss() {
        // The same prediction with different values at an ignored pixel gives the same loss.
        let labels = Tensor::from_slice(&[0i64, 1, 255, 1]).view([1, 2, 2]);
        let target = masked_target(&labels, 255, 2, None).unwrap();
        let a = Tensor::from_slice(&[0.9f32, 0.2, 0.5, 0.3, 0.1, 0.8, 0.5, 0.7]).view([1, 2, 2, 2]);
        let b =
            Tensor::from_slice(&[0.9f32, 0.2, 0.01, 0.3, 0.1, 0.8, 0.99, 0.7]).view([1, 2, 2, 2]);
        let la = named_seg_losses(&[("x".into(), &a)], &target)[0]
            .1
            .double_value(&[]);
        let lb = named_seg_losses(&[("x".into(), &b)], &target)[0]
            .1
            .double_value(&[]);
        assert!((la - lb).abs() < 1e-7, "{la} vs {lb}");
    }

    /// Without ignored pixels the target has no mask, and the losses and gradients are bitwise
    /// those of predictions multiplied by a mask of ones.
    #[test]
    fn every_pixel_counted_needs_no_mask() {
        let labels = Tensor::from_slice(&[0i64, 1, 2, 1, 0, 2, 2, 1]).view([2, 2, 2]);
        let mut target = masked_target(&labels, 255, 3, None).unwrap();
        assert!(target.mask.is_none());
        let logits = Tensor::randn([2, 3, 2, 2], (Kind::Float, tch::Device::Cpu));
        let logits = logits.set_requires_grad(true);
        let p = logits.softmax(1, Kind::Float);
        let run = |target: &Target| {
            let loss = named_seg_losses(&[("x".into(), &p)], target)[0]
                .1
                .shallow_clone();
            let grad = Tensor::run_backward(&[&loss], &[&logits], true, false).remove(0);
            (loss.detach(), grad)
        };
        let (plain, plain_grad) = run(&target);
        target.mask = Some(Tensor::ones([2, 1, 2, 2], (Kind::Float, tch::Device::Cpu)));
        let (ones, ones_grad) = run(&target);
        assert!(plain.equal(&ones) && plain_grad.equal(&ones_grad));
    }

    #[test]
    fn class_weights_scale_the_cross_entropy_of_their_class() {
        let labels = Tensor::from_slice(&[0i64, 1, 1, 1]).view([1, 2, 2]);
        let p = Tensor::from_slice(&[0.6f32, 0.3, 0.2, 0.1, 0.4, 0.7, 0.8, 0.9]).view([1, 2, 2, 2]);
        let loss = |w: Option<[f32; 2]>| {
            let target = masked_target(&labels, 255, 2, w.map(|w| Tensor::from_slice(&w))).unwrap();
            named_seg_losses(&[("x".into(), &p)], &target)[0]
                .1
                .double_value(&[])
        };
        let plain = loss(None);
        assert!((loss(Some([1.0, 1.0])) - plain).abs() < 1e-7);
        assert!(
            loss(Some([3.0, 1.0])) > plain,
            "a heavier class 0 raises its term"
        );
    }
}
