//! Command-line arguments (clap derive) and the dispatch to the work. Argument structs live here;
//! the work lives in the modules they call.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

use crate::device::DeviceChoice;

#[derive(Debug, Parser)]
#[command(
    name = "dis2",
    version,
    about = "Remote-sensing segmentation robust to missing modalities (DIS2)"
)]
pub struct Cli {
    /// Threads for libtorch and for parallel loading (default: all cores).
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print versions (dis2, tch, libtorch, GDAL), CUDA and cuDNN availability, and threads.
    Info(InfoArgs),
    /// Write the synthetic multimodal benchmark (GeoTIFFs and an experiment YAML).
    Synth(crate::data::cli::SynthArgs),
    /// Compute per-modality normalisation (and class weights) of the train split; write them
    /// into the experiment YAML.
    Stats(crate::data::cli::StatsArgs),
    /// Train the full-modality teacher (or, with --modality-dropout, the robust baseline).
    TrainTeacher(crate::train::cli::TrainTeacherArgs),
    /// Distil a student for a missing-modality scenario from a trained teacher (DLKD).
    Distill(crate::train::cli::DistillArgs),
    /// Score a checkpoint on whole scenes of a split (sliding window), optionally with
    /// modalities dropped: IoU, F1, overall accuracy, confusion matrix.
    Eval(crate::eval::EvalArgs),
    /// Train and score a grid of methods x missing-modality scenarios (baselines, DIS2 and its
    /// ablations) and write the results tables and a bar chart; resumable, shardable.
    Sweep(crate::sweep::SweepArgs),
    /// Convert a state_dict of the authors' PyTorch DIS2 (safetensors) into a dis2 checkpoint.
    ImportTorch(ImportTorchArgs),
    /// Classify whole scenes with a checkpoint: `--NAME FILE` per modality of the checkpoint
    /// (missing ones use their student), `--out classes.tif`; see docs/predict.md.
    Predict(crate::predict::cli::PredictArgs),
}

/// `--device`, shared by every subcommand that computes.
#[derive(Debug, Clone, Args)]
pub struct DeviceArgs {
    /// auto (CUDA when present), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: DeviceChoice,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Debug, Args)]
pub struct ImportTorchArgs {
    /// The reference model's state_dict saved as safetensors (names as in `DLKD_ver4`).
    #[arg(long, value_name = "FILE.safetensors")]
    pub weights: PathBuf,
    /// YAML with the model configuration: a model-only file, or a file whose `model:` key is read.
    #[arg(long, value_name = "CONFIG.yaml")]
    pub config: PathBuf,
    /// Checkpoint to write: CHECKPOINT.safetensors and CHECKPOINT.yaml.
    #[arg(long, value_name = "CHECKPOINT")]
    pub out: PathBuf,
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    if let Some(threads) = cli.threads {
        set_threads(threads)?;
    }
    match cli.command {
        Command::Info(args) => crate::info::print_info(args.device.device),
        Command::Synth(args) => crate::data::cli::synth(&args),
        Command::Stats(args) => crate::data::cli::stats(&args),
        Command::TrainTeacher(args) => crate::train::cli::train_teacher(&args),
        Command::Distill(args) => crate::train::cli::distill(&args),
        Command::Eval(args) => crate::eval::eval(&args),
        Command::Sweep(args) => crate::sweep::sweep(&args),
        Command::ImportTorch(args) => {
            crate::import_torch::import_torch(&args.weights, &args.config, &args.out)
        }
        Command::Predict(args) => crate::predict::cli::predict(args),
    }
}

fn set_threads(threads: usize) -> Result<()> {
    anyhow::ensure!(threads >= 1, "--threads must be at least 1");
    tch::set_num_threads(i32::try_from(threads)?);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| anyhow::anyhow!("--threads {threads}: {e}"))
}
