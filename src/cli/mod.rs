//! The command line: `Cli` and its `Command`s (clap derive), the global options and the dispatch
//! to the work.
//!
//! Each command's arguments live in one file here (which one: the module map of
//! docs/architecture.md), with the thin conversion into the plain request and options types of
//! the module that does the work. clap stays on this side: the work modules never see an
//! argument struct.

mod blocks;
mod data;
mod eval;
mod export_torch;
mod import_torch;
mod info;
mod merge_students;
mod predict;
mod sweep;
mod train;

use anyhow::Result;
use clap::builder::PossibleValue;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::device::DeviceChoice;

pub use blocks::BlocksArgs;
pub use data::{StatsArgs, SynthArgs};
pub use eval::EvalArgs;
pub use export_torch::ExportTorchArgs;
pub use import_torch::ImportTorchArgs;
pub use info::InfoArgs;
pub use merge_students::MergeStudentsArgs;
pub use predict::PredictArgs;
pub use sweep::SweepArgs;
pub use train::{CommonTrainArgs, DistillArgs, TrainTeacherArgs};

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
    Synth(SynthArgs),
    /// Cut one co-registered scene into spatial blocks assigned to train, val and test (the
    /// generic dataset layout); see docs/data.md.
    Blocks(BlocksArgs),
    /// Compute per-modality normalisation (and class weights) of the train split; write them
    /// into the experiment YAML.
    Stats(StatsArgs),
    /// Train the full-modality teacher (or, with --modality-dropout, the robust baseline).
    TrainTeacher(TrainTeacherArgs),
    /// Distil a student for a missing-modality scenario from a trained teacher (DLKD).
    Distill(DistillArgs),
    /// Merge student checkpoints distilled from one teacher into one checkpoint holding the
    /// teacher once and every student; see docs/train.md.
    MergeStudents(MergeStudentsArgs),
    /// Score a checkpoint on whole scenes of a split (sliding window), optionally with
    /// modalities dropped: IoU, F1, overall accuracy, confusion matrix.
    Eval(EvalArgs),
    /// Train and score a grid of methods x missing-modality scenarios (baselines, DIS2 and its
    /// ablations) and write the results tables and a bar chart; resumable, shardable.
    Sweep(SweepArgs),
    /// Convert a state_dict of the authors' PyTorch DIS2 (safetensors) into a dis2 checkpoint.
    ImportTorch(ImportTorchArgs),
    /// Write a checkpoint as a state_dict of the authors' PyTorch DIS2 (safetensors, their
    /// parameter names); two modalities with both students, HF and CFLM; see docs/model.md.
    ExportTorch(ExportTorchArgs),
    /// Classify whole scenes with a checkpoint: `--NAME FILE` per modality of the checkpoint
    /// (missing ones use their student), `--out classes.tif`; see docs/predict.md.
    Predict(PredictArgs),
}

/// `--device`, shared by every subcommand that computes.
#[derive(Debug, Clone, Args)]
pub struct DeviceArgs {
    /// auto (CUDA when present), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: DeviceChoice,
}

/// `--quiet`, shared by every command that runs long (training, eval, predict, sweep): one
/// flag, one help text.
#[derive(Debug, Clone, Args)]
pub struct ProgressArgs {
    /// Progress as a plain line at most once a minute instead of a bar (without a terminal,
    /// plain lines come every 10 s).
    #[arg(long)]
    pub quiet: bool,
}

/// How pixels find their branch, shared by `dis2 predict` and `dis2 eval` (docs/predict.md,
/// "Routes per pixel").
#[derive(Debug, Clone, Args)]
pub struct RouteArgs {
    /// One branch for the whole scene from the inputs given, classifying only pixels where
    /// every given input has data (dis2 before routes per pixel, for comparison).
    #[arg(long)]
    pub one_route: bool,
    /// A modality counts as available at a pixel only where it is available within this many
    /// pixels around it [default: 0].
    #[arg(long, value_name = "PX")]
    pub context_margin: Option<usize>,
    /// Mix a poorer neighbouring route into a richer one over this many pixels on the richer
    /// side of a route boundary, by a raised cosine (0 = switch hard) [default: 8].
    #[arg(long, value_name = "PX")]
    pub route_blend: Option<usize>,
}

impl RouteArgs {
    /// Writes the choice into `options` (per pixel, margin, blend).
    ///
    /// # Errors
    /// `--context-margin` or `--route-blend` with `--one-route`, which has neither.
    pub(crate) fn apply(&self, options: &mut crate::predict::PredictOptions) -> Result<()> {
        (options.per_pixel, options.margin, options.route_blend) = self.resolve()?;
        Ok(())
    }

    /// Routes per pixel or not, the margin and the blend, with predict's defaults.
    ///
    /// # Errors
    /// `--context-margin` or `--route-blend` with `--one-route`, which has neither.
    pub(crate) fn resolve(&self) -> Result<(bool, usize, usize)> {
        if self.one_route && (self.context_margin.is_some() || self.route_blend.is_some()) {
            anyhow::bail!(
                "--context-margin and --route-blend shape the routes per pixel; --one-route runs \
                 one branch per scene and classifies only pixels where every given input has data"
            );
        }
        Ok((
            !self.one_route,
            self.context_margin
                .unwrap_or(crate::predict::DEFAULT_CONTEXT_MARGIN),
            self.route_blend
                .unwrap_or(crate::predict::DEFAULT_ROUTE_BLEND),
        ))
    }
}

/// Test-time augmentation, shared by `dis2 predict` and `dis2 eval` (docs/predict.md,
/// "Test-time augmentation").
#[derive(Debug, Clone, Args)]
pub struct TtaArgs {
    /// Classify each window in several views and average their probabilities: none, flips
    /// (the window, its two mirror images and its half turn: 4 views) or d8 (every rotation and
    /// mirror image of the square: 8 views); costs that many times the model's time.
    #[arg(long, value_enum, value_name = "VIEWS", default_value = "none")]
    pub tta: crate::predict::Tta,
}

/// `--tta none|flips|d8`.
impl ValueEnum for crate::predict::Tta {
    fn value_variants<'a>() -> &'a [Self] {
        use crate::predict::Tta;
        &[Tta::None, Tta::Flips, Tta::D8]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        use crate::predict::Tta;
        Some(PossibleValue::new(self.as_str()).help(match self {
            Tta::None => "each window once",
            Tta::Flips => "4 views: as it is, mirrored left-right and top-bottom, half turn",
            Tta::D8 => "8 views: 4 quarter turns, each also mirrored (square windows)",
        }))
    }
}

/// Parses the process's command line, with `dis2 predict`'s `--NAME FILE` inputs split off
/// first ([`predict::inputs_last`]); exits with clap's message on an error.
pub fn parse() -> Cli {
    Cli::parse_from(predict::inputs_last(std::env::args_os().collect()))
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    if let Some(threads) = cli.threads {
        set_threads(threads)?;
    }
    match cli.command {
        Command::Info(args) => info::run(&args),
        Command::Synth(args) => data::synth(&args),
        Command::Blocks(args) => blocks::run(&args),
        Command::Stats(args) => data::stats(&args),
        Command::TrainTeacher(args) => train::train_teacher(&args),
        Command::Distill(args) => train::distill(&args),
        Command::MergeStudents(args) => merge_students::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Sweep(args) => sweep::run(args),
        Command::ImportTorch(args) => import_torch::run(&args),
        Command::ExportTorch(args) => export_torch::run(&args),
        Command::Predict(args) => predict::run(args),
    }
}

/// `--threads N`: libtorch's intra-op threads and rayon's global pool.
fn set_threads(threads: usize) -> Result<()> {
    anyhow::ensure!(threads >= 1, "--threads must be at least 1");
    tch::set_num_threads(i32::try_from(threads)?);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| anyhow::anyhow!("--threads {threads}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every long command takes `--quiet`, with the one help text of [`ProgressArgs`].
    #[test]
    fn every_long_command_takes_quiet_with_one_help() {
        let lines = [
            ["train-teacher", "--config", "e.yaml"],
            ["distill", "--config", "e.yaml"],
            ["eval", "--checkpoint", "run"],
            ["predict", "--checkpoint", "run"],
            ["sweep", "--config", "e.yaml"],
        ];
        let cli = Cli::command();
        let help = |command: &str| {
            let sub = cli.find_subcommand(command).unwrap();
            let quiet = sub.get_arguments().find(|a| a.get_id() == "quiet");
            quiet.and_then(|a| a.get_help()).map(|h| h.to_string())
        };
        let first = help("train-teacher").expect("train-teacher --quiet has help");
        for line in lines {
            assert_eq!(
                help(line[0]).as_deref(),
                Some(first.as_str()),
                "{}",
                line[0]
            );
            let quiet = |cli: Cli| match cli.command {
                Command::TrainTeacher(a) => a.common.progress.quiet,
                Command::Distill(a) => a.common.progress.quiet,
                Command::Eval(a) => a.progress.quiet,
                Command::Predict(a) => a.progress.quiet,
                Command::Sweep(a) => a.progress.quiet,
                _ => panic!("{}: another command", line[0]),
            };
            let with = Cli::try_parse_from(["dis2"].into_iter().chain(line).chain(["--quiet"]));
            assert!(quiet(with.unwrap()), "{}", line[0]);
            let without = Cli::try_parse_from(["dis2"].into_iter().chain(line));
            assert!(!quiet(without.unwrap()), "{}", line[0]);
        }
    }

    /// The defaults the help of `--context-margin` and `--route-blend` states are predict's.
    #[test]
    fn the_route_options_state_predicts_defaults() {
        let margin = format!("[default: {}]", crate::predict::DEFAULT_CONTEXT_MARGIN);
        let blend = format!("[default: {}]", crate::predict::DEFAULT_ROUTE_BLEND);
        for command in ["predict", "eval"] {
            let mut cli = Cli::command();
            let sub = cli.find_subcommand_mut(command).unwrap();
            let help = sub.render_long_help().to_string();
            let at = |flag: &str| help.find(flag).unwrap_or_else(|| panic!("{flag}: {help}"));
            let (m, b) = (at("--context-margin"), at("--route-blend"));
            assert!(help[m..b].contains(&margin), "{command}: {help}");
            assert!(help[b..].contains(&blend), "{command}: {help}");
        }
    }
}
