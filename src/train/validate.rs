//! Validation during training: one confusion matrix over the validation windows for each branch
//! being trained. A branch is scored where the label is a class and every modality it reads has
//! data (the teacher: all of them; a student or the filled teacher: all but the missing ones,
//! whatever those hold there): the pixels it learns from ([`Batch::branch_labels`], the one
//! definition), as `dis2 eval` scores it.
//!
//! [`Batch::branch_labels`]: crate::data::loader::Batch::branch_labels

use anyhow::Result;
use std::sync::Arc;
use tch::{Device, Tensor};

use crate::config::Experiment;
use crate::data::dataset::SceneDataset;
use crate::data::layouts::Split;
use crate::data::loader::{Loader, LoaderOptions};
use crate::data::normalise::Normaliser;
use crate::data::sampling::SlidingWindowSampler;
use crate::metrics::{warn_absent_classes, ConfusionMatrix, Scores};
use crate::model::{Dis2Net, Route};

/// Which validation batches one process scores: batches `index`, `index + of`, `index + 2 of`,
/// ... of the validation grid (a data-parallel rank's share; [`Share::WHOLE`] alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Share {
    pub index: usize,
    pub of: usize,
}

impl Share {
    /// Every batch.
    pub(crate) const WHOLE: Share = Share { index: 0, of: 1 };
}

/// The counts of one validation pass: a confusion matrix per branch, and every labelled pixel
/// against itself, whose support is the split's class set whatever each branch's inputs. The
/// counts of the shares of several processes add up to the whole.
pub(crate) struct ValidationCounts {
    /// One `[classes x classes]` matrix per branch, in the order of the branches.
    pub branches: Vec<ConfusionMatrix>,
    /// Every labelled pixel as a prediction of its own class.
    pub labelled: ConfusionMatrix,
}

impl ValidationCounts {
    /// Each branch's scores, averaged over one class set (those of the validation labels): the
    /// windows are the same at every validation, so every branch and step averages the same
    /// classes. The first validation of a process names the classes the split lacks.
    pub fn scores(&self, exp: &Experiment) -> Vec<Scores> {
        let support = self.labelled.support();
        let scores: Vec<Scores> = self
            .branches
            .iter()
            .map(|cm| cm.scores_over(&support, &[]))
            .collect();
        if let Some(first) = scores.first() {
            let k = exp.model.num_classes as usize;
            let names: Vec<String> = exp
                .data
                .class_table(k)
                .into_iter()
                .map(|c| c.name)
                .collect();
            warn_absent_classes("the validation split", &names, first);
        }
        scores
    }
}

/// Runs each branch over the validation grid (at most `max_batches` batches) and scores it.
pub fn validate(
    net: &Dis2Net,
    exp: &Experiment,
    branches: &[Route],
    device: Device,
    max_batches: Option<usize>,
) -> Result<Vec<Scores>> {
    let counts = confusion_matrices(net, exp, branches, device, max_batches, Share::WHOLE)?;
    Ok(counts.scores(exp))
}

/// The counts of each branch over `share` of the first `max_batches` batches of the validation
/// grid (all when `None`).
pub(crate) fn confusion_matrices(
    net: &Dis2Net,
    exp: &Experiment,
    branches: &[Route],
    device: Device,
    max_batches: Option<usize>,
    share: Share,
) -> Result<ValidationCounts> {
    let k = exp.model.num_classes as usize;
    let mut matrices = vec![ConfusionMatrix::new(k); branches.len()];
    let mut labelled = ConfusionMatrix::new(k);
    for batch in share_loader(exp, max_batches, share)? {
        let batch = batch?;
        labelled.add_tensors(&batch.reference, &batch.reference, exp.data.ignore_index)?;
        let inputs: Vec<Tensor> = batch.inputs.iter().map(|t| t.to_device(device)).collect();
        let given: Vec<Option<&Tensor>> = inputs.iter().map(Some).collect();
        for (branch, cm) in branches.iter().zip(matrices.iter_mut()) {
            let probs = tch::no_grad(|| net.forward_route(branch, &given, false))?;
            let pred = probs.argmax(1, false);
            let labels = batch
                .branch_labels(branch.scenario(), exp.data.ignore_index)
                .to_device(device);
            cm.add_tensors(&labels, &pred, exp.data.ignore_index)?;
        }
    }
    Ok(ValidationCounts {
        branches: matrices,
        labelled,
    })
}

/// The loader of `share` of the first `max_batches` batches of the validation grid: the grid's
/// windows cut into batches as [`Loader::sliding_windows`] cuts them, every `share.of`-th batch kept.
fn share_loader(exp: &Experiment, max_batches: Option<usize>, share: Share) -> Result<Loader> {
    if share == Share::WHOLE && max_batches.is_none() {
        return Loader::sliding_windows(&exp.data, &exp.model, Split::Val);
    }
    let dataset = Arc::new(SceneDataset::open(&exp.data, &exp.model, Split::Val)?);
    let norm = Arc::new(Normaliser::from_config(&exp.data, &exp.model)?);
    let windows = SlidingWindowSampler::from_config(&exp.data, &exp.model).windows(&dataset);
    let size = exp.data.sampling.batch_size.max(1);
    let specs = windows
        .chunks(size)
        .take(max_batches.unwrap_or(usize::MAX))
        .enumerate()
        .filter(|(i, _)| i % share.of == share.index)
        .flat_map(|(_, batch)| batch.iter().cloned())
        .collect();
    let options = LoaderOptions {
        batch_size: size,
        prefetch: exp.data.sampling.prefetch,
        drop_last: false,
    };
    Ok(Loader::new(dataset, specs, norm, options))
}
