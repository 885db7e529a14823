//! Data-parallel training with the semantics of PyTorch's `DistributedDataParallel`, on
//! libtorch's c10d ([`crate::dist`]): N processes (ranks), one per GPU or CPU share, each with a
//! whole copy of the model.
//!
//! - Rank 0's initial weights (and BatchNorm statistics) are broadcast to every rank.
//! - Each rank reads a disjoint, deterministic share of each epoch's samples: of the sequence of
//!   batches one process would read, rank r reads batches r, r + N, r + 2N, ... (with the dropout
//!   and random draws of those batches). The global batch is N x `batch_size`, and an epoch has
//!   N times fewer steps. A run on N ranks computes what one process computes with
//!   `train.accumulate` multiplied by N, up to the order of floating-point additions.
//! - Gradients are averaged by PyTorch DDP's reducer ([`crate::dist::Reducer`]): in buckets,
//!   each all-reduced while the backward pass goes on. With `train.accumulate` > 1 only the last
//!   micro-batch's backward pass is reduced (DDP's `no_sync`), except in joint runs, where the
//!   scenario drawn per micro-batch changes which parameters get gradients and each micro-batch
//!   is reduced.
//! - BatchNorm normalises with each rank's own batch statistics (DDP's default; no synchronised
//!   BatchNorm is offered); the running statistics are rank 0's, broadcast after every step
//!   (DDP's `broadcast_buffers`), so all ranks validate the same model and the checkpoints hold
//!   rank 0's.
//! - Validation is split: rank r scores validation batches r, r + N, ...; the confusion
//!   matrices are summed over the ranks, so the scores are exactly a single process's.
//! - Rank 0 alone writes checkpoints, TensorBoard, metrics and the console; logged losses are the
//!   mean over the ranks.

use anyhow::{ensure, Result};
use std::collections::BTreeMap;
use std::collections::HashMap;
use tch::{nn, Device, Kind, Tensor};

use super::run::RunKind;
use crate::dist::{BucketOptions, Launch, ProcessGroup, Reducer};
use crate::metrics::ConfusionMatrix;

/// The names of the variables that are statistics, not parameters (BatchNorm's running mean and
/// variance), broadcast from rank 0 after every step.
const BUFFER_SUFFIXES: [&str; 2] = ["running_mean", "running_var"];

/// One rank of a data-parallel run: its process group and, once [`DataParallel::attach`]ed to
/// a model, the gradient reducer.
pub(crate) struct DataParallel {
    group: ProcessGroup,
    reducer: Option<Reducer>,
    /// The BatchNorm running statistics, rank 0's broadcast after every step.
    buffers: Vec<Tensor>,
    /// Every micro-batch's gradients are reduced (joint runs), not only the last one's.
    sync_every_batch: bool,
    /// What carries the gradients, for the banner: `gloo`, `nccl` or `gloo (through host memory)`.
    backend: &'static str,
}

impl DataParallel {
    /// Joins the data-parallel job `launch` describes, computing on `device` (a collective
    /// call: it returns once every rank has joined).
    pub fn join(launch: &Launch, device: Device) -> Result<Self> {
        let backend = match device {
            Device::Cuda(_) if ProcessGroup::nccl_built() => "nccl",
            Device::Cuda(_) => "gloo through host memory",
            _ => "gloo",
        };
        Ok(Self {
            group: ProcessGroup::join(launch, device)?,
            reducer: None,
            buffers: Vec::new(),
            sync_every_batch: false,
            backend,
        })
    }

    pub fn rank(&self) -> usize {
        self.group.rank()
    }

    pub fn world_size(&self) -> usize {
        self.group.size()
    }

    /// `N processes (backend)`, for the run's first line.
    pub fn describe(&self) -> String {
        let n = self.world_size();
        let s = if n == 1 { "" } else { "es" };
        format!("{n} process{s} ({})", self.backend)
    }

    /// Gives every rank rank 0's model and sets up the reduction of the gradients of the
    /// variables of `vs` that require them (the trained parameters, the same on every rank):
    /// checks that the ranks' models have the same shapes, broadcasts every variable of `vs` from
    /// rank 0 and creates the reducer.
    pub(crate) fn attach(&mut self, vs: &nn::VarStore, kind: RunKind) -> Result<()> {
        let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        let params: Vec<(String, Tensor)> = variables
            .iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect();
        let trained: Vec<&Tensor> = params.iter().map(|(_, t)| t).collect();
        self.group.verify_same_parameters(&trained)?;
        tch::no_grad(|| {
            let all: Vec<&Tensor> = variables.iter().map(|(_, t)| t).collect();
            self.group.broadcast(&all, 0)
        })?;
        self.buffers = variables
            .into_iter()
            .filter(|(name, _)| BUFFER_SUFFIXES.iter().any(|s| name.ends_with(s)))
            .map(|(_, t)| t)
            .collect();
        self.sync_every_batch = kind == RunKind::Joint;
        let opts = BucketOptions {
            // Joint runs leave the students of the scenarios not drawn without gradients; the
            // other runs may have parameters their objective does not reach.
            find_unused: true,
            ..BucketOptions::default()
        };
        let ordered = backward_order(vs, &params);
        self.reducer = Some(Reducer::new(&self.group, &ordered, opts)?);
        Ok(())
    }

    /// Before the backward pass of one micro-batch, whose graph hangs off `roots`: arms the
    /// reducer when this micro-batch's gradients are to be averaged (the last of an optimiser
    /// step, or each one in joint runs).
    pub(crate) fn before_backward(&self, roots: &[&Tensor], last: bool) -> Result<()> {
        match &self.reducer {
            Some(reducer) if last || self.sync_every_batch => reducer.prepare_for_backward(roots),
            _ => Ok(()),
        }
    }

    /// After an optimiser step: rank 0's BatchNorm running statistics to every rank.
    pub(crate) fn after_step(&self) -> Result<()> {
        if self.buffers.is_empty() {
            return Ok(());
        }
        let buffers: Vec<&Tensor> = self.buffers.iter().collect();
        tch::no_grad(|| self.group.broadcast(&buffers, 0))
    }

    /// The mean over the ranks of each logged value (the same names on every rank).
    pub(crate) fn average(&self, values: &mut BTreeMap<String, f64>) -> Result<()> {
        let local: Vec<f64> = values.values().copied().collect();
        let t = Tensor::from_slice(&local).to_kind(Kind::Double);
        self.group.all_reduce_sum(&t)?;
        let total = Vec::<f64>::try_from(&t)?;
        let n = self.world_size() as f64;
        for (v, sum) in values.values_mut().zip(total) {
            *v = sum / n;
        }
        Ok(())
    }

    /// Whether any rank `asks` (this rank's answer): one all-reduced scalar, so every rank gets
    /// the same answer at the same step (a stop signal may reach the ranks at different steps).
    pub(crate) fn any_rank(&self, asks: bool) -> Result<bool> {
        let t = Tensor::from_slice(&[i64::from(asks)]);
        self.group.all_reduce_sum(&t)?;
        Ok(t.int64_value(&[0]) > 0)
    }

    /// Each rank's confusion matrices replaced by their sums over the ranks.
    pub(crate) fn sum_matrices(&self, matrices: &mut [ConfusionMatrix]) -> Result<()> {
        let counts: Vec<i64> = matrices
            .iter()
            .flat_map(|m| m.rows().into_iter().flatten().map(|c| c as i64))
            .collect();
        let t = Tensor::from_slice(&counts);
        self.group.all_reduce_sum(&t)?;
        let mut total = Vec::<i64>::try_from(&t)?.into_iter();
        for m in matrices.iter_mut() {
            let k = m.classes();
            let rows: Vec<Vec<u64>> = (0..k)
                .map(|_| total.by_ref().take(k).map(|c| c as u64).collect())
                .collect();
            *m = ConfusionMatrix::from_rows(&rows)?;
        }
        Ok(())
    }

    /// Waits for every rank at the end of the run (so that no rank leaves while another still
    /// writes or reduces).
    pub(crate) fn finish(&self) -> Result<()> {
        self.group.barrier()
    }

    /// `error` of a step that communicates (the backward pass all-reduces the gradients) with,
    /// for a rank of a data-parallel run, which rank failed and the likely cause.
    pub(crate) fn explain(dp: Option<&Self>, error: anyhow::Error, what: &str) -> anyhow::Error {
        match dp {
            Some(dp) => error.context(dp.group.failed(what)),
            None => error,
        }
    }

    /// Refuses a checkpoint written by a run on another number of processes: its steps were
    /// of another global batch, its epochs of another number of steps.
    pub(crate) fn check_resumable(found: Option<u64>, world_size: usize, what: &str) -> Result<()> {
        let trained = found.unwrap_or(1);
        ensure!(
            trained == world_size as u64,
            "{what}: the run was trained on {trained} process(es) (a global batch of {trained} x \
             batch_size); it resumes only on as many, not on {world_size}. Restart it with \
             `torchrun --nproc-per-node {trained} --no-python dis2 ...` or `srun --ntasks \
             {trained} dis2 ...`{}",
            if trained == 1 {
                " (or without either)"
            } else {
                ""
            }
        );
        Ok(())
    }
}

/// `params` in the order the backward pass produces their gradients, approximately: the reverse
/// of the order the model created them in (its forward order), as DDP buckets on its first
/// iteration. Unknown ones (none in practice) go last.
fn backward_order(vs: &nn::VarStore, params: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    let created: HashMap<usize, usize> = vs
        .trainable_variables()
        .iter()
        .enumerate()
        .map(|(i, t)| (t.data_ptr() as usize, i))
        .collect();
    let mut ordered: Vec<(usize, String, Tensor)> = params
        .iter()
        .map(|(n, t)| {
            let rank = created.get(&(t.data_ptr() as usize)).map_or(0, |i| i + 1);
            (rank, n.clone(), t.shallow_clone())
        })
        .collect();
    ordered.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    ordered.into_iter().map(|(_, n, t)| (n, t)).collect()
}
