//! `dis2 train-teacher` and `dis2 distill`: their arguments, the run they ask for and the summary
//! they print.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

use super::{DeviceArgs, ProgressArgs};
use crate::config::Experiment;
use crate::dist::Launch;
use crate::model::scenario::{join_names, parse_names};
use crate::precision::PrecisionChoice;
use crate::train::distributed::DataParallel;
use crate::train::run::{RunDir, RunKind, RunSpec};
use crate::train::trainer::{self, Summary, TrainOptions};

/// Options shared by the training commands.
#[derive(Debug, Args)]
pub struct CommonTrainArgs {
    /// The experiment YAML (not needed with --resume).
    #[arg(long, value_name = "FILE", required_unless_present = "resume")]
    pub config: Option<PathBuf>,
    /// Override a configuration value, e.g. `--set train.epochs=5` (repeatable). With --resume
    /// only the run's length: `train.max_steps` and `train.epochs`.
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    pub set: Vec<String>,
    /// Run directory (default: runs/<experiment name>-<kind>).
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in DIR from its last checkpoint, with its own config.yaml and run.yaml.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// With --out: when DIR already holds a run (a requeued job), continue it as --resume DIR
    /// does, after checking that it is the run this command starts; otherwise start it.
    #[arg(long, requires = "out")]
    pub resume_if_present: bool,
    #[command(flatten)]
    pub progress: ProgressArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// fp32, bf16 (bfloat16 convolutions and matrix products, float32 weights and losses) or auto
    /// (bf16 where the CPU or GPU computes it in hardware); sets `train.precision` [default: the
    /// configuration's, fp32].
    #[arg(long, value_name = "PRECISION")]
    pub precision: Option<PrecisionChoice>,
}

/// `dis2 train-teacher`.
#[derive(Debug, Args)]
pub struct TrainTeacherArgs {
    #[command(flatten)]
    pub common: CommonTrainArgs,
    /// Zero each modality of each sample with this probability (at least one stays): the
    /// modality-dropout baseline, trained with the same network.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub modality_dropout: f64,
}

/// `dis2 distill`.
#[derive(Debug, Args)]
pub struct DistillArgs {
    #[command(flatten)]
    pub common: CommonTrainArgs,
    /// The trained teacher checkpoint (a run's `checkpoints/best`, say); required unless --joint.
    #[arg(long, value_name = "CHECKPOINT")]
    pub teacher: Option<PathBuf>,
    /// The missing modalities, comma-separated (`sar` or `sar,dsm`). With --joint, repeat the
    /// flag for each scenario (default: every scenario of the model configuration).
    #[arg(long, value_name = "MODALITIES")]
    pub missing: Vec<String>,
    /// Train teacher and students together online, a scenario drawn per batch (the authors'
    /// script); probabilities from `train.joint_probabilities`.
    #[arg(long)]
    pub joint: bool,
}

pub(crate) fn train_teacher(args: &TrainTeacherArgs) -> Result<()> {
    if args.common.resume.is_some() && args.modality_dropout != 0.0 {
        bail!("--modality-dropout with --resume: a resumed run keeps its own (run.yaml)");
    }
    let spec = RunSpec {
        kind: RunKind::Teacher,
        modality_dropout: args.modality_dropout,
        scenarios: Vec::new(),
        teacher: None,
    };
    let name = if args.modality_dropout > 0.0 {
        "modality-dropout"
    } else {
        "teacher"
    };
    launch(&args.common, spec, name)
}

pub(crate) fn distill(args: &DistillArgs) -> Result<()> {
    let scenarios: Vec<Vec<String>> = args.missing.iter().map(|m| parse_names(m)).collect();
    if args.common.resume.is_some() {
        if args.teacher.is_some() || !args.missing.is_empty() {
            bail!("--teacher and --missing with --resume: a resumed run keeps its own (run.yaml)");
        }
        return launch(&args.common, dummy_spec(), "");
    }
    let spec = if args.joint {
        RunSpec {
            kind: RunKind::Joint,
            modality_dropout: 0.0,
            scenarios,
            teacher: args.teacher.clone(),
        }
    } else {
        let Some(teacher) = &args.teacher else {
            bail!("--teacher CHECKPOINT is required (or --joint to train teacher and student together)");
        };
        if scenarios.len() != 1 {
            bail!("--missing: give exactly one scenario, e.g. --missing sar or --missing sar,dsm");
        }
        RunSpec {
            kind: RunKind::Distill,
            modality_dropout: 0.0,
            scenarios,
            teacher: Some(teacher.clone()),
        }
    };
    let name = match spec.kind {
        RunKind::Joint => "joint".to_string(),
        _ => format!("student-{}", join_names(&spec.scenarios[0])),
    };
    launch(&args.common, spec, &name)
}

/// A spec that `launch` never uses: a resumed run reads its own `run.yaml`.
fn dummy_spec() -> RunSpec {
    RunSpec {
        kind: RunKind::Teacher,
        modality_dropout: 0.0,
        scenarios: Vec::new(),
        teacher: None,
    }
}

fn launch(common: &CommonTrainArgs, mut spec: RunSpec, name: &str) -> Result<()> {
    if common.resume.is_some() && common.precision.is_some() {
        bail!(
            "--precision with --resume: a resumed run keeps the precision it started with \
             (train.precision in its config.yaml)"
        );
    }
    crate::preempt::install()?;
    // Decided before the ranks meet: rank 0 may write run.yaml as soon as they have.
    let existing = common.resume_if_present
        && common
            .out
            .as_ref()
            .is_some_and(|out| RunDir::new(out).spec().exists());
    let (device, dp) = data_parallel(common)?;
    let writes = dp.as_ref().is_none_or(|dp| dp.rank() == 0);
    let opts = TrainOptions {
        device,
        quiet: common.progress.quiet,
    };
    let summary = match &common.resume {
        Some(dir) => {
            if let Some(config) = &common.config {
                bail!(
                    "--config {} with --resume: a resumed run reads its own {}; change its \
                     length with --set train.max_steps=N or --set train.epochs=N",
                    config.display(),
                    RunDir::new(dir).config().display()
                );
            }
            trainer::resume_with(dir, &common.set, opts, dp)?
        }
        None => {
            let config = common.config.as_deref().context("--config is required")?;
            let mut set = common.set.clone();
            if let Some(p) = common.precision {
                set.push(format!("train.precision={p}"));
            }
            let exp = Experiment::load(config, &set)?;
            if spec.kind == RunKind::Joint && spec.scenarios.is_empty() {
                spec.scenarios = exp
                    .model
                    .scenario_list()?
                    .iter()
                    .map(|s| s.names(&exp.model))
                    .collect();
            }
            let out = common
                .out
                .clone()
                .unwrap_or_else(|| Path::new("runs").join(format!("{}-{name}", exp.name)));
            if existing {
                RunDir::new(&out).check_same_run(&spec, &exp, config)?;
                trainer::resume_with(&out, &set, opts, dp)?
            } else {
                trainer::start_with(exp, config, spec, &out, opts, dp)?
            }
        }
    };
    if writes {
        report(&summary);
    }
    Ok(())
}

/// The device and, when a launcher (torchrun, srun) started this process as one rank of several,
/// its place in the data-parallel job, joined. A rank computes on CUDA device `LOCAL_RANK` when
/// `--device` picks CUDA (on its only one when it sees one).
fn data_parallel(common: &CommonTrainArgs) -> Result<(tch::Device, Option<DataParallel>)> {
    let device = common.device.device.resolve()?;
    let Some(launch) = Launch::from_env()? else {
        return Ok((device, None));
    };
    let device = match device {
        // A process that sees one GPU only (Slurm's --gpus-per-task=1) takes it.
        tch::Device::Cuda(_) if crate::device::cuda_device_count() == 1 => tch::Device::Cuda(0),
        tch::Device::Cuda(_) => {
            let count = crate::device::cuda_device_count();
            if launch.local_rank >= count {
                bail!(
                    "{launch}: LOCAL_RANK {} has no CUDA device (this process sees {count}); \
                     start at most {count} processes per node, or use --device cpu",
                    launch.local_rank
                );
            }
            tch::Device::Cuda(launch.local_rank)
        }
        other => other,
    };
    let dp = DataParallel::join(&launch, device)?;
    Ok((device, Some(dp)))
}

fn report(s: &Summary) {
    println!("finished {} steps in {}", s.steps, s.run_dir.display());
    for (label, scores) in &s.validation {
        let miou = scores.miou.map_or("n/a".into(), |m| {
            format!("{} %", crate::metrics::percent(m))
        });
        println!("  validation {label:<24} mIoU {miou}");
    }
    if let Some((_, scores)) = s.validation.first() {
        // Every branch is averaged over the same classes: those of the validation labels.
        println!(
            "  (each mIoU averages the same {} of {} classes: those present in the validation labels)",
            scores.mean_classes.len(),
            scores.per_class.len()
        );
    }
    let run = RunDir::new(&s.run_dir);
    println!(
        "  checkpoints: {} and {}",
        run.best().display(),
        run.last().display()
    );
    println!(
        "  TensorBoard: tensorboard --logdir {}",
        run.tensorboard().display()
    );
}
