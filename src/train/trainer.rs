//! The training loop shared by `train-teacher`, `distill` and `distill --joint`.
//!
//! Repeatability: every batch `b` reseeds libtorch (dropout) and the run's own random choices
//! (modality dropout, the joint scenario draw) from `(seed, b)`, the crops come from
//! `(seed, epoch, sample)`, the learning rate is a function of the step and the optimiser state
//! is saved with the weights. So a run resumed from a checkpoint computes, on the same machine,
//! the same losses as one that never stopped.

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tch::{nn, Device, Tensor};

use super::config::TrainConfig;
use super::distributed::DataParallel;
use super::dlkd::KdWeights;
use super::joint_backward::{forward_joint, JointBackward};
use super::objective::{
    batch_target, distill_objective, joint_objective, teacher_objective, Objective,
};
use super::optim::Optimizer;
use super::progress::{Progress, StepReport};
use super::run::{CheckpointMeta, RunDir, RunKind, RunSpec};
use super::schedule::ScheduleShape;
use super::tensorboard::RunLog;
use super::validate::{confusion_matrices, Share};
use crate::checkpoint::{self, CheckpointInfo};
use crate::config::Experiment;
use crate::data::dataset::SceneDataset;
use crate::data::layouts::Split;
use crate::data::loader::{Batch, Loader, LoaderOptions};
use crate::data::normalise::Normaliser;
use crate::data::rng::Rng;
use crate::data::sampling::{RandomCropSampler, SampleSpec};
use crate::figures;
use crate::metrics::Scores;
use crate::model::{student_key, Dis2Net, Route, Scenario};
use crate::preempt;

/// Streams of the run's own random numbers (apart from the data sampler's).
const STREAM_MODALITY_DROPOUT: u64 = 0xD809;
const STREAM_JOINT_SCENARIO: u64 = 0x5CE0;
const STREAM_TORCH: u64 = 0x70C4;

/// How the run is shown.
#[derive(Debug, Clone, Copy)]
pub struct TrainOptions {
    pub device: Device,
    pub quiet: bool,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct Summary {
    pub run_dir: PathBuf,
    pub steps: u64,
    /// The last validation: (branch label, scores).
    pub validation: Vec<(String, Scores)>,
    pub best_miou: Option<f64>,
}

/// Starts a new run in `out` of the experiment `exp`, read from the file `config` (named in
/// errors). What the run reads is checked before its first step ([`Trainer::open_data`]), and a
/// run refused there leaves a folder the same command can use again.
pub fn start(
    exp: Experiment,
    config: &Path,
    spec: RunSpec,
    out: &Path,
    opts: TrainOptions,
) -> Result<Summary> {
    start_with(exp, config, spec, out, opts, None)
}

/// Starts a new run in `out`, as one rank of a data-parallel job when `dp` is given (rank 0
/// writes the run directory; see [`super::distributed`]).
pub(crate) fn start_with(
    exp: Experiment,
    config: &Path,
    spec: RunSpec,
    out: &Path,
    opts: TrainOptions,
    dp: Option<DataParallel>,
) -> Result<Summary> {
    let run = RunDir::new(out);
    let exp = with_run_scenarios(exp, &spec)?;
    let writes = dp.as_ref().is_none_or(|dp| dp.rank() == 0);
    if writes {
        run.create()?;
        exp.save_effective(&run.config())?;
    }
    let mut trainer = Trainer::new(exp, spec.clone(), run, opts, dp)?;
    if let Some(teacher) = trainer.spec.teacher.clone() {
        trainer.load_teacher(&teacher)?;
    }
    let data = trainer.open_data(config)?;
    // run.yaml marks the folder as a run: written once the model, its teacher and its data are
    // in place, so a refused --teacher or split leaves a folder the same command can use again.
    if writes {
        trainer.run.write_spec(&spec)?;
    }
    trainer.run(data)
}

/// Continues the run in `run_dir` from its last checkpoint (from the start when there is none).
pub fn resume(run_dir: &Path, opts: TrainOptions) -> Result<Summary> {
    resume_with(run_dir, &[], opts, None)
}

/// [`resume`] with the `--set` overrides `overrides`, which may change the run's length only
/// ([`RunDir::resumed_experiment`]; a new length is written into the run's `config.yaml`), as
/// one rank of a data-parallel job when `dp` is given: every rank reads the run directory, which
/// must be the same on every node (a shared file system).
pub(crate) fn resume_with(
    run_dir: &Path,
    overrides: &[String],
    opts: TrainOptions,
    dp: Option<DataParallel>,
) -> Result<Summary> {
    let run = RunDir::new(run_dir);
    let spec = run.read_spec()?;
    let (exp, new_length) = run.resumed_experiment(overrides)?;
    let config = run.config();
    let mut trainer = Trainer::new(exp, spec, run, opts, dp)?;
    if trainer.run.last().exists() {
        trainer.restore()?;
    } else if let Some(teacher) = trainer.spec.teacher.clone() {
        trainer.load_teacher(&teacher)?;
    }
    let data = trainer.open_data(&config)?;
    if new_length && trainer.writes() {
        trainer.note_new_length();
        trainer.exp.save_effective(&config)?;
    }
    trainer.run(data)
}

/// The experiment with the model's `scenarios` set to what the run trains.
fn with_run_scenarios(mut exp: Experiment, spec: &RunSpec) -> Result<Experiment> {
    match spec.kind {
        RunKind::Teacher => ensure!(spec.scenarios.is_empty(), "a teacher run has no scenarios"),
        RunKind::Distill => ensure!(
            spec.scenarios.len() == 1,
            "distill trains exactly one scenario"
        ),
        RunKind::Joint => ensure!(!spec.scenarios.is_empty(), "a joint run needs scenarios"),
    }
    exp.model.scenarios = Some(spec.scenarios.clone());
    exp.model.scenario_list().context("--missing")?;
    ensure!(
        (0.0..1.0).contains(&spec.modality_dropout),
        "--modality-dropout: must lie in [0, 1), found {}",
        spec.modality_dropout
    );
    Ok(exp)
}

struct Trainer {
    exp: Experiment,
    spec: RunSpec,
    run: RunDir,
    opts: TrainOptions,
    vs: nn::VarStore,
    net: Dis2Net,
    optimizer: Optimizer,
    scenarios: Vec<Scenario>,
    /// Joint: the probability of each scenario, normalised.
    scenario_weights: Vec<f64>,
    modality_names: Vec<String>,
    /// Joint: how the backward pass runs (side by side for small models on the CPU).
    joint_backward: JointBackward,
    /// Optimiser steps done.
    step: u64,
    best_miou: Option<f64>,
    /// This process's rank in a data-parallel job, if it is one.
    dp: Option<DataParallel>,
}

impl Trainer {
    fn new(
        exp: Experiment,
        spec: RunSpec,
        run: RunDir,
        opts: TrainOptions,
        dp: Option<DataParallel>,
    ) -> Result<Self> {
        tch::manual_seed(exp.seed as i64);
        let vs = nn::VarStore::new(opts.device);
        let mut net = Dis2Net::new(&vs.root(), &exp.model)?;
        let precision = exp.train.precision.resolve(opts.device);
        net.set_precision(precision.context("train.precision")?);
        let scenarios = net.scenarios().to_vec();
        // What trains: everything but, for a student, the frozen teacher and encoders.
        let trainable = |name: &str| spec.kind != RunKind::Distill || student_key(name).is_some();
        let mut params: Vec<(String, Tensor)> = Vec::new();
        for (name, t) in vs.variables() {
            if !t.requires_grad() {
                continue;
            }
            if trainable(&name) {
                params.push((name, t));
            } else {
                let _ = t.set_requires_grad(false);
            }
        }
        params.sort_by(|a, b| a.0.cmp(&b.0));
        ensure!(!params.is_empty(), "nothing to train");
        let optimizer = Optimizer::new(exp.train.optimizer.clone(), params);
        let scenario_weights = joint_weights(&exp.train, &scenarios, &exp)?;
        let modality_names = exp
            .model
            .modalities
            .iter()
            .map(|m| m.name.clone())
            .collect();
        let batch_size = exp.data.sampling.batch_size as i64;
        let joint_backward = JointBackward::choose(opts.device, &exp.model, batch_size);
        Ok(Self {
            exp,
            spec,
            run,
            opts,
            vs,
            net,
            optimizer,
            scenarios,
            scenario_weights,
            modality_names,
            joint_backward,
            step: 0,
            best_miou: None,
            dp,
        })
    }

    /// Copies the teacher and the encoders from a teacher checkpoint made for the same model.
    fn load_teacher(&mut self, path: &Path) -> Result<()> {
        let info =
            checkpoint::read_info(path).with_context(|| format!("--teacher {}", path.display()))?;
        let diffs = checkpoint::network_differences(&info.model, &self.exp.model);
        if !diffs.is_empty() {
            bail!(
                "--teacher {}: made for another model than the experiment's:\n  {}",
                path.display(),
                diffs.join("\n  ")
            );
        }
        checkpoint::load_weights_where(&self.vs, path, |name| student_key(name).is_none())
            .with_context(|| format!("--teacher {}", path.display()))
    }

    /// Loads the last checkpoint: weights, optimiser state and progress.
    fn restore(&mut self) -> Result<()> {
        let last = self.run.last();
        let info = checkpoint::read_info(&last)?;
        let diffs = checkpoint::config_differences(&info.model, &self.exp.model);
        ensure!(
            diffs.is_empty(),
            "{}: another model than the run's:\n  {}",
            last.display(),
            diffs.join("\n  ")
        );
        let meta =
            CheckpointMeta::from_metadata(&info.metadata, &checkpoint::checkpoint_files(&last).1)?;
        DataParallel::check_resumable(
            meta.world_size,
            self.world_size(),
            &last.display().to_string(),
        )?;
        checkpoint::load_weights(&self.vs, &last)?;
        let optim = last.join("optim.safetensors");
        let state = Tensor::read_safetensors(&optim)
            .with_context(|| format!("cannot read {}", optim.display()))?;
        self.optimizer
            .load_state_tensors(state)
            .with_context(|| format!("{}", optim.display()))?;
        self.step = meta.step;
        self.best_miou = meta.best_miou;
        if self.writes() {
            RunDir::truncate_lines(&self.run.metrics(), self.step)?;
            RunDir::truncate_lines(&self.run.validation(), self.step)?;
        }
        Ok(())
    }

    fn batches_per_epoch(&self) -> u64 {
        (self.exp.data.sampling.samples_per_epoch / self.exp.data.sampling.batch_size) as u64
    }

    /// The number of processes of the data-parallel job (1 alone).
    fn world_size(&self) -> usize {
        self.dp.as_ref().map_or(1, DataParallel::world_size)
    }

    /// Whether this process writes the run's outputs (rank 0, or a process alone).
    fn writes(&self) -> bool {
        self.dp.as_ref().is_none_or(|dp| dp.rank() == 0)
    }

    /// The run's micro-batch number `b` of the sequence a single process reads: a data-parallel
    /// rank reads every world-size-th one (see [`super::distributed`]).
    fn global_batch(&self, local: u64) -> u64 {
        let rank = self.dp.as_ref().map_or(0, DataParallel::rank) as u64;
        local * self.world_size() as u64 + rank
    }

    fn total_steps(&self) -> u64 {
        let t = &self.exp.train;
        let steps = t.epochs * self.batches_per_epoch() / (t.accumulate * self.world_size() as u64);
        t.max_steps.map_or(steps, |m| steps.min(m))
    }

    /// What the run will read and how long it is, checked before its first step: the number of
    /// steps (at least one, and not less than a resumed run has done), the train split, opened
    /// for the loader, and the val split, which validation reads every `train.val_every` steps
    /// and at the end (the test split is not read). `config` is the experiment file, named in
    /// the errors.
    fn open_data(&self, config: &Path) -> Result<TrainingData> {
        let (at, train) = (config.display(), &self.exp.train);
        let total = self.total_steps();
        ensure!(
            total >= 1,
            "{at}: train.epochs x batches per epoch is less than one optimiser step (accumulate {})",
            train.accumulate
        );
        ensure!(
            total >= self.step,
            "{at}: the run would stop after {total} optimiser steps (train.epochs {}, \
             train.max_steps {}), but it has done {} already",
            train.epochs,
            train.max_steps.map_or("not set".into(), |m| m.to_string()),
            self.step
        );
        let data = TrainingData::open(&self.exp, self.world_size() as u64)
            .with_context(|| format!("{at}: the train split"))?;
        SceneDataset::open(&self.exp.data, &self.exp.model, Split::Val).with_context(|| {
            format!(
                "{at}: the val split, which validation reads every train.val_every ({}) steps \
                 and at the end of the run",
                train.val_every
            )
        })?;
        Ok(data)
    }

    /// Says how a resumed run's new length changes the learning rate: a schedule that spans the
    /// run (poly without `total_steps`) now decays over the new length from this step on.
    fn note_new_length(&self) {
        let total = self.total_steps();
        let schedule = &self.exp.train.schedule;
        let spans_run = matches!(
            schedule.shape,
            ScheduleShape::Poly {
                total_steps: None,
                ..
            }
        );
        let lr = match spans_run {
            true => format!(
                "; its poly schedule decays over the whole run, so from step {} on the learning \
                 rate follows the decay over {total} steps ({:.3e} at step {})",
                self.step + 1,
                schedule.lr_at(self.step, total),
                self.step + 1
            ),
            false => String::new(),
        };
        eprintln!(
            "note: {} now runs to step {total} (from step {}){lr}",
            self.run.root.display(),
            self.step
        );
    }

    /// The training loop: optimiser steps from `self.step` to the last, each followed by its
    /// logs and, when due, a validation with checkpoints.
    fn run(mut self, mut data: TrainingData) -> Result<Summary> {
        let total = self.total_steps();
        if let Some(dp) = self.dp.as_mut() {
            dp.attach(&self.vs, self.spec.kind)?;
        }
        let mut log = match self.writes() {
            true => RunLog::create(&self.run.tensorboard())?,
            false => RunLog::disabled(),
        };
        let mut progress = Progress::new(total, self.step, self.opts.quiet || !self.writes());
        if self.writes() {
            progress.println(&self.banner(total));
        }
        let mut last_validation = Vec::new();
        while self.step < total {
            let started = Instant::now();
            let (epoch, mut sums) = self.accumulate_gradients(&mut data)?;
            let lr = self.optimiser_step(total, &mut sums)?;
            let samples =
                (self.exp.train.accumulate as usize * data.batch_size * self.world_size()) as f64;
            let rate = samples / started.elapsed().as_secs_f64();
            self.report_step(&mut log, &mut progress, epoch, lr, &sums, rate)?;
            let due = self.step.is_multiple_of(self.exp.train.val_every) || self.step == total;
            if due {
                last_validation = self.validate_and_save(&mut log, epoch)?;
                self.print_validation(&mut progress, &last_validation);
            }
            if self.step < total {
                if let Some(reason) = self.stop_requested()? {
                    return self.stop(&reason, epoch, total, due, &mut log, &progress);
                }
            }
        }
        progress.finish();
        log.flush()?;
        if let Some(dp) = &self.dp {
            dp.finish()?;
        }
        Ok(Summary {
            run_dir: self.run.root.clone(),
            steps: self.step,
            validation: last_validation,
            best_miou: self.best_miou,
        })
    }

    /// What asks this run to stop at this step boundary: a signal this process received
    /// ([`preempt`]) or, in a data-parallel job, one another rank received (every rank takes the
    /// same answer at the same step: one all-reduced flag).
    fn stop_requested(&self) -> Result<Option<String>> {
        let local = preempt::requested();
        let Some(dp) = &self.dp else {
            return Ok(local.map(str::to_string));
        };
        let any = dp.any_rank(local.is_some())?;
        Ok(match (local, any) {
            (Some(signal), _) => Some(signal.to_string()),
            (None, true) => Some("a stop signal to another rank".to_string()),
            (None, false) => None,
        })
    }

    /// Ends the run after step `self.step` of `total` (of `epoch`) on a stop request: writes the
    /// exact-resume checkpoint of this step (unless validation wrote it, `saved`; rank 0, as
    /// always), waits for every rank and returns a [`preempt::Stopped`] error saying so (`dis2`
    /// prints it and exits with [`preempt::EXIT_STATUS`]).
    fn stop(
        &self,
        reason: &str,
        epoch: u64,
        total: u64,
        saved: bool,
        log: &mut RunLog,
        progress: &Progress,
    ) -> Result<Summary> {
        if self.writes() && !saved {
            self.save(epoch, None, false)?;
        }
        log.flush()?;
        if let Some(dp) = &self.dp {
            dp.finish()?;
        }
        let root = self.run.root.display();
        let detail = format!(
            "training stopped after step {} of {total}, checkpoint {} written; a resume \
             (`--resume {root}`) goes on from it exactly",
            self.step,
            self.run.step_dir(self.step).display(),
        );
        progress.finish();
        Err(preempt::Stopped {
            reason: reason.to_string(),
            detail,
        }
        .into())
    }

    /// The first line a run prints: its kind, folder, size, device and starting step.
    fn banner(&self, total: u64) -> String {
        let processes = match &self.dp {
            Some(dp) => format!(" x {}", dp.describe()),
            None => String::new(),
        };
        format!(
            "{} run in {}: {} steps of {} x {} samples{processes} on {:?} in {}, from step {}",
            kind_name(self.spec.kind),
            self.run.root.display(),
            total,
            self.exp.train.accumulate,
            self.exp.data.sampling.batch_size,
            self.opts.device,
            self.net.precision(),
            self.step
        )
    }

    /// The forward and backward passes of the `accumulate` batches of the next optimiser step,
    /// their gradients summed into the parameters'. Returns the epoch of the last batch and the
    /// loss terms averaged over the batches (`total` among them).
    fn accumulate_gradients(
        &self,
        data: &mut TrainingData,
    ) -> Result<(u64, BTreeMap<String, f64>)> {
        let accumulate = self.exp.train.accumulate;
        let bpe = self.batches_per_epoch();
        let mut sums: BTreeMap<String, f64> = BTreeMap::new();
        let mut epoch = 0;
        for part in 0..accumulate {
            let b = self.global_batch(self.step * accumulate + part);
            epoch = b / bpe;
            let batch = data.batch(b, bpe)?;
            let seed = Rng::derive(self.exp.seed, STREAM_TORCH, b).next_u64();
            tch::manual_seed((seed >> 1) as i64);
            let objective = self.batch_objective(&batch, epoch, b)?;
            self.check_finite(&objective, epoch)?;
            if let Some(dp) = &self.dp {
                dp.before_backward(&objective.roots(), part + 1 == accumulate)?;
            }
            objective
                .backward(1.0 / accumulate as f64)
                .map_err(|e| DataParallel::explain(self.dp.as_ref(), e, "backward pass"))?;
            for (name, t) in &objective.terms {
                *sums.entry(name.clone()).or_default() += t.double_value(&[]) / accumulate as f64;
            }
            *sums.entry("total".into()).or_default() +=
                objective.total.double_value(&[]) / accumulate as f64;
        }
        if let Some(dp) = &self.dp {
            dp.average(&mut sums)?;
        }
        Ok((epoch, sums))
    }

    /// Clips the gradients (recording their norm in `sums`), steps the optimiser at this step's
    /// learning rate, which it returns, and counts the step.
    fn optimiser_step(&mut self, total: u64, sums: &mut BTreeMap<String, f64>) -> Result<f64> {
        if let Some(max) = self.exp.train.clip_grad_norm {
            let norm = self.optimizer.clip_grad_norm(max);
            sums.insert("grad_norm".into(), norm);
        }
        let lr = self.exp.train.schedule.lr_at(self.step, total);
        self.optimizer.step(lr)?;
        self.optimizer.zero_grad();
        self.step += 1;
        if let Some(dp) = &self.dp {
            dp.after_step()?;
        }
        Ok(lr)
    }

    /// The logs of a finished step: metrics, the progress line and, when due, the images.
    fn report_step(
        &self,
        log: &mut RunLog,
        progress: &mut Progress,
        epoch: u64,
        lr: f64,
        sums: &BTreeMap<String, f64>,
        samples_per_s: f64,
    ) -> Result<()> {
        self.log_step(log, epoch, lr, sums, samples_per_s)?;
        if !self.writes() {
            return Ok(());
        }
        progress.step(&StepReport {
            epoch,
            step: self.step,
            loss: sums.get("total").copied().unwrap_or(f64::NAN),
            lr,
            samples_per_s,
        });
        let image_every = self.exp.train.image_every;
        if image_every > 0 && self.step.is_multiple_of(image_every) {
            self.log_images(log)?;
        }
        Ok(())
    }

    fn print_validation(&self, progress: &mut Progress, validation: &[(String, Scores)]) {
        if !self.writes() {
            return;
        }
        for (label, s) in validation {
            progress.println(&format!(
                "step {} validation {label}: mIoU {}",
                self.step,
                fmt_opt(s.miou)
            ));
        }
    }

    /// The loss of one batch for the run's kind, each branch on its own pixels
    /// ([`batch_target`]).
    fn batch_objective(&self, batch: &Batch, epoch: u64, b: u64) -> Result<Objective> {
        let device = self.opts.device;
        let mut inputs: Vec<Tensor> = batch.inputs.iter().map(|t| t.to_device(device)).collect();
        let student = match self.spec.kind {
            RunKind::Teacher => None,
            RunKind::Distill => Some(&self.scenarios[0]),
            RunKind::Joint => {
                let mut rng = Rng::derive(self.exp.seed, STREAM_JOINT_SCENARIO, b);
                Some(&self.scenarios[draw(&self.scenario_weights, &mut rng)])
            }
        };
        let target = batch_target(
            batch,
            student,
            self.exp.data.ignore_index,
            self.exp.model.num_classes,
            crate::data::loader::class_weights(&self.exp.data),
            device,
        )?;
        let train = &self.exp.train;
        let kd = KdWeights::at_epoch(train, epoch);
        match (self.spec.kind, student) {
            (RunKind::Teacher, _) | (_, None) => {
                if self.spec.modality_dropout > 0.0 {
                    let mut rng = Rng::derive(self.exp.seed, STREAM_MODALITY_DROPOUT, b);
                    inputs = modality_dropout(&inputs, self.spec.modality_dropout, &mut rng);
                }
                let given: Vec<Option<&Tensor>> = inputs.iter().map(Some).collect();
                let out = self.net.forward_train_teacher(&given, true)?;
                Ok(teacher_objective(&out, &self.modality_names, &target))
            }
            (RunKind::Distill, Some(scenario)) => {
                let given: Vec<Option<&Tensor>> = inputs.iter().map(Some).collect();
                let out = self.net.forward_distill(scenario, &given, true)?;
                Ok(distill_objective(&out, &target, kd, train.orth_weight))
            }
            (RunKind::Joint, Some(scenario)) => {
                let given: Vec<Option<&Tensor>> = inputs.iter().map(Some).collect();
                let step = forward_joint(&self.net, scenario, &given, true, self.joint_backward)?;
                Ok(joint_objective(
                    &step,
                    &self.modality_names,
                    &target,
                    kd,
                    train.orth_weight,
                ))
            }
        }
    }

    /// Stops the run at a NaN or infinite loss, naming the step and the term.
    fn check_finite(&self, objective: &Objective, epoch: u64) -> Result<()> {
        let total = objective.total.double_value(&[]);
        if total.is_finite() {
            return Ok(());
        }
        let culprit = objective
            .terms
            .iter()
            .map(|(n, t)| (n.as_str(), t.double_value(&[])))
            .find(|(_, v)| !v.is_finite())
            .unwrap_or(("total", total));
        let last = if self.run.last().exists() {
            format!("the last good checkpoint is {}", self.run.last().display())
        } else {
            "no checkpoint was written yet".to_string()
        };
        bail!(
            "step {} (epoch {epoch}): loss term `{}` is {}; training stopped, {last}",
            self.step + 1,
            culprit.0,
            culprit.1
        )
    }

    fn log_step(
        &self,
        log: &mut RunLog,
        epoch: u64,
        lr: f64,
        sums: &BTreeMap<String, f64>,
        rate: f64,
    ) -> Result<()> {
        for (name, v) in sums {
            log.scalar(&format!("loss/{name}"), *v, self.step)?;
        }
        log.scalar("lr", lr, self.step)?;
        log.scalar("samples_per_s", rate, self.step)?;
        if !self.writes() {
            return Ok(());
        }
        let line = json!({"step": self.step, "epoch": epoch, "lr": lr, "loss": sums});
        RunDir::append_line(&self.run.metrics(), &line)
    }

    /// The branches validated for this kind of run.
    fn branches(&self) -> Vec<Route> {
        match self.spec.kind {
            RunKind::Teacher => vec![Route::Teacher],
            RunKind::Distill => vec![
                Route::Student(self.scenarios[0].clone()),
                Route::TeacherFill(self.scenarios[0].clone()),
            ],
            RunKind::Joint => std::iter::once(Route::Teacher)
                .chain(self.scenarios.iter().cloned().map(Route::Student))
                .collect(),
        }
    }

    /// Validates, logs, writes the `last` checkpoint and, when the score improved, `best`.
    fn validate_and_save(&mut self, log: &mut RunLog, epoch: u64) -> Result<Vec<(String, Scores)>> {
        let branches = self.branches();
        let scores = self.validate(&branches)?;
        let class_names: Vec<String> = self
            .exp
            .data
            .class_table(self.exp.model.num_classes as usize)
            .into_iter()
            .map(|c| c.name)
            .collect();
        let mut labelled = Vec::new();
        for (branch, s) in branches.iter().zip(scores) {
            let label = branch.label(self.net.config());
            // People read TensorBoard: percent, the unit in the tag; validation.jsonl is for
            // programs and keeps fractions, as every file for programs does.
            if let Some(m) = s.miou {
                log.scalar(&format!("val/{label}/miou_percent"), 100.0 * m, self.step)?;
            }
            for (name, c) in class_names.iter().zip(&s.per_class) {
                if let Some(iou) = c.iou {
                    log.scalar(
                        &format!("val/{label}/iou_percent/{name}"),
                        100.0 * iou,
                        self.step,
                    )?;
                }
            }
            let line = json!({"step": self.step, "epoch": epoch, "branch": label, "miou": s.miou,
                "iou": s.per_class.iter().map(|c| c.iou).collect::<Vec<_>>(), "overall_accuracy": s.overall_accuracy,
                "score_unit": crate::metrics::SCORE_UNIT});
            if self.writes() {
                RunDir::append_line(&self.run.validation(), &line)?;
            }
            labelled.push((label, s));
        }
        // The score that picks `best`: the branch being trained (mean over branches for joint).
        let trained: Vec<f64> = match self.spec.kind {
            RunKind::Distill => labelled[..1].iter().filter_map(|(_, s)| s.miou).collect(),
            _ => labelled.iter().filter_map(|(_, s)| s.miou).collect(),
        };
        let score =
            (!trained.is_empty()).then(|| trained.iter().sum::<f64>() / trained.len() as f64);
        let improved = score.is_some_and(|s| self.best_miou.is_none_or(|b| s > b));
        if improved {
            self.best_miou = score;
        }
        if self.writes() {
            self.save(epoch, score, improved)?;
        }
        log.flush()?;
        Ok(labelled)
    }

    /// The scores of `branches` on the validation batches; a data-parallel rank scores its
    /// share and the confusion matrices are summed over the ranks (the same scores as alone).
    fn validate(&self, branches: &[Route]) -> Result<Vec<Scores>> {
        let share = match &self.dp {
            Some(dp) => Share {
                index: dp.rank(),
                of: dp.world_size(),
            },
            None => Share::WHOLE,
        };
        let (device, limit) = (self.opts.device, self.exp.train.val_batches);
        let mut counts = confusion_matrices(&self.net, &self.exp, branches, device, limit, share)?;
        if let Some(dp) = &self.dp {
            dp.sum_matrices(&mut counts.branches)?;
            dp.sum_matrices(std::slice::from_mut(&mut counts.labelled))?;
        }
        Ok(counts.scores(&self.exp))
    }

    fn save(&self, epoch: u64, score: Option<f64>, best: bool) -> Result<()> {
        let dir = self.run.step_dir(self.step);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut info = CheckpointInfo::new(&self.exp.model)?.with_data(&self.exp.data);
        info.metadata = CheckpointMeta {
            kind: self.spec.kind,
            step: self.step,
            epoch,
            seed: self.exp.seed,
            world_size: Some(self.world_size() as u64),
            val_miou: score,
            best_miou: self.best_miou,
        }
        .to_metadata()?;
        let state: Vec<(String, Tensor)> = self
            .optimizer
            .state_tensors()
            .into_iter()
            .map(|(k, t)| (k, t.to_device(Device::Cpu).contiguous()))
            .collect();
        self.run.sync_logs()?;
        let optim = dir.join("optim.safetensors");
        crate::fsutil::write_atomic_with(&optim, |tmp| {
            Tensor::write_safetensors(&state, tmp)
                .with_context(|| format!("cannot write {}", tmp.display()))
        })?;
        checkpoint::save(&dir, &self.vs, &info)?;
        self.run.point(&self.run.last(), &dir)?;
        if best {
            self.run.point(&self.run.best(), &dir)?;
        }
        self.run.prune()
    }

    /// Input, label and prediction of the first validation window, side by side.
    fn log_images(&self, log: &mut RunLog) -> Result<()> {
        let Some(batch) =
            Loader::sliding_windows(&self.exp.data, &self.exp.model, Split::Val)?.next()
        else {
            return Ok(());
        };
        let batch = batch?;
        let inputs: Vec<Tensor> = batch
            .inputs
            .iter()
            .map(|t| t.narrow(0, 0, 1).to_device(self.opts.device))
            .collect();
        let branch = self.branches().remove(0);
        let given: Vec<Option<&Tensor>> = inputs.iter().map(Some).collect();
        let probs = tch::no_grad(|| self.net.forward_route(&branch, &given, false))?;
        let pred = probs.argmax(1, false).get(0).to_device(Device::Cpu);
        let label = batch.labels.get(0);
        let table = self
            .exp
            .data
            .class_table(self.exp.model.num_classes as usize);
        let (rgb, h, w) =
            figures::validation_panels(&batch.inputs[0].get(0), &label, &pred, &table)?;
        log.image(
            &format!("val/{}", branch.label(self.net.config())),
            &rgb,
            h,
            w,
            self.step,
        )
    }
}

/// The training scenes and the loader of the epoch being read.
struct TrainingData {
    dataset: Arc<SceneDataset>,
    norm: Arc<Normaliser>,
    sampler: RandomCropSampler,
    batch_size: usize,
    prefetch: usize,
    /// Every how many batches of the epoch's sequence this process reads (a data-parallel job's
    /// world size; 1 alone).
    stride: u64,
    /// The loader of the epoch being read, with the epoch's number.
    loader: Option<(u64, Loader)>,
}

impl TrainingData {
    /// Opens the training split of `exp` with its normaliser and crop sampler, for a process
    /// that reads every `stride`-th batch.
    fn open(exp: &Experiment, stride: u64) -> Result<Self> {
        let data = &exp.data;
        Ok(TrainingData {
            dataset: Arc::new(SceneDataset::open(data, &exp.model, Split::Train)?),
            norm: Arc::new(Normaliser::from_config(data, &exp.model)?),
            sampler: RandomCropSampler::from_config(data, &exp.model, exp.seed),
            batch_size: data.sampling.batch_size,
            prefetch: data.sampling.prefetch,
            stride,
            loader: None,
        })
    }

    /// Batch `b` of the run (`bpe` batches per epoch); the next call asks for `b + stride`. A
    /// new epoch, or the first batch of a resumed run, starts a loader at that batch's crops
    /// (every `stride`-th batch's from there).
    fn batch(&mut self, b: u64, bpe: u64) -> Result<Batch> {
        let epoch = b / bpe;
        if self.loader.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let specs = self.sampler.epoch(&self.dataset, epoch);
            let specs = every_nth_batch(&specs, (b % bpe) as usize, self.stride, self.batch_size);
            let options = LoaderOptions {
                batch_size: self.batch_size,
                prefetch: self.prefetch,
                drop_last: true,
            };
            let loader = Loader::new(self.dataset.clone(), specs, self.norm.clone(), options);
            self.loader = Some((epoch, loader));
        }
        match self.loader.as_mut().and_then(|(_, l)| l.next()) {
            Some(batch) => batch,
            None => bail!("the training data of epoch {epoch} ran out at batch {b}"),
        }
    }
}

/// The crops of batches `first`, `first + stride`, ... of an epoch's crops `specs` cut into
/// batches of `batch_size` (a last, smaller batch left out).
fn every_nth_batch(
    specs: &[SampleSpec],
    first: usize,
    stride: u64,
    batch_size: usize,
) -> Vec<SampleSpec> {
    specs
        .chunks_exact(batch_size.max(1))
        .skip(first)
        .step_by(stride.max(1) as usize)
        .flatten()
        .copied()
        .collect()
}

/// Joint: the normalised probability of each scenario.
fn joint_weights(
    train: &TrainConfig,
    scenarios: &[Scenario],
    exp: &Experiment,
) -> Result<Vec<f64>> {
    if train.joint_probabilities.is_empty() {
        return Ok(vec![1.0; scenarios.len()]);
    }
    let mut weights = Vec::new();
    for s in scenarios {
        let key = s.text(&exp.model);
        weights.push(*train.joint_probabilities.get(&key).unwrap_or(&0.0));
    }
    let known: Vec<String> = scenarios.iter().map(|s| s.text(&exp.model)).collect();
    for key in train.joint_probabilities.keys() {
        ensure!(
            known.contains(key),
            "train.joint_probabilities.{key}: not a trained scenario; they are {}",
            known.join(", ")
        );
    }
    ensure!(
        weights.iter().sum::<f64>() > 0.0,
        "train.joint_probabilities: all zero"
    );
    Ok(weights)
}

/// Index drawn with the given (unnormalised) weights.
fn draw(weights: &[f64], rng: &mut Rng) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.f64() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

/// Zeroes (= fills with the training mean) each modality of each sample with probability `p`,
/// keeping at least one modality per sample.
fn modality_dropout(inputs: &[Tensor], p: f64, rng: &mut Rng) -> Vec<Tensor> {
    let b = inputs[0].size()[0] as usize;
    let m = inputs.len();
    let mut keep = vec![vec![1.0f32; b]; m];
    for s in 0..b {
        for row in keep.iter_mut() {
            if rng.chance(p) {
                row[s] = 0.0;
            }
        }
        if keep.iter().all(|row| row[s] == 0.0) {
            keep[rng.below(m as u64) as usize][s] = 1.0;
        }
    }
    inputs
        .iter()
        .zip(keep)
        .map(|(x, k)| {
            x * Tensor::from_slice(&k)
                .to_device(x.device())
                .view([b as i64, 1, 1, 1])
        })
        .collect()
}

fn kind_name(kind: RunKind) -> &'static str {
    match kind {
        RunKind::Teacher => "teacher",
        RunKind::Distill => "distill",
        RunKind::Joint => "joint",
    }
}

/// A score as the progress lines show it: percent with its unit, or `n/a`.
fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| {
        format!("{} %", crate::metrics::percent(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn modality_dropout_keeps_one_modality_per_sample() {
        let inputs = vec![
            Tensor::ones([64, 2, 4, 4], (Kind::Float, Device::Cpu)),
            Tensor::ones([64, 1, 4, 4], (Kind::Float, Device::Cpu)),
        ];
        let mut rng = Rng::new(3);
        let out = modality_dropout(&inputs, 0.9, &mut rng);
        let kept: Vec<Vec<f32>> = out
            .iter()
            .map(|t| Vec::<f32>::try_from(t.amax([1i64, 2, 3].as_slice(), false)).unwrap())
            .collect();
        for (s, (a, b)) in kept[0].iter().zip(&kept[1]).enumerate() {
            assert!(a + b >= 1.0, "sample {s} lost every modality");
        }
        let dropped: f32 = kept.iter().flatten().filter(|v| **v == 0.0).count() as f32;
        assert!(dropped > 50.0, "p = 0.9 drops most: {dropped}");
    }

    /// Two ranks read alternate batches of the one-process sequence, from any batch on.
    #[test]
    fn every_nth_batch_takes_whole_batches() {
        let spec = |i: usize| SampleSpec {
            scene: i,
            window: crate::data::raster::Window::new(0, 0, 1, 1),
            out_width: 1,
            out_height: 1,
            augment: Default::default(),
        };
        let specs: Vec<SampleSpec> = (0..10).map(spec).collect();
        let scenes = |v: Vec<SampleSpec>| v.iter().map(|s| s.scene).collect::<Vec<_>>();
        assert_eq!(
            scenes(every_nth_batch(&specs, 0, 1, 2)),
            (0..10).collect::<Vec<_>>()
        );
        assert_eq!(scenes(every_nth_batch(&specs, 1, 2, 2)), vec![2, 3, 6, 7]);
        assert_eq!(
            scenes(every_nth_batch(&specs, 0, 2, 3)),
            vec![0, 1, 2, 6, 7, 8]
        );
        assert_eq!(scenes(every_nth_batch(&specs, 4, 2, 2)), vec![8, 9]);
    }

    #[test]
    fn draws_follow_the_weights() {
        let mut rng = Rng::new(1);
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[draw(&[0.6, 0.0, 0.4], &mut rng)] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!((1600..2000).contains(&counts[0]), "{counts:?}");
    }
}
