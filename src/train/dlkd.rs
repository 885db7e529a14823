//! DLKD, the distillation of the teacher into a student, and the orthogonality
//! (disentanglement) loss between a student's compensation features and its available
//! modalities' features: the formulas and their assembly from what a training forward returns
//! ([`TrainOutputs`], whose [`DistillFeatures`] the model's attention pools made). The reference
//! computes both inside `DLKD_ver4`'s training forward (`kl_loss`, `diversity_loss`) from
//! `l2_kd_loss` and `orthogonality_loss`. Their weights come from the `train:` section
//! (`lambda_kd`, `kd_terms`, `kd_warmup_epochs`, `orth_weight`: [`KdWeights::at_epoch`]); the
//! objectives of [`super::objective`] add the weighted terms ([`weighted_terms`]).
//!
//! Every term is a float32 scalar whatever the forward's precision (each formula casts its
//! inputs), and the teacher's side is detached: DLKD trains the student only.
//!
//! Where a teacher input has no data (its features there come from filled inputs), DLKD compares
//! nothing: given the pixels where every teacher input has data, each term is the mean over the
//! cells of its feature that count, a cell counting when every pixel under it does (a min-pool of
//! the pixel mask to the feature's size; the pooled and global tokens are one cell per window).

use tch::{Kind, Reduction, Tensor};

use super::config::TrainConfig;
use crate::model::losses::sum_scalars;
use crate::model::{DistillFeatures, TrainOutputs};

/// Temperature of the logit distillation (the reference's T).
const KD_TEMPERATURE: f64 = 2.0;

/// The weights of the two DLKD parts in an objective (0 before the warm-up ends and for parts
/// switched off by `train.kd_terms`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KdWeights {
    pub features: f64,
    pub logits: f64,
}

impl KdWeights {
    /// The reference's DLKD: both parts with weight `w`.
    pub fn both(w: f64) -> Self {
        KdWeights {
            features: w,
            logits: w,
        }
    }

    /// The weights `train` gives the parts in `epoch` (counted from 0): 0 for the first
    /// `kd_warmup_epochs` epochs, then `lambda_kd` for the parts `kd_terms` names and 0 for the
    /// others.
    pub(crate) fn at_epoch(train: &TrainConfig, epoch: u64) -> Self {
        if epoch < train.kd_warmup_epochs {
            return KdWeights::both(0.0);
        }
        let (features, logits) = train.kd_weights();
        KdWeights { features, logits }
    }
}

/// The DLKD loss of a training forward in its two parts, each a float32 scalar with its graph
/// into the student.
#[derive(Debug)]
pub struct DlkdLoss {
    /// The feature terms: [`l2_kd_loss`] of the level-4 fusion tokens, of the pooled fused
    /// levels 1-3 and of the penultimate maps, summed.
    pub features: Tensor,
    /// The logit term: [`kd_logits_loss`].
    pub logits: Tensor,
}

impl DlkdLoss {
    /// Both parts summed: the reference's `kl_loss`.
    pub fn total(&self) -> Tensor {
        &self.features + &self.logits
    }
}

/// DLKD of `out`'s student against its teacher over every pixel: the reference's.
pub fn dlkd(out: &TrainOutputs) -> DlkdLoss {
    dlkd_over(out, None)
}

/// DLKD of `out`'s student against its teacher, over the pixels `valid` (`[B, 1, H, W]` float,
/// 1 where every input of the teacher has data, at the labels' resolution; `None`: every pixel,
/// [`dlkd`]).
pub fn dlkd_over(out: &TrainOutputs, valid: Option<&Tensor>) -> DlkdLoss {
    let (t, s) = (&out.distill.teacher, &out.distill.student);
    // The tokens pool the whole window: one cell each.
    let window = valid.map(|v| cells(v, [1, 1]).flatten(1, -1));
    let mut terms = vec![l2_kd_loss(&s.global, &t.global.detach(), window.as_ref())];
    terms.extend(
        s.pooled
            .iter()
            .zip(&t.pooled)
            .map(|(s, t)| l2_kd_loss(s, t, window.as_ref())),
    );
    let at = |x: &Tensor| {
        let size = x.size();
        valid.map(|v| cells(v, [size[2], size[3]]))
    };
    terms.push(l2_kd_loss(
        &out.student.penultimate,
        &out.teacher.penultimate.detach(),
        at(&out.student.penultimate).as_ref(),
    ));
    DlkdLoss {
        features: sum_scalars(&terms),
        logits: kd_logits_loss(
            &out.student.logits,
            &out.teacher.logits,
            at(&out.student.logits).as_ref(),
        ),
    }
}

/// The pixel mask `valid` (`[B, 1, H, W]`, 0/1) at a feature's `size`: a cell is 1 when every
/// pixel under it is (a min-pool; the mask itself at its own size).
fn cells(valid: &Tensor, size: [i64; 2]) -> Tensor {
    let own = valid.size();
    if own[2..] == size {
        return valid.shallow_clone();
    }
    let (holes, _) = (valid.ones_like() - valid).adaptive_max_pool2d(size);
    holes.ones_like() - holes
}

/// Mean of `x` (`[B, C, ...]`) over the elements of the cells that count: `cells` is `x`'s
/// shape with one channel, 0/1; 0 when none counts.
fn masked_mean(x: &Tensor, cells: &Tensor) -> Tensor {
    let channels = x.size()[1] as f64;
    (x * cells).sum(Kind::Float) / (cells.sum(Kind::Float) * channels).clamp_min(1.0)
}

/// The orthogonality loss (the reference's `diversity_loss`): [`orthogonality_loss`] of every
/// (missing, available) modality pair's pooled features at levels 1-3, summed; a float32 scalar.
/// With two modalities there is one pair.
pub fn orthogonality(features: &DistillFeatures) -> Tensor {
    let mut terms = Vec::new();
    for comp in &features.compensation {
        for avail in &features.available {
            terms.extend(
                comp.iter()
                    .zip(avail)
                    .map(|(c, a)| orthogonality_loss(c, a)),
            );
        }
    }
    sum_scalars(&terms)
}

/// The terms an objective adds for distillation, as `(name, loss, weight)`: `kd_features` and
/// `kd_logits` (the [`DlkdLoss`] parts over the pixels `valid`, see [`dlkd_over`]) weighted by `kd`,
/// `orth` weighted by `orth_weight`.
pub(crate) fn weighted_terms(
    out: &TrainOutputs,
    kd: KdWeights,
    orth_weight: f64,
    valid: Option<&Tensor>,
) -> Vec<(String, Tensor, f64)> {
    let DlkdLoss { features, logits } = dlkd_over(out, valid);
    vec![
        ("kd_features".into(), features, kd.features),
        ("kd_logits".into(), logits, kd.logits),
        ("orth".into(), orthogonality(&out.distill), orth_weight),
    ]
}

/// `x` in float32, divided by its L2 norm along dim 1 (at least 1e-6).
fn l2_normalize(x: &Tensor) -> Tensor {
    let x = x.to_kind(Kind::Float);
    // sqrt of the sum of squares: the same value as `norm(2, dim=1)`, and much faster than the
    // norm kernel on maps stored channels-first.
    let norm = x
        .square()
        .sum_dim_intlist([1i64].as_slice(), true, Kind::Float)
        .sqrt()
        .clamp_min(1e-6);
    x / norm
}

/// Reference `l2_kd_loss`: L2-normalise both along dim 1 (eps 1e-6) and take the mean squared
/// difference (over all elements; for maps `[B, C, H, W]` that is the reference's `spatial`
/// variant), or over the elements of the `cells` that count ([`masked_mean`]).
fn l2_kd_loss(student: &Tensor, teacher: &Tensor, cells: Option<&Tensor>) -> Tensor {
    let squared = (l2_normalize(student) - l2_normalize(teacher)).square();
    match cells {
        None => squared.mean(Kind::Float),
        Some(c) => masked_mean(&squared, c),
    }
}

/// Reference `orthogonality_loss`: mean over the batch of the squared cosine between `a` and
/// `b` (`[B, D]`).
fn orthogonality_loss(a: &Tensor, b: &Tensor) -> Tensor {
    let n = |x: &Tensor| {
        let x = x.to_kind(Kind::Float);
        &x / x
            .norm_scalaropt_dim(2, [-1i64].as_slice(), true)
            .clamp_min(1e-12)
    };
    (n(a) * n(b))
        .sum_dim_intlist([-1i64].as_slice(), false, Kind::Float)
        .square()
        .mean(Kind::Float)
}

/// `T² · KL(softmax(teacher/T) || softmax(student/T))` of logits `[B, K, H, W]` with PyTorch
/// `reduction='mean'` (mean over every element), T = 2, or the mean over the elements of the
/// `cells` (`[B, 1, H, W]`) that count. The teacher logits are detached.
fn kd_logits_loss(
    student_logits: &Tensor,
    teacher_logits: &Tensor,
    cells: Option<&Tensor>,
) -> Tensor {
    let t = KD_TEMPERATURE;
    let p = (teacher_logits.detach().to_kind(Kind::Float) / t).softmax(1, Kind::Float);
    let log_q = (student_logits.to_kind(Kind::Float) / t).log_softmax(1, Kind::Float);
    match cells {
        None => log_q.kl_div(&p, Reduction::Mean, false) * (t * t),
        Some(c) => masked_mean(&log_q.kl_div(&p, Reduction::None, false), c) * (t * t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn value(t: &Tensor) -> f64 {
        t.double_value(&[])
    }

    #[test]
    fn l2_kd_loss_ignores_scale_and_grows_with_the_angle() {
        let opts = (Kind::Float, Device::Cpu);
        let a = Tensor::from_slice(&[1.0f32, 0.0, 2.0, 2.0]).view([2, 2]);
        assert!(value(&l2_kd_loss(&a, &(&a * 3.0), None)) < 1e-12);
        // Rows (1, 0) against (0, 1): squared distance 2 over 2 elements; rows (1, 1) alike: 0.
        let b = Tensor::from_slice(&[0.0f32, 1.0, 1.0, 1.0]).view([2, 2]);
        assert!((value(&l2_kd_loss(&a, &b, None)) - 0.5).abs() < 1e-6);
        // bfloat16 features give a float32 loss.
        let loss = l2_kd_loss(
            &a.to_kind(Kind::BFloat16),
            &Tensor::ones([2, 2], opts),
            None,
        );
        assert_eq!(loss.kind(), Kind::Float);
    }

    #[test]
    fn orthogonality_loss_is_the_mean_squared_cosine() {
        let a = Tensor::from_slice(&[1.0f32, 0.0, 3.0, 4.0]).view([2, 2]);
        let b = Tensor::from_slice(&[0.0f32, 5.0, 3.0, 4.0]).view([2, 2]);
        // Cosines 0 and 1: mean of their squares 0.5.
        assert!((value(&orthogonality_loss(&a, &b)) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn kd_logits_loss_is_zero_for_the_teachers_logits_only() {
        let teacher = Tensor::from_slice(&[2.0f32, -1.0, 0.5, 0.0]).view([1, 2, 2, 1]);
        assert!(value(&kd_logits_loss(&teacher, &teacher, None)).abs() < 1e-7);
        let other = teacher.flip([1]);
        // By hand: T² · Σ p (log p - log q) over every element, divided by their number (4).
        let p = (&teacher / KD_TEMPERATURE).softmax(1, Kind::Float);
        let q = (&other / KD_TEMPERATURE).softmax(1, Kind::Float);
        let kl_sum = (&p * (p.log() - q.log())).sum(Kind::Float);
        let want = kl_sum * (KD_TEMPERATURE * KD_TEMPERATURE) / 4.0;
        assert!((value(&kd_logits_loss(&other, &teacher, None)) - value(&want)).abs() < 1e-6);
    }

    #[test]
    fn masked_terms_compare_only_the_cells_that_count() {
        // Two samples of 2x4 logits; the teacher's inputs lack data in the right half of the
        // second sample.
        let valid = Tensor::from_slice(&[
            1.0f32, 1., 1., 1., 1., 1., 1., 1., 1., 1., 0., 0., 1., 1., 0., 0.,
        ])
        .view([2, 1, 2, 4]);
        let teacher = Tensor::randn([2, 3, 2, 4], (Kind::Float, Device::Cpu));
        let half = valid.expand([2, 3, 2, 4], false);
        let noise = Tensor::randn([2, 3, 2, 4], (Kind::Float, Device::Cpu));
        // A student that differs from the teacher only where the inputs lack data.
        let student = &teacher + &noise * (half.ones_like() - &half);
        assert!(value(&kd_logits_loss(&student, &teacher, Some(&valid))).abs() < 1e-7);
        assert!(value(&kd_logits_loss(&student, &teacher, None)) > 1e-4);
        assert!(value(&l2_kd_loss(&student, &teacher, Some(&valid))) < 1e-12);
        // Where it counts, the masked mean is the mean over the counted elements.
        let other = &teacher + &noise;
        let all = value(&l2_kd_loss(&other, &teacher, None));
        let first = value(&l2_kd_loss(
            &other.get(0).unsqueeze(0),
            &teacher.get(0).unsqueeze(0),
            None,
        ));
        let masked = value(&l2_kd_loss(&other, &teacher, Some(&valid)));
        assert!(
            (all - masked).abs() > 1e-6,
            "the masked mean leaves cells out"
        );
        let left = other.get(1).narrow(2, 0, 2).unsqueeze(0);
        let left_t = teacher.get(1).narrow(2, 0, 2).unsqueeze(0);
        let second = value(&l2_kd_loss(&left, &left_t, None));
        assert!(
            (masked - (2.0 * first + second) / 3.0).abs() < 1e-6,
            "{masked}"
        );
        // Coarser features: a cell counts when all its pixels do; a token per window.
        let coarse = cells(&valid, [1, 2]);
        assert_eq!(
            Vec::<f32>::try_from(coarse.flatten(0, -1)).unwrap(),
            vec![1.0, 1.0, 1.0, 0.0]
        );
        let window = cells(&valid, [1, 1]).flatten(0, -1);
        assert_eq!(Vec::<f32>::try_from(window).unwrap(), vec![1.0, 0.0]);
    }

    #[test]
    fn the_dlkd_weights_follow_the_warm_up_and_the_terms() {
        let mut train: TrainConfig =
            crate::config::from_yaml_str("lambda_kd: 2\nkd_warmup_epochs: 3\n").unwrap();
        assert_eq!(KdWeights::at_epoch(&train, 2), KdWeights::both(0.0));
        assert_eq!(KdWeights::at_epoch(&train, 3), KdWeights::both(2.0));
        train.kd_terms = vec![super::super::config::KdTerm::Logits];
        let w = KdWeights::at_epoch(&train, 4);
        assert_eq!((w.features, w.logits), (0.0, 2.0));
    }
}
