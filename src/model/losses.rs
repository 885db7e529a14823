//! Loss functions: the reference's segmentation losses (`softmax_weighted_loss`, `dice_loss` of
//! `criterion_rs.py`). Pure functions of tensors; the training objectives that combine them (the
//! reference's `cal_train_loss` of `run_experiment_35.py`) are in `dis2::train::objective`, the
//! DLKD and orthogonality losses in `dis2::train::dlkd`.
//!
//! Segmentation losses take probabilities `[B, K, H, W]` and a one-hot target of the same shape
//! (see [`one_hot`]). The batched form the objectives use, [`seg_losses`], runs on the CPU as one
//! fused native op (`csrc/seg_loss.cpp`).

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

/// Class ids `[B, H, W]` (int64) to a float one-hot `[B, K, H, W]`. Ids outside `0..K` are an
/// error.
pub fn one_hot(labels: &Tensor, classes: i64) -> Result<Tensor> {
    if labels.dim() != 3 {
        bail!(
            "labels: expected [B, H, W] class ids, got shape {:?}",
            labels.size()
        );
    }
    let labels = labels.to_kind(Kind::Int64);
    if labels.numel() > 0 {
        let lo = labels.min().int64_value(&[]);
        let hi = labels.max().int64_value(&[]);
        if lo < 0 || hi >= classes {
            bail!("labels: class ids must lie in 0..{classes}, found {lo}..={hi}");
        }
    }
    Ok(labels
        .one_hot(classes)
        .permute([0, 3, 1, 2])
        .to_kind(Kind::Float))
}

/// Weighted cross-entropy (reference `softmax_weighted_loss`): per image and class the weight
/// `1 - pixels_of_class / pixels`, `-mean(weight · target · log(clamp(p, 0.005, 1)))`.
pub fn softmax_weighted_loss(pred: &Tensor, target: &Tensor) -> Tensor {
    let counts = target.sum_dim_intlist([2i64, 3].as_slice(), true, Kind::Float); // [B, K, 1, 1]
    let total = counts.sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
    let weights = 1.0 - counts / (total + 1e-7);
    let log_p = pred.clamp(0.005, 1.0).log();
    let loss: Tensor = weights * target * log_p;
    -loss.mean(Kind::Float)
}

/// Dice loss (reference `dice_loss`): `1 - mean_k(2·Σ p·t / (Σ p + Σ t + 1e-7))`, sums over
/// batch and pixels.
pub fn dice_loss(pred: &Tensor, target: &Tensor) -> Tensor {
    let dims = [0i64, 2, 3];
    let inter = (pred * target).sum_dim_intlist(dims.as_slice(), false, Kind::Float);
    let card = pred.sum_dim_intlist(dims.as_slice(), false, Kind::Float)
        + target.sum_dim_intlist(dims.as_slice(), false, Kind::Float);
    1.0 - (inter * 2.0 / (card + 1e-7)).mean(Kind::Float)
}

/// Weighted cross-entropy plus Dice.
pub fn seg_loss(pred: &Tensor, target: &Tensor) -> Tensor {
    softmax_weighted_loss(pred, target) + dice_loss(pred, target)
}

/// [`seg_loss`] of several predictions against one target as one batched computation: the
/// result is `[N]`, entry i the loss of `preds[i]` (all of the target's shape).
///
/// Float32 CPU tensors go through one fused native op (`csrc/seg_loss.cpp`, see
/// [`crate::native::seg_losses`]): it reads each prediction once in the forward pass and once in
/// the backward pass, where it writes the gradients directly, without the stacked copy and the
/// dozen full-size tensor ops of [`seg_losses_stacked`], which every other device and dtype uses.
/// Probabilities never exceed 1, so the reference's clamp to `[0.005, 1]` is a clamp from below in
/// both (the same values and gradients).
pub fn seg_losses(preds: &[&Tensor], target: &Tensor) -> Tensor {
    seg_losses_weighted(preds, target, None)
}

/// [`seg_losses`] with optional per-class weights `[K]` multiplying the reference's per-image
/// class weights in the cross-entropy (the Dice term is unchanged). `None` is the reference.
pub(crate) fn seg_losses_weighted(
    preds: &[&Tensor],
    target: &Tensor,
    class_weights: Option<&Tensor>,
) -> Tensor {
    let cpu_f32 = |t: &Tensor| t.device() == Device::Cpu && t.kind() == Kind::Float;
    if !cpu_f32(target) || !preds.iter().all(|p| cpu_f32(p)) {
        return seg_losses_stacked(preds, target, class_weights);
    }
    let weights = ce_weights(target, class_weights);
    // Only fails for inputs of mismatched shapes, which the model never builds.
    crate::native::seg_losses(preds, target, &weights).unwrap_or_else(|e| panic!("{e:#}"))
}

/// The cross-entropy weights `[B, K]` (no graph): per image and class `1 - pixels_of_class /
/// pixels` ([`softmax_weighted_loss`]), times `class_weights[k]` when given.
fn ce_weights(target: &Tensor, class_weights: Option<&Tensor>) -> Tensor {
    tch::no_grad(|| {
        let counts = target.sum_dim_intlist([2i64, 3].as_slice(), false, Kind::Float); // [B, K]
        let total = counts.sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
        let mut weights: Tensor = 1.0 - counts / (total + 1e-7);
        if let Some(w) = class_weights {
            weights *= w
                .to_kind(Kind::Float)
                .to_device(target.device())
                .view([1, -1]);
        }
        weights
    })
}

/// [`seg_losses_weighted`] with tensor ops, for any device and dtype: the N predictions are
/// stacked as `[B·K, N, H·W]`, so that every per-image, per-class sum over the pixels (the
/// weighted log-probabilities, the Dice intersections) is one batched matrix-vector product with
/// the target, and the backward pass makes few passes over the stacked probabilities.
pub(crate) fn seg_losses_stacked(
    preds: &[&Tensor],
    target: &Tensor,
    class_weights: Option<&Tensor>,
) -> Tensor {
    let n = preds.len() as i64;
    let s = target.size();
    let (b, k, hw) = (s[0], s[1], s[2] * s[3]);
    let p = Tensor::stack(preds, 2).reshape([b * k, n, hw]); // [B·K, N, HW]
    let (weighted_target, t, t_sum) = tch::no_grad(|| {
        let t = target.to_kind(Kind::Float).contiguous().reshape([b, k, hw]);
        let weights = ce_weights(&t.view([b, k, 1, hw]), class_weights).view([b, k, 1]);
        let weighted = (weights * &t).reshape([b * k, hw, 1]);
        let t_sum = t.sum_dim_intlist([0i64, 2].as_slice(), false, Kind::Float); // [K]
        (weighted, t.reshape([b * k, hw, 1]), t_sum)
    });
    // Weighted cross-entropy: -mean over (B, K, H, W) of w·t·log(clamp(p)).
    let log_p = p.clamp_min(0.005).log();
    let wce = log_p
        .bmm(&weighted_target) // [B·K, N, 1]
        .sum_dim_intlist([0i64, 2].as_slice(), false, Kind::Float)
        / (-((b * k * hw) as f64)); // [N]

    // Dice: sums over batch and pixels per class.
    let per_class = |x: Tensor| {
        x.reshape([b, k, n])
            .sum_dim_intlist([0i64].as_slice(), false, Kind::Float)
            .transpose(0, 1) // [N, K]
    };
    let inter = per_class(p.bmm(&t));
    let card = per_class(p.sum_dim_intlist([2i64].as_slice(), false, Kind::Float)) + t_sum;
    let dice = 1.0 - (inter * 2.0 / (card + 1e-7)).mean_dim([1i64].as_slice(), false, Kind::Float);
    wce + dice
}

/// The sum of scalar tensors (0 for none), keeping the graph.
pub(crate) fn sum_scalars(terms: &[Tensor]) -> Tensor {
    match terms {
        [] => Tensor::zeros([], (Kind::Float, tch::Device::Cpu)),
        [one] => one.shallow_clone(),
        many => Tensor::stack(many, 0).sum(Kind::Float),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values uniform in `[-1, 1)` from a fixed sequence (xorshift): the same data whatever
    /// other tests draw from libtorch's global generator meanwhile.
    fn noise(shape: [i64; 4], seed: u64) -> Tensor {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let values: Vec<f32> = (0..shape.iter().product::<i64>())
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect();
        Tensor::from_slice(&values).view(shape)
    }

    /// [`seg_losses_weighted`] or [`seg_losses_stacked`].
    type SegLosses = fn(&[&Tensor], &Tensor, Option<&Tensor>) -> Tensor;

    /// Logits `[b, k, h, w]` (leaves requiring grad) of `n` predictions, their probabilities and
    /// a one-hot target. Sharp and flat softmaxes, so that some probabilities fall below the
    /// clamp; prediction 1 is stored channels-last as the network's outputs are, prediction 3 (if
    /// any) in neither layout (H and W swapped in memory).
    fn case(n: usize, shape: [i64; 4], seed: u64) -> (Tensor, Vec<Tensor>, Vec<Tensor>) {
        let [b, k, h, w] = shape;
        let ids = ((noise([1, b, h, w], seed) + 1.0) * (k as f64 / 2.0))
            .floor()
            .clamp(0.0, (k - 1) as f64)
            .view([b, h, w])
            .to_kind(Kind::Int64);
        let target = one_hot(&ids, k).unwrap();
        let logits: Vec<Tensor> = (0..n)
            .map(|i| {
                (noise(shape, seed + 1 + i as u64) * (2.0 + 6.0 * i as f64)).set_requires_grad(true)
            })
            .collect();
        let probs = logits
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let p = l.softmax(1, Kind::Float);
                match i {
                    1 => crate::model::layers::channels_last(&p),
                    3 => p.transpose(2, 3).contiguous().transpose(2, 3),
                    _ => p,
                }
            })
            .collect::<Vec<_>>();
        assert!(probs
            .iter()
            .any(|p| p.lt(0.005).any().int64_value(&[]) != 0));
        (target, logits, probs)
    }

    /// [`seg_loss`] with per-class weights `[K]` on the cross-entropy, one prediction at a time
    /// (the reference's formulas).
    fn seg_loss_class_weighted(pred: &Tensor, target: &Tensor, class_weights: &Tensor) -> Tensor {
        let counts = target.sum_dim_intlist([2i64, 3].as_slice(), true, Kind::Float);
        let total = counts.sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
        let weights = (1.0 - counts / (total + 1e-7)) * class_weights.view([1, -1, 1, 1]);
        let wce: Tensor = weights * target * pred.clamp(0.005, 1.0).log();
        let wce = -wce.mean(Kind::Float);
        wce + dice_loss(pred, target)
    }

    /// Gradients of `loss` with respect to `wrt`, kept apart from the tensors' `.grad`.
    fn grads(loss: &Tensor, wrt: &[Tensor]) -> Vec<Tensor> {
        Tensor::run_backward(&[loss], wrt, true, false)
            .into_iter()
            .map(|g| g.detach())
            .collect()
    }

    /// Losses within `tol` and each gradient within 1e-5 of its largest entry.
    fn assert_close(
        what: &str,
        tol: f64,
        losses: (&Tensor, &Tensor),
        grads: (&[Tensor], &[Tensor]),
    ) {
        let diff = (losses.0 - losses.1).abs().max().double_value(&[]);
        assert!(diff < tol, "{what}: losses differ by {diff}");
        for (a, b) in grads.0.iter().zip(grads.1) {
            let d = (a - b).abs().max().double_value(&[]);
            let scale = b.abs().max().double_value(&[]);
            assert!(
                d <= 1e-5 * scale,
                "{what}: gradients differ by {d} (scale {scale})"
            );
        }
    }

    /// The batched losses (the native op and the stacked tensor ops) and their gradients equal
    /// the losses taken one by one, with and without class weights, for one-hot and for soft
    /// targets (the native kernel's two ways to the cross-entropy), through full blocks of its
    /// lanes, their tails, and runs longer than its products of probabilities.
    #[test]
    fn batched_seg_losses_match_one_by_one() {
        let shapes = [[2, 4, 6, 5], [3, 5, 9, 11], [2, 5, 47, 41]];
        for (shape, soft) in shapes.into_iter().flat_map(|s| [(s, false), (s, true)]) {
            let (target, logits, probs) = case(4, shape, 3);
            // Label smoothing: no zeros or ones.
            let target = if soft {
                target * 0.9 + 0.1 / shape[1] as f64
            } else {
                target
            };
            let refs: Vec<&Tensor> = probs.iter().collect();
            // Weights on the losses, so that each prediction's gradient is checked on its own.
            let loss_weights = Tensor::from_slice(&[1.0f32, 0.5, 2.0, 1.5]);
            let cw = Tensor::from_slice(&[0.5f32, 2.0, 1.0, 3.0, 0.25]).narrow(0, 0, shape[1]);
            for class_weights in [None, Some(&cw)] {
                let single: Vec<Tensor> = probs
                    .iter()
                    .map(|p| match class_weights {
                        None => seg_loss(p, &target),
                        Some(w) => seg_loss_class_weighted(p, &target, w),
                    })
                    .collect();
                let single = Tensor::stack(&single, 0);
                let gs = grads(&(&single * &loss_weights).sum(Kind::Float), &logits);
                let paths: [(&str, SegLosses); 2] = [
                    ("native", seg_losses_weighted),
                    ("stacked", seg_losses_stacked),
                ];
                for (name, f) in paths {
                    let batched = f(&refs, &target, class_weights);
                    let gb = grads(&(&batched * &loss_weights).sum(Kind::Float), &logits);
                    let what = format!(
                        "{name}, {shape:?}, soft {soft}, class weights {}",
                        class_weights.is_some()
                    );
                    // The stacked path's matrix products sum the ~2000 pixels of the largest shape
                    // in float32 (up to 2e-6 off here); the native op sums in double.
                    let tol = if name == "stacked" && shape[2] * shape[3] > 1000 {
                        5e-6
                    } else {
                        1e-6
                    };
                    assert_close(&what, tol, (&batched, &single), (&gb, &gs));
                }
            }
        }
    }

    /// The native op agrees with the stacked tensor ops (values and gradients), here with a
    /// target stored contiguously while the predictions are mostly channels-last.
    #[test]
    fn native_seg_losses_match_the_stacked_ones() {
        let (target, logits, probs) = case(4, [2, 3, 17, 19], 5);
        let target = target.contiguous();
        let probs: Vec<Tensor> = probs
            .iter()
            .map(crate::model::layers::channels_last)
            .collect();
        let refs: Vec<&Tensor> = probs.iter().collect();
        let cw = Tensor::from_slice(&[2.0f32, 0.5, 1.0]);
        let loss_weights = Tensor::from_slice(&[0.25f32, 1.0, 3.0, 2.0]);
        let native = seg_losses_weighted(&refs, &target, Some(&cw));
        let stacked = seg_losses_stacked(&refs, &target, Some(&cw));
        let gn = grads(&(&native * &loss_weights).sum(Kind::Float), &logits);
        let gs = grads(&(&stacked * &loss_weights).sum(Kind::Float), &logits);
        assert_close("native vs stacked", 1e-6, (&native, &stacked), (&gn, &gs));
    }

    /// The native op gives bitwise the same losses and gradients on 1 and on 2 threads, and the
    /// gradient of a contiguous or channels-last prediction has its layout.
    #[test]
    fn native_seg_losses_do_not_depend_on_the_thread_count() {
        let (target, _, probs) = case(4, [3, 5, 21, 13], 7);
        // The probabilities themselves as leaves, to see the op's own gradients.
        let probs: Vec<Tensor> = probs
            .iter()
            .map(|p| p.detach().set_requires_grad(true))
            .collect();
        let refs: Vec<&Tensor> = probs.iter().collect();
        let loss_weights = Tensor::from_slice(&[1.0f32, -0.5, 2.0, 0.75]);
        let run = |threads: i32| {
            crate::native::set_thread_local_threads(threads);
            let losses = seg_losses(&refs, &target);
            let g = grads(&(&losses * &loss_weights).sum(Kind::Float), &probs);
            let flat = |t: &Tensor| {
                let v = Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
                v.into_iter().map(f32::to_bits).collect::<Vec<_>>()
            };
            // Prediction 3 is in neither layout: the op reads a contiguous copy of it.
            for (gi, p) in g.iter().zip(&probs).take(3) {
                assert_eq!(gi.stride(), p.stride(), "gradient layout");
            }
            (flat(&losses), g.iter().map(flat).collect::<Vec<_>>())
        };
        let before = tch::get_num_threads();
        let one = run(1);
        let two = run(2);
        crate::native::set_thread_local_threads(before);
        assert!(one == two, "results differ between 1 and 2 threads");
    }
}
