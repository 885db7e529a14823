//! `dis2 eval`: its arguments, where the checkpoint, experiment and output folder are found, and
//! the table it prints.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

use super::{DeviceArgs, ProgressArgs, RouteArgs, TtaArgs};
use crate::config::Experiment;
use crate::data::layouts::Split;
use crate::eval::{evaluate, EvalOptions, EvalReport, EvalRequest};
use crate::metrics::percent_or_dash;
use crate::model::scenario::{join_names, parse_names};
use crate::precision::PrecisionChoice;
use crate::train::run::RunDir;

/// `dis2 eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A checkpoint directory (a run's `checkpoints/best`), a checkpoint name, or a run
    /// directory (its `checkpoints/best` is used).
    #[arg(long, value_name = "DIR_OR_FILE")]
    pub checkpoint: PathBuf,
    /// The experiment YAML naming the dataset (default: the run's own `config.yaml`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Modalities to leave out, comma-separated (`dsm` or `dsm,sar`).
    #[arg(long, value_name = "MODALITIES")]
    pub drop: Option<String>,
    /// The split to score: val or test.
    #[arg(long, default_value = "test")]
    pub split: Split,
    /// Pixels shared by neighbouring windows (default: a quarter of the crop).
    #[arg(long, value_name = "PX")]
    pub overlap: Option<usize>,
    /// Classes reported but left out of the means (ISPRS: `--exclude clutter`); repeatable.
    #[arg(long = "exclude", value_name = "CLASS")]
    pub exclude: Vec<String>,
    /// ISPRS eroded boundaries: label pixels with another class within a disk of this radius
    /// (pixels) are not scored; 0: every labelled pixel is scored (ISPRS used 3).
    #[arg(long, value_name = "PX", default_value_t = 0)]
    pub erode: usize,
    /// Overlay figures (image | reference | prediction | errors) of N scenes in `overlays/`:
    /// different places first (the acquisitions of one block are one place), spread over the
    /// split; 0: none.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub overlays: usize,
    /// Folder for CFLM class-wise attention figures (teacher and the evaluated branch, one
    /// heat map per class) of a few windows of the split.
    #[arg(long, value_name = "DIR")]
    pub attention_maps: Option<PathBuf>,
    /// Windows drawn by `--attention-maps`: the first N sliding windows over the split's scenes.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub attention_windows: usize,
    /// Output folder for metrics.json, metrics.csv, confusion.png and reliability.png
    /// (default: in the run directory, or next to the checkpoint,
    /// `eval-<split>[-drop-<modalities>]`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Override a configuration value (repeatable).
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    pub set: Vec<String>,
    #[command(flatten)]
    pub progress: ProgressArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// fp32, bf16 (bfloat16 convolutions and matrix products, float32 probabilities) or auto
    /// (bf16 where the CPU or GPU computes it in hardware).
    #[arg(long, default_value = "fp32", value_name = "PRECISION")]
    pub precision: PrecisionChoice,
    /// Score scenes whose inputs lie far outside the checkpoint's normalisation (another bit
    /// depth, unit or scale than the training data's), with a warning, instead of refusing them.
    #[arg(long)]
    pub accept_input_range: bool,
    #[command(flatten)]
    pub routes_per_pixel: RouteArgs,
    #[command(flatten)]
    pub tta: TtaArgs,
}

/// The checkpoint, the experiment file of `--checkpoint` / `--config`, and the run the
/// checkpoint belongs to, if any.
fn locate(args: &EvalArgs) -> Result<(PathBuf, PathBuf, Option<RunDir>)> {
    let (checkpoint, run) = RunDir::locate_checkpoint(&args.checkpoint);
    crate::checkpoint::check_present(&checkpoint)
        .with_context(|| format!("--checkpoint {}", args.checkpoint.display()))?;
    if let Some(config) = &args.config {
        return Ok((checkpoint, config.clone(), run));
    }
    if let Some(run) = run {
        return Ok((checkpoint, run.config(), Some(run)));
    }
    bail!(
        "--checkpoint {}: not inside a run directory; name the experiment with --config",
        args.checkpoint.display()
    )
}

pub(crate) fn run(args: &EvalArgs) -> Result<()> {
    let (checkpoint, config, run_dir) = locate(args)?;
    let exp = Experiment::load(&config, &args.set)?;
    let drop = parse_modalities(args.drop.as_deref());
    let out = args.out.clone().unwrap_or_else(|| {
        let name = default_out_name(args.split, &drop);
        match &run_dir {
            Some(run) => run.root.join(name),
            None => checkpoint.parent().unwrap_or(Path::new(".")).join(name),
        }
    });
    let (per_pixel, margin, route_blend) = args.routes_per_pixel.resolve()?;
    let device = args.device.device.resolve()?;
    let request = EvalRequest {
        checkpoint,
        config,
        exp,
        drop,
        split: args.split,
        overlap: args.overlap,
        exclude: args.exclude.clone(),
        out,
        device,
        precision: args.precision.resolve(device).context("--precision")?,
        quiet: args.progress.quiet,
        options: EvalOptions {
            erode: args.erode,
            overlays: args.overlays,
            attention_maps: args.attention_maps.clone(),
            attention_windows: args.attention_windows,
            accept_input_range: args.accept_input_range,
            per_pixel,
            margin,
            route_blend,
            tta: args.tta.tta,
        },
    };
    let report = evaluate(&request)?;
    print_table(&report);
    println!(
        "wrote {}/metrics.json, metrics.csv, confusion.png and reliability.png",
        request.out.display()
    );
    if !report.overlays.is_empty() {
        let left_out = report.scenes - report.overlays.len();
        let note = if left_out > 0 {
            format!(
                "; {left_out} of the {} scenes have none (--overlays {} draws every scene)",
                report.scenes, report.scenes
            )
        } else {
            String::new()
        };
        println!(
            "wrote {} overlay(s) into {}{note}",
            report.overlays.len(),
            request.out.join("overlays").display()
        );
    }
    if let Some(dir) = &request.options.attention_maps {
        println!(
            "wrote {} attention figure(s) into {}",
            report.attention_maps.len(),
            dir.display()
        );
    }
    Ok(())
}

/// `dsm,sar` (or `dsm+sar`) to `["dsm", "sar"]`; `None` to none.
fn parse_modalities(list: Option<&str>) -> Vec<String> {
    list.map(parse_names).unwrap_or_default()
}

/// `eval-<split>[-drop-<modalities>]`.
fn default_out_name(split: Split, drop: &[String]) -> String {
    let mut name = format!("eval-{}", split.as_str());
    if !drop.is_empty() {
        name.push_str(&format!("-drop-{}", join_names(drop)));
    }
    name
}

fn print_table(r: &EvalReport) {
    let s = &r.scores;
    println!(
        "{}: mIoU {} % | mean F1 {} % | OA {} % | {} pixels",
        r.branch,
        percent_or_dash(s.miou),
        percent_or_dash(s.mean_f1),
        percent_or_dash(s.overall_accuracy),
        s.pixels
    );
    println!(
        "{:<22} {:>7} {:>7} {:>12}",
        "class", "IoU %", "F1 %", "pixels"
    );
    for (i, (name, c)) in r.class_names.iter().zip(&s.per_class).enumerate() {
        let note = if r.excluded.contains(&i) {
            " (not in means)"
        } else if s.absent_classes.contains(&i) {
            " (absent from the split: not in means)"
        } else {
            ""
        };
        println!(
            "{:<22} {:>7} {:>7} {:>12}{note}",
            name,
            percent_or_dash(c.iou),
            percent_or_dash(c.f1),
            c.support
        );
    }
    println!(
        "calibration: ECE {} % over {} scored pixels ({} bins of the maximum class probability)",
        percent_or_dash(r.calibration.ece()),
        r.calibration.pixels(),
        crate::metrics::CALIBRATION_BINS
    );
    print_groups("pixels by the branch that classified them", &r.by_route);
    print_groups("pixels by what the data lacks", &r.by_data);
    print_unscored(&r.by_data);
}

/// The labelled pixels no branch classified, by what the data lacks there.
fn print_unscored(by_data: &[crate::eval::Group]) {
    let left: Vec<String> = (by_data.iter())
        .filter(|g| g.labelled > g.scores.pixels)
        .map(|g| format!("{} where {}", g.labelled - g.scores.pixels, g.label))
        .collect();
    if left.is_empty() {
        return;
    }
    let total: u64 = by_data.iter().map(|g| g.labelled - g.scores.pixels).sum();
    println!(
        "left unscored: {total} labelled pixels that no branch classified ({})",
        left.join(", ")
    );
}

/// One line per group: its scored and labelled pixels, mIoU, mean F1, OA and ECE.
fn print_groups(title: &str, groups: &[crate::eval::Group]) {
    if groups.len() < 2 {
        return;
    }
    println!("{title}:");
    for g in groups {
        let s = &g.scores;
        println!(
            "  {:<20} mIoU {:>6} % | mean F1 {:>6} % | OA {:>6} % | ECE {:>6} % | {} of {} labelled pixels scored",
            g.label,
            percent_or_dash(s.miou),
            percent_or_dash(s.mean_f1),
            percent_or_dash(s.overall_accuracy),
            percent_or_dash(g.calibration.ece()),
            s.pixels,
            g.labelled
        );
    }
}
