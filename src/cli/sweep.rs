//! `dis2 sweep`: its arguments and their conversion into a [`SweepRequest`].

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

use super::{DeviceArgs, ProgressArgs};
use crate::data::layouts::Split;
use crate::precision::PrecisionChoice;
use crate::sweep::{Method, Shard, SweepRequest};

/// `dis2 sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The experiment YAML every run starts from (not needed with --collect).
    #[arg(long, value_name = "FILE", required_unless_present = "collect")]
    pub config: Option<PathBuf>,
    /// Override a configuration value of every run, e.g. `--set train.epochs=3` (repeatable).
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    pub set: Vec<String>,
    /// Methods (rows), comma-separated; default all: teacher-fill, unimodal, modality-dropout,
    /// dis2, dis2-no-kd, dis2-no-orth, dis2-no-cflm, dis2-no-hf, dis2-joint.
    #[arg(long, value_name = "METHODS", value_delimiter = ',')]
    pub methods: Vec<Method>,
    /// Missing-modality scenarios (columns besides `full`), comma-separated, several missing
    /// joined by `+`: `dsm,sar,dsm+sar`. Default: every scenario of the model.
    #[arg(long, value_name = "SCENARIOS")]
    pub scenarios: Vec<String>,
    /// Train and score every cell once per seed: a count (`3`: the experiment's seed and the two
    /// after it) or a comma-separated list (`1,2,3`). Default: the experiment's seed alone.
    #[arg(long, value_name = "N|S1,S2,...")]
    pub seeds: Option<String>,
    /// An extra dis2 row whose students train with an override, sharing the teacher:
    /// `--variant kd0.5:train.lambda_kd=0.5` (repeatable; the same name again adds an override).
    #[arg(long = "variant", value_name = "NAME:KEY.PATH=VALUE")]
    pub variants: Vec<String>,
    /// Override a configuration value of the DIS2 teachers only (the teacher-fill rows and the
    /// teachers students distil from), e.g. `--teacher-set train.epochs=24` (repeatable).
    #[arg(long = "teacher-set", value_name = "KEY.PATH=VALUE")]
    pub teacher_set: Vec<String>,
    /// The split the cells are scored on.
    #[arg(long, default_value = "test")]
    pub split: Split,
    /// Also score every cell on this split and choose, per scenario, the dis2 row (dis2 or a
    /// variant) that does best on it; the tables report the choice on --split.
    #[arg(long, value_name = "SPLIT")]
    pub select_on: Option<Split>,
    /// Classes reported but left out of the means (ISPRS: `--exclude clutter`); repeatable.
    #[arg(long = "exclude", value_name = "CLASS")]
    pub exclude: Vec<String>,
    /// Probability of dropping each modality of each sample for the modality-dropout baseline.
    #[arg(long, value_name = "P", default_value_t = 0.3)]
    pub modality_dropout: f64,
    /// Run share i of n (0-based) of the training runs and their evaluations, e.g. for a Slurm
    /// array: `--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// Only write the tables from the finished cells in --out (after the shards ran).
    #[arg(long)]
    pub collect: bool,
    /// Print the runs and evaluations (and their shards) without running anything.
    #[arg(long)]
    pub list: bool,
    /// Sweep folder (default: runs/sweep-<experiment name>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub progress: ProgressArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// The precision the cells are scored in: fp32, bf16 or auto (training follows
    /// `train.precision`, e.g. `--set train.precision=bf16`). Recorded in the sweep folder: every
    /// shard and restart scores in the same.
    #[arg(long, default_value = "fp32", value_name = "PRECISION")]
    pub precision: PrecisionChoice,
}

impl From<SweepArgs> for SweepRequest {
    fn from(args: SweepArgs) -> Self {
        Self {
            config: args.config,
            set: args.set,
            methods: args.methods,
            scenarios: args.scenarios,
            seeds: args.seeds,
            variants: args.variants,
            teacher_set: args.teacher_set,
            split: args.split,
            select_on: args.select_on,
            exclude: args.exclude,
            modality_dropout: args.modality_dropout,
            shard: args.shard,
            collect: args.collect,
            list: args.list,
            out: args.out,
            device: args.device.device,
            quiet: args.progress.quiet,
            precision: args.precision,
        }
    }
}

pub(crate) fn run(args: SweepArgs) -> Result<()> {
    if !args.collect && !args.list {
        crate::preempt::install()?;
    }
    crate::sweep::sweep(&args.into())
}
