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
//! Pixels whose label is the ignore index are left out: their one-hot target is all zeros and
//! their predicted probabilities are zeroed before the losses, so they count neither in the
//! cross-entropy nor in the Dice sums. Which pixels each branch learns from ([`batch_target`],
//! docs/train.md "Which pixels train which branch"): the teacher's losses (auxiliary and
//! deep-supervision ones included) where every modality has data; the student's where every
//! modality it reads has data; DLKD where every input of the teacher has data.

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use super::dlkd::{self, KdWeights};
use super::joint_backward::{JointForward, JointLoss, SplitInputs};
use crate::data::loader::Batch;
use crate::model::dis2::{TeacherOutputs, TrainOutputs};
use crate::model::losses::{one_hot, seg_losses_weighted, sum_scalars};
use crate::model::Scenario;

/// What the losses compare against: the teacher's labels, and the student's and DLKD's pixels
/// where they differ from the teacher's.
pub struct Target {
    /// The teacher's labels: one-hot `[B, K, H, W]` with zero rows at ignored pixels.
    pub onehot: Tensor,
    /// `[B, 1, H, W]` float mask of the teacher's counted pixels; `None` when every pixel counts
    /// (then the predictions go into the losses as they are: multiplying by ones changes nothing
    /// but the time).
    pub mask: Option<Tensor>,
    /// Optional per-class weights `[K]` of the cross-entropy (`data.class_weights`).
    pub class_weights: Option<Tensor>,
    /// The student's labels, where they differ from the teacher's (a modality the student does
    /// not read lacks data somewhere); `None`: the teacher's.
    pub student: Option<Labels>,
    /// `[B, 1, H, W]` float, 1 where every input of the teacher has data: the pixels DLKD
    /// compares ([`dlkd::dlkd_over`]); `None`: every pixel.
    pub distill: Option<Tensor>,
}

/// One branch's labels as the segmentation losses take them (see [`Target`]).
pub struct Labels {
    /// One-hot `[B, K, H, W]` with zero rows at ignored pixels.
    pub onehot: Tensor,
    /// `[B, 1, H, W]` float mask of the counted pixels; `None` when every pixel counts.
    pub mask: Option<Tensor>,
}

impl Labels {
    /// The labels of class ids `[B, H, W]` (int64; `ignore_index` marks pixels left out) for
    /// `classes` classes. Errors for labels of another shape or ids outside `0..classes` (other
    /// than `ignore_index`).
    pub fn of(labels: &Tensor, ignore_index: i64, classes: i64) -> Result<Self> {
        let keep = labels.ne(ignore_index);
        let every_pixel = keep.all().int64_value(&[]) != 0;
        let ids = labels.where_self(&keep, &labels.zeros_like());
        let onehot = one_hot(&ids, classes)?;
        Ok(if every_pixel {
            Labels { onehot, mask: None }
        } else {
            let mask = keep.unsqueeze(1).to_kind(Kind::Float);
            Labels {
                onehot: onehot * &mask,
                mask: Some(mask),
            }
        })
    }
}

/// The target of a batch of labels `[B, H, W]` (int64 class ids; `ignore_index` marks pixels left
/// out) for `classes` classes, with optional per-class weights `[K]`: every branch learns from
/// the same pixels. Errors as [`Labels::of`].
pub fn masked_target(
    labels: &Tensor,
    ignore_index: i64,
    classes: i64,
    class_weights: Option<Tensor>,
) -> Result<Target> {
    let Labels { onehot, mask } = Labels::of(labels, ignore_index, classes)?;
    Ok(Target {
        onehot,
        mask,
        class_weights: class_weights.map(|w| w.to_device(labels.device())),
        student: None,
        distill: None,
    })
}

/// The target of a training batch on `device`, for a run whose student (if any) lacks the
/// modalities of `student` (docs/train.md, "Which pixels train which branch"): the teacher learns
/// where every modality has data; the student where every modality it reads has data, whatever
/// its missing ones hold there; DLKD compares where every input of the teacher has data. With
/// data in every modality at every pixel it is [`masked_target`] of the batch's labels. Errors
/// as [`Labels::of`].
pub fn batch_target(
    batch: &Batch,
    student: Option<&Scenario>,
    ignore_index: i64,
    classes: i64,
    class_weights: Option<Tensor>,
    device: Device,
) -> Result<Target> {
    let teacher = batch.branch_labels(None, ignore_index).to_device(device);
    let mut target = masked_target(&teacher, ignore_index, classes, class_weights)?;
    let Some(scenario) = student else {
        return Ok(target);
    };
    if batch.valid.all().int64_value(&[]) == 0 {
        let labels = batch
            .branch_labels(Some(scenario), ignore_index)
            .to_device(device);
        target.student = Some(Labels::of(&labels, ignore_index, classes)?);
        target.distill = Some(
            batch
                .valid
                .unsqueeze(1)
                .to_kind(Kind::Float)
                .to_device(device),
        );
    }
    Ok(target)
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

/// Segmentation losses of named predictions of the teacher, one batched computation; returns the
/// per-name losses (with graph) in order.
fn named_seg_losses(preds: &[(String, &Tensor)], target: &Target) -> Vec<(String, Tensor)> {
    let labels = (&target.onehot, target.mask.as_ref());
    seg_losses_on(preds, labels, target.class_weights.as_ref())
}

/// [`named_seg_losses`] of the student's predictions, on the student's labels.
fn student_seg_losses(preds: &[(String, &Tensor)], target: &Target) -> Vec<(String, Tensor)> {
    match &target.student {
        Some(s) => seg_losses_on(
            preds,
            (&s.onehot, s.mask.as_ref()),
            target.class_weights.as_ref(),
        ),
        None => named_seg_losses(preds, target),
    }
}

/// Segmentation losses of named predictions against `(onehot, mask)`.
fn seg_losses_on(
    preds: &[(String, &Tensor)],
    (onehot, mask): (&Tensor, Option<&Tensor>),
    class_weights: Option<&Tensor>,
) -> Vec<(String, Tensor)> {
    let masked: Vec<Tensor> = match mask {
        Some(mask) => preds.iter().map(|(_, p)| *p * mask).collect(),
        None => Vec::new(),
    };
    let refs: Vec<&Tensor> = match mask {
        Some(_) => masked.iter().collect(),
        None => preds.iter().map(|(_, p)| *p).collect(),
    };
    let losses = seg_losses_weighted(&refs, onehot, class_weights);
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

/// Segmentation terms of the student's `preds` plus the weighted DLKD and orthogonality terms
/// of `out`.
fn with_distillation(
    preds: &[(String, &Tensor)],
    out: &TrainOutputs,
    target: &Target,
    kd: KdWeights,
    orth_weight: f64,
) -> Objective {
    let mut terms: Vec<(String, Tensor, f64)> = group(student_seg_losses(preds, target))
        .into_iter()
        .map(|(n, t)| (n, t, 1.0))
        .collect();
    terms.extend(dlkd::weighted_terms(
        out,
        kd,
        orth_weight,
        target.distill.as_ref(),
    ));
    finish(terms)
}

/// `train-teacher`: the full prediction, each auxiliary prediction and each deep-supervision
/// scale (reference `cal_train_loss` restricted to the teacher), on the teacher's labels.
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

/// `distill`: the student's prediction and scales on the student's labels, the DLKD parts
/// (over `target.distill`) weighted by `kd` and `orth_weight` x the orthogonality loss.
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
/// where that forward split them ([`super::joint_backward::JointBackward::SideBySide`]). The
/// teacher's terms (auxiliary and deep-supervision ones included) take the teacher's labels, the
/// student's its own, DLKD `target.distill`.
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
    use crate::train::joint_backward::JointForward;

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

    /// A two-modality model (optical 4 bands, sar 1), 3 classes, 32 x 32 crops.
    fn net() -> (tch::nn::VarStore, crate::model::Dis2Net) {
        use crate::model::config::{ModalitySpec, ModelConfig};
        let cfg = ModelConfig {
            base_width: 8,
            num_classes: 3,
            crop: [32, 32],
            heads: 8,
            ffn_dim: 32,
            depth: 1,
            modalities: [("optical", 4), ("sar", 1)]
                .map(|(name, channels)| ModalitySpec {
                    name: name.into(),
                    channels,
                })
                .to_vec(),
            scenarios: None,
            decoder: Default::default(),
            fusion: Default::default(),
        };
        tch::manual_seed(0);
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let net = crate::model::Dis2Net::new(&vs.root(), &cfg).unwrap();
        (vs, net)
    }

    /// A batch of two 32 x 32 samples with random labels; SAR has data where `sar(col)`.
    fn batch(sar: impl Fn(i64) -> bool) -> Batch {
        let opts = (Kind::Float, Device::Cpu);
        let reference = Tensor::randint(3, [2, 32, 32], (Kind::Int64, Device::Cpu));
        let cols: Vec<bool> = (0..32).map(sar).collect();
        let sar_mask = Tensor::from_slice(&cols)
            .view([1, 1, 32])
            .expand([2, 32, 32], false);
        let optical_mask = sar_mask.ones_like();
        let valid = sar_mask.logical_and(&optical_mask);
        let labels = reference.where_self(&valid, &reference.full_like(255));
        let sar_values = Tensor::randn([2, 1, 32, 32], opts) * sar_mask.unsqueeze(1);
        Batch {
            inputs: vec![Tensor::randn([2, 4, 32, 32], opts), sar_values],
            masks: vec![optical_mask, sar_mask.contiguous()],
            labels,
            reference,
            valid: valid.contiguous(),
            specs: Vec::new(),
        }
    }

    fn terms(o: &Objective) -> Vec<(String, f64)> {
        o.terms
            .iter()
            .map(|(n, t)| (n.clone(), t.double_value(&[])))
            .collect()
    }

    /// With data everywhere, a batch's target gives bit for bit the losses of the target of its
    /// labels (the one every branch shared before branches had their own pixels).
    #[test]
    fn a_fully_valid_batch_keeps_its_losses() {
        let (_vs, net) = net();
        let sar = crate::model::Scenario::new(vec![1], 2).unwrap();
        let batch = batch(|_| true);
        let inputs: Vec<Option<&Tensor>> = batch.inputs.iter().map(Some).collect();
        let names = ["optical".to_string(), "sar".to_string()];
        let step = tch::no_grad(|| {
            super::super::joint_backward::forward_joint(
                &net,
                &sar,
                &inputs,
                false,
                super::super::joint_backward::JointBackward::Whole,
            )
        })
        .unwrap();
        let ours = batch_target(&batch, Some(&sar), 255, 3, None, Device::Cpu).unwrap();
        assert!(ours.student.is_none() && ours.distill.is_none());
        let before = masked_target(&batch.labels, 255, 3, None).unwrap();
        let kd = KdWeights::both(5.0);
        let joint = |t: &Target| tch::no_grad(|| joint_objective(&step, &names, t, kd, 1.0));
        let (a, b) = (joint(&ours), joint(&before));
        assert!(a.total.equal(&b.total));
        assert_eq!(terms(&a), terms(&b));
        let distill = |t: &Target| distill_objective(&step.outputs, t, kd, 1.0);
        assert_eq!(terms(&distill(&ours)), terms(&distill(&before)));
    }

    /// SAR without data over the right half of every window: the teacher's losses and DLKD leave
    /// that half out, the SAR-missing student learns from it.
    #[test]
    fn where_sar_has_no_data_only_the_sar_missing_student_learns() {
        let (_vs, net) = net();
        let sar = crate::model::Scenario::new(vec![1], 2).unwrap();
        let half = batch(|col| col < 16);
        let inputs: Vec<Option<&Tensor>> = half.inputs.iter().map(Some).collect();
        let names = ["optical".to_string(), "sar".to_string()];
        let mut step = tch::no_grad(|| {
            super::super::joint_backward::forward_joint(
                &net,
                &sar,
                &inputs,
                false,
                super::super::joint_backward::JointBackward::Whole,
            )
        })
        .unwrap();
        let target = |b: &Batch| batch_target(b, Some(&sar), 255, 3, None, Device::Cpu).unwrap();
        let kd = KdWeights::both(5.0);
        let objective = |step: &JointForward, b: &Batch| {
            let t = target(b);
            terms(&tch::no_grad(|| joint_objective(step, &names, &t, kd, 1.0)))
        };
        let term = |terms: &[(String, f64)], name: &str| {
            terms
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| *v)
                .unwrap()
        };
        // The student's labels are every labelled pixel: it never reads SAR.
        let t = target(&half);
        let student = t.student.as_ref().unwrap();
        assert!(student.mask.is_none());
        assert!(t.mask.is_some());
        // Other labels in the right half: the teacher's terms stay, the student's move.
        let mut relabelled = batch(|col| col < 16);
        relabelled.inputs = half.inputs.iter().map(Tensor::shallow_clone).collect();
        let right = Tensor::arange(32, (Kind::Int64, Device::Cpu))
            .ge(16)
            .view([1, 1, 32]);
        relabelled.reference = half
            .reference
            .where_self(&right.logical_not(), &((&half.reference + 1).remainder(3)));
        let (a, b) = (objective(&step, &half), objective(&step, &relabelled));
        for name in ["teacher", "aux_optical", "aux_sar", "teacher_scales"] {
            assert_eq!(term(&a, name), term(&b, name), "{name}");
        }
        for name in ["student", "student_scales"] {
            assert_ne!(term(&a, name), term(&b, name), "{name}");
        }
        // Other student logits and penultimate features in the right half, and other pooled
        // tokens (each window lacks SAR somewhere): DLKD stays.
        let out = &mut step.outputs;
        let noise = |x: &Tensor| {
            let keep = right.logical_not().view([1, 1, 1, 32]);
            x.where_self(&keep, &(x + Tensor::randn_like(x)))
        };
        out.student.logits = noise(&out.student.logits);
        out.student.penultimate = noise(&out.student.penultimate);
        out.distill.student.global = Tensor::randn_like(&out.distill.student.global);
        let c = objective(&step, &half);
        for name in ["kd_features", "kd_logits"] {
            assert!(term(&a, name) > 0.0, "{name}");
            assert_eq!(term(&a, name), term(&c, name), "{name}");
        }
        // Other student logits in the left half: DLKD sees them.
        let out = &mut step.outputs;
        out.student.logits = &out.student.logits + Tensor::randn_like(&out.student.logits);
        assert_ne!(
            term(&a, "kd_logits"),
            term(&objective(&step, &half), "kd_logits")
        );
    }

    /// Validation scores each branch on the pixels it learns from.
    #[test]
    fn branch_labels_leave_out_the_gaps_of_what_a_branch_reads() {
        let half = batch(|col| col < 16);
        let ignored = |missing: Option<Vec<usize>>| {
            let s = missing.map(|m| crate::model::Scenario::new(m, 2).unwrap());
            half.branch_labels(s.as_ref(), 255)
                .eq(255)
                .sum(Kind::Int64)
                .int64_value(&[])
        };
        assert_eq!(ignored(None), 2 * 32 * 16, "the teacher reads SAR");
        assert_eq!(ignored(Some(vec![1])), 0, "student[sar] does not");
        assert_eq!(
            ignored(Some(vec![0])),
            2 * 32 * 16,
            "student[optical] reads SAR"
        );
        assert!(half.branch_labels(None, 255).equal(&half.labels));
    }
}
