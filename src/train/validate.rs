//! Validation during training: one confusion matrix over the validation windows for each branch
//! being trained. A branch is scored where the label is a class and every modality it reads has
//! data (the teacher: all of them; a student or the filled teacher: all but the missing ones),
//! as `dis2 eval` scores it.

use anyhow::Result;
use tch::{Device, Tensor};

use crate::config::Experiment;
use crate::data::layouts::Split;
use crate::data::loader::{Batch, Loader};
use crate::metrics::{warn_absent_classes, ConfusionMatrix, Scores};
use crate::model::{Dis2Net, Route};

/// Runs each branch over the validation grid (at most `max_batches` batches) and scores it. The
/// windows are the same at every validation, so every branch and step is averaged over the same
/// classes (those of the validation labels); the first validation names the classes it lacks.
pub fn validate(
    net: &Dis2Net,
    exp: &Experiment,
    branches: &[Route],
    device: Device,
    max_batches: Option<usize>,
) -> Result<Vec<Scores>> {
    let k = exp.model.num_classes as usize;
    let mut matrices = vec![ConfusionMatrix::new(k); branches.len()];
    // Every labelled pixel against itself: the class set of every branch, whatever its inputs.
    let mut labelled = ConfusionMatrix::new(k);
    let loader = Loader::grid(&exp.data, &exp.model, Split::Val)?;
    for (i, batch) in loader.enumerate() {
        if max_batches.is_some_and(|m| i >= m) {
            break;
        }
        let batch = batch?;
        labelled.add_tensors(&batch.reference, &batch.reference, exp.data.ignore_index)?;
        let inputs: Vec<Tensor> = batch.inputs.iter().map(|t| t.to_device(device)).collect();
        let given: Vec<Option<&Tensor>> = inputs.iter().map(Some).collect();
        for (branch, cm) in branches.iter().zip(matrices.iter_mut()) {
            let probs = tch::no_grad(|| net.forward_route(branch, &given, false))?;
            let pred = probs.argmax(1, false);
            let labels = branch_labels(&batch, branch, exp.data.ignore_index).to_device(device);
            cm.add_tensors(&labels, &pred, exp.data.ignore_index)?;
        }
    }
    let support = labelled.support();
    let scores: Vec<Scores> = matrices
        .iter()
        .map(|cm| cm.scores_over(&support, &[]))
        .collect();
    if let Some(first) = scores.first() {
        let names: Vec<String> = exp
            .data
            .class_table(k)
            .into_iter()
            .map(|c| c.name)
            .collect();
        warn_absent_classes("the validation split", &names, first);
    }
    Ok(scores)
}

/// The batch's reference labels where every modality `branch` reads has data, `ignore_index`
/// elsewhere: `[B, H, W]` int64 on the CPU.
pub fn branch_labels(batch: &Batch, branch: &Route, ignore_index: i64) -> Tensor {
    let mut read = batch.reference.ones_like().to_kind(tch::Kind::Bool);
    for (i, mask) in batch.masks.iter().enumerate() {
        if !branch.scenario().is_some_and(|s| s.is_missing(i)) {
            read = read.logical_and(mask);
        }
    }
    batch
        .reference
        .where_self(&read, &batch.reference.full_like(ignore_index))
}
