//! `dis2 sweep`: trains and scores a matrix of methods x missing-modality scenarios x seeds and
//! writes the paper-style tables (mIoU per method and scenario as mean ± sd over seeds, `dis2`'s
//! paired differences with 95 % intervals, per-class IoU) and a grouped bar chart.
//!
//! ```text
//! OUT/
//!   sweep.yaml            the matrix and settings; a restart must match it
//!   experiment.yaml       the effective base experiment (after --set) every run starts from
//!   runs/s<seed>/<run>/   training runs (the layout of `dis2 train-teacher` / `dis2 distill`)
//!     finished.json       written once the run is complete
//!   evals/<split>/s<seed>/<run>--<full|drop-...>/   `dis2 eval` outputs (metrics.json, ...)
//!     done.json           written once the evaluation is complete: the cell is done
//!   results.md, results.csv, differences.csv, results.json, miou.png
//!   results-val.{csv,json}  with --select-on val: the same matrix scored on the validation split
//! ```
//!
//! A killed sweep started again skips finished runs and evaluations and resumes an unfinished
//! run from its last checkpoint. `--shard i/n` trains every n-th run (seed by seed, teachers
//! first) and scores it; a shard whose student needs another shard's teacher waits for that
//! teacher's `finished.json`. `--collect` writes the tables from whatever is done.

mod plan;
mod table;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::Experiment;
use crate::data::dataset::SceneDataset;
use crate::data::layouts::Split;
use crate::device::DeviceChoice;
use crate::eval::{evaluate, EvalOptions, EvalRequest};
use crate::precision::PrecisionChoice;
use crate::preempt;
use crate::progress::Progress;
use crate::train::run::{RunDir, RunKind, RunSpec};
use crate::train::trainer::{self, TrainOptions};

pub use plan::{
    parse_scenarios, parse_seeds, parse_variants, Column, EvalJob, Matrix, Method, Plan, Row,
    Shard, Unit, UnitKind, Variant,
};

/// One sweep: what `dis2 sweep` asks for (see `crate::cli`'s `SweepArgs` for each field's flag).
#[derive(Debug, Clone)]
pub struct SweepRequest {
    /// The experiment YAML every run starts from; `None` only with `collect`.
    pub config: Option<PathBuf>,
    /// `KEY.PATH=VALUE` overrides of every run.
    pub set: Vec<String>,
    /// Methods (rows); empty: all of [`Method::ALL`].
    pub methods: Vec<Method>,
    /// Missing-modality scenarios (columns besides `full`); empty: every scenario of the model.
    pub scenarios: Vec<String>,
    /// `--seeds`: a count from the experiment's seed up, or a comma-separated list; `None`: the
    /// experiment's seed alone.
    pub seeds: Option<String>,
    /// `--variant NAME:KEY=VALUE` items: extra `dis2` rows (see [`parse_variants`]).
    pub variants: Vec<String>,
    /// `--teacher-set KEY=VALUE`: overrides of the DIS2 teachers only.
    pub teacher_set: Vec<String>,
    /// The split the cells are scored on.
    pub split: Split,
    /// A second split every cell is scored on, to choose settings (`val`).
    pub select_on: Option<Split>,
    /// Classes reported but left out of the means.
    pub exclude: Vec<String>,
    /// Probability of dropping each modality of each sample for the modality-dropout baseline,
    /// in (0, 1).
    pub modality_dropout: f64,
    /// The share of the runs and evaluations to do; `None`: all of them.
    pub shard: Option<Shard>,
    /// Only write the tables from the finished cells in `out`.
    pub collect: bool,
    /// Print the plan (and its shards) without running anything.
    pub list: bool,
    /// Sweep folder; `None`: `runs/sweep-<experiment name>`.
    pub out: Option<PathBuf>,
    /// The device to train and score on, resolved only once there is something to run (not
    /// with `list` or `collect`).
    pub device: DeviceChoice,
    /// The precision the cells are scored in (training follows `train.precision`).
    pub precision: PrecisionChoice,
    /// Progress as a plain line at most once a minute, no bar.
    pub quiet: bool,
}

/// `sweep.yaml`: what a sweep folder holds; a restart or another shard must ask for the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepSpec {
    config: PathBuf,
    set: Vec<String>,
    methods: Vec<String>,
    scenarios: Vec<String>,
    seeds: Vec<u64>,
    #[serde(default)]
    variants: Vec<String>,
    #[serde(default)]
    teacher_set: Vec<String>,
    split: String,
    #[serde(default)]
    select_on: Option<String>,
    exclude: Vec<String>,
    modality_dropout: f64,
    /// The scoring precision (left out of sweep.yaml when fp32, as before it was recorded).
    #[serde(default, skip_serializing_if = "is_fp32")]
    precision: PrecisionChoice,
}

fn is_fp32(p: &PrecisionChoice) -> bool {
    *p == PrecisionChoice::Fp32
}

impl SweepSpec {
    /// The matrix (methods x scenarios x seeds) this spec asks for, on the experiment `exp`.
    fn matrix(&self, exp: &Experiment) -> Result<Matrix> {
        let model = &exp.model;
        let methods: Vec<Method> = self
            .methods
            .iter()
            .map(|m| m.parse())
            .collect::<Result<_>>()?;
        let mut splits: Vec<Split> = vec![self.split.parse()?];
        if let Some(s) = &self.select_on {
            splits.push(s.parse()?);
        }
        Ok(Matrix {
            methods,
            variants: parse_variants(&self.variants)?,
            scenarios: parse_scenarios(&self.scenarios, model)?,
            seeds: self.seeds.clone(),
            splits,
            modality_dropout: self.modality_dropout,
            teacher_set: self.teacher_set.clone(),
            joint_probabilities: exp.train.joint_probabilities.clone(),
            generic: match &exp.data.dataset {
                crate::data::config::DatasetConfig::Generic(g) => Some(g.clone()),
                _ => None,
            },
        })
    }
}

/// The sweep folder's paths.
struct SweepDir {
    root: PathBuf,
}

impl SweepDir {
    fn spec(&self) -> PathBuf {
        self.root.join("sweep.yaml")
    }
    fn experiment(&self) -> PathBuf {
        self.root.join("experiment.yaml")
    }
    fn run(&self, unit: &str) -> RunDir {
        RunDir::new(&self.root.join("runs").join(unit))
    }
    fn finished(&self, unit: &str) -> PathBuf {
        self.run(unit).root.join("finished.json")
    }
    fn eval(&self, eval: &str) -> PathBuf {
        self.root.join("evals").join(eval)
    }
    fn done(&self, eval: &str) -> PathBuf {
        self.eval(eval).join("done.json")
    }
}

/// Runs (or lists, or collects) the sweep of `args`: trains and scores this shard's cells, then
/// writes the tables from every cell done so far.
pub fn sweep(args: &SweepRequest) -> Result<()> {
    if args.collect {
        let out = args
            .out
            .as_deref()
            .context("--collect needs --out, the sweep folder")?;
        let dir = SweepDir {
            root: out.to_path_buf(),
        };
        let (plan, exp) = read_existing(&dir)?;
        return write_tables(&dir, &plan, &exp);
    }
    let config = args.config.as_deref().context("--config is required")?;
    let exp = Experiment::load(config, &args.set)?;
    let spec = sweep_spec(args, config, &exp)?;
    let plan = Plan::new(&spec.matrix(&exp)?, &exp.model)?;
    let shard = args.shard.unwrap_or_else(Shard::whole);
    let dir = SweepDir {
        root: args
            .out
            .clone()
            .unwrap_or_else(|| Path::new("runs").join(format!("sweep-{}", exp.name))),
    };
    if args.list {
        print_plan(&plan, shard, args, config, &dir);
        return Ok(());
    }
    check_scored_splits(&plan, &exp, config)?;
    claim(&dir, &spec, &exp)?;
    let device = args.device.resolve()?;
    let started = Instant::now();
    run_shard(&dir, &plan, shard, &spec, (device, args.quiet))?;
    write_tables(&dir, &plan, &exp)?;
    eprintln!(
        "sweep shard {}/{} finished in {:.1} min",
        shard.index,
        shard.count,
        started.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}

/// Opens every split the sweep scores before anything is trained, so that a dataset without
/// one (a generic layout without `test`) is refused at once, not after the first teacher. The
/// training runs check their own train and val splits before their first step.
fn check_scored_splits(plan: &Plan, exp: &Experiment, config: &Path) -> Result<()> {
    for &split in &plan.matrix.splits {
        SceneDataset::open(&exp.data, &exp.model, split).with_context(|| {
            format!(
                "{}: the {} split, which the sweep scores every run on",
                config.display(),
                split.as_str()
            )
        })?;
    }
    Ok(())
}

/// The `sweep.yaml` of a request, its arguments checked against the experiment `exp`.
fn sweep_spec(args: &SweepRequest, config: &Path, exp: &Experiment) -> Result<SweepSpec> {
    if !(0.0..1.0).contains(&args.modality_dropout) || args.modality_dropout == 0.0 {
        bail!(
            "--modality-dropout: must lie in (0, 1), found {}",
            args.modality_dropout
        );
    }
    if args.select_on == Some(args.split) {
        bail!(
            "--select-on {}: settings must be chosen on another split than the one reported \
             (--split {})",
            args.split.as_str(),
            args.split.as_str()
        );
    }
    let methods = if args.methods.is_empty() {
        Method::ALL.to_vec()
    } else {
        args.methods.clone()
    };
    let columns = parse_scenarios(&args.scenarios, &exp.model)?;
    let variants = parse_variants(&args.variants)?;
    if !variants.is_empty() && !methods.contains(&Method::Dis2) {
        bail!("--variant: variants are dis2 rows; add dis2 to --methods to compare them with it");
    }
    Ok(SweepSpec {
        config: config.to_path_buf(),
        set: args.set.clone(),
        methods: methods.iter().map(|m| m.name().to_string()).collect(),
        scenarios: columns.iter().map(Column::key).collect(),
        seeds: parse_seeds(args.seeds.as_deref(), exp.seed)?,
        variants: args.variants.clone(),
        teacher_set: args.teacher_set.clone(),
        split: args.split.as_str().to_string(),
        select_on: args.select_on.map(|s| s.as_str().to_string()),
        exclude: args.exclude.clone(),
        modality_dropout: args.modality_dropout,
        precision: args.precision,
    })
}

/// Creates the sweep folder, or checks that an existing one was made for the same sweep.
fn claim(dir: &SweepDir, spec: &SweepSpec, exp: &Experiment) -> Result<()> {
    let experiment = serde_yaml::to_string(exp)?;
    let wanted = serde_yaml::to_string(spec)?;
    if dir.spec().exists() {
        let found = std::fs::read_to_string(dir.spec())
            .with_context(|| format!("cannot read {}", dir.spec().display()))?;
        let found_exp = std::fs::read_to_string(dir.experiment()).unwrap_or_default();
        if found != wanted || found_exp != experiment {
            bail!(
                "{} holds another sweep (its sweep.yaml or experiment.yaml differs from this \
                 command's grid, --set values or experiment file); continue it with the same \
                 arguments, or pick another --out.\n--- in the folder:\n{found}--- asked for:\n{wanted}",
                dir.root.display()
            );
        }
        return Ok(());
    }
    std::fs::create_dir_all(&dir.root)
        .with_context(|| format!("cannot create {}", dir.root.display()))?;
    crate::fsutil::write_atomic(&dir.experiment(), experiment.as_bytes())?;
    crate::fsutil::write_atomic(&dir.spec(), wanted.as_bytes())
}

/// The plan and base experiment of an existing sweep folder.
fn read_existing(dir: &SweepDir) -> Result<(Plan, Experiment)> {
    let spec: SweepSpec = crate::config::load_yaml(&dir.spec(), &[]).with_context(|| {
        format!(
            "{} is not a sweep folder (no readable sweep.yaml)",
            dir.root.display()
        )
    })?;
    let exp = Experiment::load(&dir.experiment(), &[])?;
    let plan = Plan::new(&spec.matrix(&exp)?, &exp.model)?;
    Ok((plan, exp))
}

/// `--list`: each shard's runs and evaluations as the shell commands that do the same work, one
/// a line (`# shard i/n:` before each shard's), ready to paste. The sweep's own records
/// (`finished.json`, `done.json`) are written only by `dis2 sweep`.
fn print_plan(plan: &Plan, shard: Shard, args: &SweepRequest, config: &Path, dir: &SweepDir) {
    let bin = std::env::current_exe().map_or("dis2".into(), |p| p.display().to_string());
    let count = if shard.count > 1 { shard.count } else { 1 };
    for index in 0..count {
        let s = Shard { index, count };
        println!("# shard {index}/{count}:");
        for u in plan.shard_units(s) {
            println!("{}", shell_line(&bin, &train_command(u, args, config, dir)));
        }
        for e in plan.shard_evals(s) {
            println!("{}", shell_line(&bin, &eval_command(e, args, dir)));
        }
    }
}

/// The `dis2` arguments that train `unit` as the sweep does, into its run folder.
fn train_command(unit: &Unit, args: &SweepRequest, config: &Path, dir: &SweepDir) -> Vec<String> {
    let mut c: Vec<String> = match &unit.kind {
        UnitKind::Teacher { modality_dropout } if *modality_dropout > 0.0 => vec![
            "train-teacher".into(),
            "--modality-dropout".into(),
            modality_dropout.to_string(),
        ],
        UnitKind::Teacher { .. } => vec!["train-teacher".into()],
        UnitKind::Student { teacher, missing } => vec![
            "distill".into(),
            "--teacher".into(),
            dir.run(teacher).best().display().to_string(),
            "--missing".into(),
            missing.join(","),
        ],
        UnitKind::Joint { scenarios } => {
            let mut c = vec!["distill".into(), "--joint".into()];
            for missing in scenarios {
                c.extend(["--missing".into(), missing.join(",")]);
            }
            c
        }
    };
    c.extend(["--config".into(), config.display().to_string()]);
    for o in args.set.iter().chain(&unit.overrides) {
        c.extend(["--set".into(), o.clone()]);
    }
    let out = dir.run(&unit.name).root.display().to_string();
    c.extend([
        "--out".into(),
        out,
        "--device".into(),
        args.device.to_string(),
    ]);
    c.push("--quiet".into());
    c
}

/// The `dis2 eval` arguments that score `job` as the sweep does (no figures), into its folder.
fn eval_command(job: &EvalJob, args: &SweepRequest, dir: &SweepDir) -> Vec<String> {
    let best = dir.run(&job.unit).best().display().to_string();
    let mut c = vec!["eval".into(), "--checkpoint".into(), best];
    c.extend(["--split".into(), job.split.as_str().into()]);
    if !job.drop.is_empty() {
        c.extend(["--drop".into(), job.drop.join(",")]);
    }
    for class in &args.exclude {
        c.extend(["--exclude".into(), class.clone()]);
    }
    let out = dir.eval(&job.name).display().to_string();
    c.extend(["--out".into(), out, "--overlays".into(), "0".into()]);
    c.extend(["--precision".into(), args.precision.to_string()]);
    c.extend(["--device".into(), args.device.to_string(), "--quiet".into()]);
    c
}

/// `bin` and `args` as one POSIX shell command line.
fn shell_line(bin: &str, args: &[String]) -> String {
    let words: Vec<String> = std::iter::once(bin)
        .chain(args.iter().map(String::as_str))
        .map(shell_quote)
        .collect();
    words.join(" ")
}

/// `word` as one word of a POSIX shell: as it is when every character is one no shell treats
/// specially, else in single quotes (a `'` inside written `'\''`).
fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:=,+@%^".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Progress over a shard's `total` runs and evaluations: a bar on a terminal, else plain lines.
fn sweep_progress(total: usize, quiet: bool) -> Progress {
    Progress::new(total as u64, 0, quiet).with_style(
        "sweep [{bar:30}] {pos}/{len} {elapsed_precise} {msg}",
        Some("=> "),
    )
}

/// Says which run or evaluation starts: `[i/n] what`.
fn start(progress: &Progress, what: &str) {
    progress.set_message(what);
    progress.println(&format!(
        "[{}/{}] {what}",
        progress.position() + 1,
        progress.total()
    ));
}

fn run_shard(
    dir: &SweepDir,
    plan: &Plan,
    shard: Shard,
    spec: &SweepSpec,
    (device, quiet): (tch::Device, bool),
) -> Result<()> {
    let units = plan.shard_units(shard);
    let evals = plan.shard_evals(shard);
    let mut progress = sweep_progress(units.len() + evals.len(), quiet);
    // Each run is scored as soon as it is trained, so the tables fill in as the sweep goes.
    // A stop signal ends the shard between runs and evaluations (a run stops at its step).
    let stop = |next: &str| {
        preempt::check(|| {
            format!(
                "sweep shard {}/{} stopped before {next}; its finished runs and evaluations are \
                 kept and the same command continues it",
                shard.index, shard.count
            )
        })
    };
    for unit in units {
        if dir.finished(&unit.name).exists() {
            progress.println(&format!("run {} is finished, skipped", unit.name));
        } else {
            stop(&format!("training {}", unit.name))?;
            start(&progress, &format!("training {}", unit.name));
            train_unit(dir, plan, unit, shard, device, &progress)
                .with_context(|| format!("sweep run {}", unit.name))?;
        }
        progress.inc(1);
        for job in evals.iter().filter(|e| e.unit == unit.name) {
            if dir.done(&job.name).exists() {
                progress.println(&format!("evaluation {} is done, skipped", job.name));
            } else {
                stop(&format!("scoring {}", job.name))?;
                start(&progress, &format!("scoring {}", job.name));
                eval_job(dir, job, spec, device)
                    .with_context(|| format!("sweep evaluation {}", job.name))?;
            }
            progress.inc(1);
        }
    }
    progress.finish_and_clear();
    Ok(())
}

/// Trains one unit to the end: resumes it when it has a checkpoint, starts it otherwise.
fn train_unit(
    dir: &SweepDir,
    plan: &Plan,
    unit: &Unit,
    shard: Shard,
    device: tch::Device,
    progress: &Progress,
) -> Result<()> {
    let (kind, scenarios, teacher, modality_dropout) = match &unit.kind {
        UnitKind::Teacher { modality_dropout } => {
            (RunKind::Teacher, Vec::new(), None, *modality_dropout)
        }
        UnitKind::Student { teacher, missing } => {
            wait_for(dir, plan, teacher, shard, progress)?;
            let checkpoint = dir.run(teacher).best();
            (
                RunKind::Distill,
                vec![missing.clone()],
                Some(checkpoint),
                0.0,
            )
        }
        UnitKind::Joint { scenarios } => (RunKind::Joint, scenarios.clone(), None, 0.0),
    };
    let started = Instant::now();
    let run = dir.run(&unit.name);
    let run_dir = &run.root;
    let opts = TrainOptions {
        device,
        quiet: true,
    };
    let summary = if run.spec().exists() && run.last().exists() {
        trainer::resume(run_dir, opts)?
    } else {
        // A folder without run.yaml or without a checkpoint was cut off (or failed) before its
        // first checkpoint: start it again, with the sweep's current settings.
        if run_dir.exists() {
            std::fs::remove_dir_all(run_dir)
                .with_context(|| format!("cannot remove {}", run_dir.display()))?;
        }
        let exp = Experiment::load(&dir.experiment(), &unit.overrides)?;
        let spec = RunSpec {
            kind,
            modality_dropout,
            scenarios,
            teacher,
        };
        trainer::start(exp, &dir.experiment(), spec, run_dir, opts)?
    };
    let record = json!({
        "run": unit.name,
        "steps": summary.steps,
        "best_val_miou": summary.best_miou,
        "score_unit": crate::metrics::SCORE_UNIT,
        "seconds_last_session": started.elapsed().as_secs_f64(),
    });
    crate::fsutil::write_atomic(
        &dir.finished(&unit.name),
        serde_json::to_string_pretty(&record)?.as_bytes(),
    )
}

/// Waits until `unit` (trained by this or another shard) is finished.
fn wait_for(
    dir: &SweepDir,
    plan: &Plan,
    unit: &str,
    shard: Shard,
    progress: &Progress,
) -> Result<()> {
    if dir.finished(unit).exists() {
        return Ok(());
    }
    let owner = plan
        .units
        .iter()
        .position(|u| u.name == unit)
        .map(|i| i % shard.count)
        .context("a student's teacher is not in the plan")?;
    if owner == shard.index {
        bail!("run {unit} should have been trained by this shard before its students");
    }
    progress.println(&format!(
        "waiting for {unit}, trained by shard {owner}/{} ({} appears when it is done)",
        shard.count,
        dir.finished(unit).display()
    ));
    while !dir.finished(unit).exists() {
        preempt::check(|| {
            format!(
                "sweep shard {}/{} stopped waiting for {unit}",
                shard.index, shard.count
            )
        })?;
        std::thread::sleep(Duration::from_secs(2));
    }
    Ok(())
}

/// Scores one unit's best checkpoint on the job's split with the job's modalities dropped, with
/// the sweep's exclusions and scoring precision.
fn eval_job(dir: &SweepDir, job: &EvalJob, spec: &SweepSpec, device: tch::Device) -> Result<()> {
    let started = Instant::now();
    let run = dir.run(&job.unit);
    let config = run.config();
    let request = EvalRequest {
        checkpoint: run.best(),
        exp: Experiment::load(&config, &[])?,
        config,
        drop: job.drop.clone(),
        split: job.split,
        overlap: None,
        exclude: spec.exclude.clone(),
        out: dir.eval(&job.name),
        // Figures are for a look at one model; the sweep only needs the scores.
        options: EvalOptions::default(),
        device,
        precision: spec.precision.resolve(device).context("--precision")?,
        quiet: true,
    };
    // `evaluate` holds the inference settings (threads, GDAL's cache) for its run and gives them
    // back: the next training run has every thread.
    let report = evaluate(&request)?;
    let per_class = report
        .class_names
        .iter()
        .zip(&report.scores.per_class)
        .map(|(name, c)| table::ClassDone {
            class: name.clone(),
            f1: c.f1,
            iou: c.iou,
        })
        .collect();
    let done = table::Done {
        branch: report.branch,
        dropped: job.drop.clone(),
        eval: job.name.clone(),
        mean_f1: report.scores.mean_f1,
        miou: report.scores.miou,
        overall_accuracy: report.scores.overall_accuracy,
        per_class,
        pixels: Some(report.scores.pixels),
        run: job.unit.clone(),
        score_unit: Some(crate::metrics::SCORE_UNIT.into()),
        seconds: started.elapsed().as_secs_f64(),
    };
    done.write(&dir.done(&job.name))
}

/// Writes the tables and the chart from the evaluations that are done.
fn write_tables(dir: &SweepDir, plan: &Plan, exp: &Experiment) -> Result<()> {
    let splits = &plan.matrix.splits;
    let results = table::Results::read(plan, splits[0], |eval| dir.done(eval))?;
    let selection = match splits.get(1) {
        Some(&split) => Some(table::Results::read(plan, split, |eval| dir.done(eval))?),
        None => None,
    };
    let classes = exp.data.class_table(exp.model.num_classes as usize);
    let class_names: Vec<String> = classes.iter().map(|c| c.name.clone()).collect();
    results.write(&dir.root, &class_names, selection.as_ref())?;
    let missing = results.missing_cells();
    println!(
        "wrote {}/results.{{md,csv,json}}, differences.csv and miou.png ({} of {} cells of the {} \
         split done, over {} seed(s))",
        dir.root.display(),
        results.done_cells(),
        results.done_cells() + missing,
        results.split().as_str(),
        plan.matrix.seeds.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listed line, split back by a POSIX shell, gives the words it was made of: plain words
    /// stay bare, the others (spaces, quotes, braces, `$`, an empty word) are quoted.
    #[test]
    fn shell_lines_split_back_into_their_words() {
        let words: Vec<String> = [
            "--set",
            r#"model.modalities=[{"name":"dsm","channels":1}]"#,
            "it's a $HOME `x` \\ path",
            "",
            "seed=3",
        ]
        .map(String::from)
        .to_vec();
        let line = shell_line("/opt/dis2 bin/dis2", &words);
        assert!(
            line.contains(" --set ") && line.ends_with(" seed=3"),
            "{line}"
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("printf '%s\\0' {line}")])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let back: Vec<&str> = text.split_terminator('\0').collect();
        assert_eq!(back[0], "/opt/dis2 bin/dis2");
        assert_eq!(
            back[1..],
            words.iter().map(String::as_str).collect::<Vec<_>>()[..]
        );
    }
}
