//! `dis2 eval`: a checkpoint over the whole scenes of a split, by sliding window (the same
//! blended windows as `dis2 predict`), scored from one confusion matrix.
//!
//! With `--drop`, the branch is the student trained for exactly that missing set when the
//! checkpoint has one; otherwise the teacher with the dropped modalities filled with the
//! training mean, labelled `teacher-fill` in every output.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};

use crate::checkpoint::network_differences;
use crate::cli::DeviceArgs;
use crate::config::Experiment;
use crate::data::dataset::SceneDataset;
use crate::data::layouts::Split;
use crate::data::raster::{read_window_at, Window};
use crate::metrics::{ConfusionMatrix, Scores};
use crate::predict::{predict_scene, route, PredictOptions, Predictor, Route, SceneJob};

/// Rows of a scene compared at a time (memory stays bounded on large scenes).
const ROWS_PER_BAND: usize = 512;
/// Class value of nodata in a predicted class map.
const NODATA_CLASS: f32 = 255.0;

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
    /// Output folder for metrics.json, metrics.csv and confusion.png (default: in the run
    /// directory, or next to the checkpoint, `eval-<split>[-drop-<modalities>]`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Override a configuration value (repeatable).
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    pub set: Vec<String>,
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// The checkpoint, the experiment file of `--checkpoint` / `--config`, and the run directory
/// when the checkpoint belongs to one.
fn locate(args: &EvalArgs) -> Result<(PathBuf, PathBuf, Option<PathBuf>)> {
    let given = &args.checkpoint;
    let checkpoint = if given.join("run.yaml").exists() {
        given.join("checkpoints").join("best")
    } else {
        given.clone()
    };
    // A run's checkpoints live in RUN/checkpoints/NAME: look upwards for RUN/run.yaml.
    let mut run = None;
    let mut dir = Some(checkpoint.clone());
    for _ in 0..3 {
        let Some(d) = dir else { break };
        if d.join("run.yaml").exists() && d.join("config.yaml").exists() {
            run = Some(d);
            break;
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    if let Some(config) = &args.config {
        return Ok((checkpoint, config.clone(), run));
    }
    if let Some(run) = run {
        return Ok((checkpoint, run.join("config.yaml"), Some(run)));
    }
    bail!(
        "--checkpoint {}: not inside a run directory; name the experiment with --config",
        given.display()
    )
}

pub fn eval(args: &EvalArgs) -> Result<()> {
    let (checkpoint, config, run_dir) = locate(args)?;
    let exp = Experiment::load(&config, &args.set)?;
    let drop = parse_modalities(args.drop.as_deref());
    let out = args.out.clone().unwrap_or_else(|| {
        let name = default_out_name(args.split, &drop);
        match &run_dir {
            Some(run) => run.join(name),
            None => checkpoint.parent().unwrap_or(Path::new(".")).join(name),
        }
    });
    let request = EvalRequest {
        checkpoint,
        config,
        exp,
        drop,
        split: args.split,
        overlap: args.overlap,
        exclude: args.exclude.clone(),
        out,
        device: args.device.device.resolve()?,
        quiet: args.quiet,
    };
    let report = evaluate(&request)?;
    print_table(&report);
    println!(
        "wrote {}/metrics.json, metrics.csv and confusion.png",
        request.out.display()
    );
    Ok(())
}

/// `dsm,sar` to `["dsm", "sar"]`.
pub fn parse_modalities(list: Option<&str>) -> Vec<String> {
    list.iter()
        .flat_map(|d| d.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `eval-<split>[-drop-<modalities>]`.
pub fn default_out_name(split: Split, drop: &[String]) -> String {
    let mut name = format!("eval-{}", split.as_str());
    if !drop.is_empty() {
        name.push_str(&format!("-drop-{}", drop.join("+")));
    }
    name
}

/// One evaluation: the library form of `dis2 eval`, also run by `dis2 sweep`.
#[derive(Debug)]
pub struct EvalRequest {
    /// The checkpoint (path without extension, or its directory).
    pub checkpoint: PathBuf,
    /// The experiment file `exp` was read from (for messages).
    pub config: PathBuf,
    pub exp: Experiment,
    /// Names of the modalities left out.
    pub drop: Vec<String>,
    pub split: Split,
    pub overlap: Option<usize>,
    /// Class names reported but left out of the means.
    pub exclude: Vec<String>,
    /// Folder for metrics.json, metrics.csv and confusion.png.
    pub out: PathBuf,
    pub device: tch::Device,
    pub quiet: bool,
}

/// What an evaluation found.
#[derive(Debug)]
pub struct EvalReport {
    /// `teacher`, `student[dsm]` or `teacher-fill[dsm]`.
    pub branch: String,
    pub class_names: Vec<String>,
    /// Indices of the classes left out of the means.
    pub excluded: Vec<usize>,
    pub confusion: ConfusionMatrix,
    pub scores: Scores,
}

/// Scores `req.checkpoint` on every scene of the split and writes the reports into `req.out`.
pub fn evaluate(req: &EvalRequest) -> Result<EvalReport> {
    let (checkpoint, config, exp) = (&req.checkpoint, &req.config, &req.exp);
    crate::predict::share_cpu_threads(req.device);
    let predictor = Predictor::load(checkpoint, req.device)?;
    let info = predictor.info();
    let diffs = network_differences(&info.model, &exp.model);
    if !diffs.is_empty() {
        bail!(
            "--checkpoint {} was made for another model than {}:\n  {}",
            checkpoint.display(),
            config.display(),
            diffs.join("\n  ")
        );
    }
    let cfg = &info.model;
    let mut given = vec![true; cfg.modalities.len()];
    for name in &req.drop {
        given[cfg.modality_index(name).context("--drop")?] = false;
    }
    let branch = route(info, &given, true)?;
    let label = match &branch {
        Route::Teacher => "teacher".to_string(),
        Route::Student(_) => format!("student[{}]", req.drop.join("+")),
        Route::Fill(_) => format!("teacher-fill[{}]", req.drop.join("+")),
    };
    let table = info.class_table();
    let exclude: Vec<usize> = req
        .exclude
        .iter()
        .map(|name| {
            table.iter().position(|c| &c.name == name).with_context(|| {
                let names: Vec<&str> = table.iter().map(|c| c.name.as_str()).collect();
                format!(
                    "--exclude {name:?}: not a class; the classes are {}",
                    names.join(", ")
                )
            })
        })
        .collect::<Result<_>>()?;

    let dataset = SceneDataset::open(&exp.data, &exp.model, req.split)?;
    if dataset.is_empty() {
        bail!(
            "split {} of {} has no scenes",
            req.split.as_str(),
            config.display()
        );
    }
    let out = &req.out;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    if !req.quiet {
        eprintln!(
            "evaluating {} on {} scenes of the {} split: {}",
            checkpoint.display(),
            dataset.len(),
            req.split.as_str(),
            branch.describe(info)
        );
    }

    let options = PredictOptions {
        overlap: req.overlap,
        allow_fill: true,
        // The branch is named once above and in every output.
        announce_fill: false,
        quiet: req.quiet,
        ..PredictOptions::default()
    };
    let scratch = tempfile_dir(out)?;
    let mut cm = ConfusionMatrix::new(table.len());
    for (index, scene) in dataset.scenes.iter().enumerate() {
        let Some(label_path) = &scene.label else {
            bail!("scene {}: no labels to score against", scene.id);
        };
        let job = SceneJob {
            inputs: cfg
                .modalities
                .iter()
                .zip(&scene.modalities)
                .zip(&given)
                .filter(|(_, g)| **g)
                .map(|((m, p), _)| (m.name.clone(), p.clone()))
                .collect(),
            out: scratch.join(format!("{index}.tif")),
            probs: None,
            preview: None,
        };
        predict_scene(&predictor, &job, &options).with_context(|| format!("scene {}", scene.id))?;
        let (w, h) = (scene.width(), scene.height());
        for y in (0..h).step_by(ROWS_PER_BAND) {
            let window = Window::new(0, y as i64, w, ROWS_PER_BAND.min(h - y));
            let predicted = read_window_at(&job.out, window)?;
            let px = read_window_at(label_path, window)?;
            let mut labels = dataset.decoder.decode(
                &px,
                label_path,
                dataset.num_classes,
                dataset.ignore_index,
            )?;
            // Pixels without a prediction (nodata in an input) are left out.
            for (l, p) in labels.iter_mut().zip(&predicted.data) {
                if *p == NODATA_CLASS {
                    *l = dataset.ignore_index;
                }
            }
            let preds: Vec<i64> = predicted.data.iter().map(|&p| p as i64).collect();
            cm.add_pairs(&labels, &preds, dataset.ignore_index)
                .with_context(|| format!("scene {}", scene.id))?;
        }
        let _ = std::fs::remove_file(&job.out);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let report = EvalReport {
        branch: label,
        class_names: table.iter().map(|c| c.name.clone()).collect(),
        scores: cm.scores(&exclude),
        excluded: exclude,
        confusion: cm,
    };
    write_reports(req, &report)?;
    Ok(report)
}

/// A scratch folder for the predicted class maps, inside the output folder.
fn tempfile_dir(out: &Path) -> Result<PathBuf> {
    let dir = out.join(format!(".scratch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{:.2}", 100.0 * v))
}

fn print_table(r: &EvalReport) {
    let s = &r.scores;
    println!(
        "{}: mIoU {} | mean F1 {} | OA {} | {} pixels",
        r.branch,
        fmt(s.miou),
        fmt(s.mean_f1),
        fmt(s.overall_accuracy),
        s.pixels
    );
    println!("{:<22} {:>7} {:>7} {:>12}", "class", "IoU", "F1", "pixels");
    for (i, (name, c)) in r.class_names.iter().zip(&s.per_class).enumerate() {
        let note = if r.excluded.contains(&i) {
            " (not in means)"
        } else {
            ""
        };
        println!(
            "{:<22} {:>7} {:>7} {:>12}{note}",
            name,
            fmt(c.iou),
            fmt(c.f1),
            c.support
        );
    }
}

fn write_reports(req: &EvalRequest, r: &EvalReport) -> Result<()> {
    let (out, label, names, cm, s) = (&req.out, &r.branch, &r.class_names, &r.confusion, &r.scores);
    let per_class: Vec<serde_json::Value> = names
        .iter()
        .zip(&s.per_class)
        .map(|(n, c)| json!({"class": n, "iou": c.iou, "f1": c.f1, "precision": c.precision, "recall": c.recall, "support": c.support}))
        .collect();
    let doc = json!({
        "branch": label,
        "checkpoint": req.checkpoint.display().to_string(),
        "split": req.split.as_str(),
        "dropped": req.drop,
        "excluded_from_means": req.exclude,
        "miou": s.miou,
        "mean_f1": s.mean_f1,
        "overall_accuracy": s.overall_accuracy,
        "pixels": s.pixels,
        "per_class": per_class,
        "confusion_matrix": cm.rows(),
    });
    let text = serde_json::to_string_pretty(&doc)?;
    crate::fsutil::write_atomic(&out.join("metrics.json"), text.as_bytes())?;
    let mut csv = String::from("branch,class,iou,f1,precision,recall,support\n");
    let cell = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
    for (n, c) in names.iter().zip(&s.per_class) {
        csv.push_str(&format!(
            "{label},{n},{},{},{},{},{}\n",
            cell(c.iou),
            cell(c.f1),
            cell(c.precision),
            cell(c.recall),
            c.support
        ));
    }
    csv.push_str(&format!(
        "{label},mean,{},{},,,{}\n",
        cell(s.miou),
        cell(s.mean_f1),
        s.pixels
    ));
    csv.push_str(&format!(
        "{label},overall_accuracy,{},,,,\n",
        cell(s.overall_accuracy)
    ));
    crate::fsutil::write_atomic(&out.join("metrics.csv"), csv.as_bytes())?;
    crate::report::confusion_matrix_png(&out.join("confusion.png"), cm, names)
}
