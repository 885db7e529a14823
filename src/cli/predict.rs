//! `dis2 predict`: its arguments, the scene list, and the loop over the scenes.
//!
//! The inputs are named after the checkpoint's modalities (`--optical a.tif --sar c.tif`), which
//! clap cannot know when the binary is built: [`inputs_last`] moves every `--NAME FILE` that is
//! not one of the options below behind a `--` before clap parses the command line (once, every
//! option in its own field wherever it stands), and the pairs are matched against the
//! checkpoint's modalities.

use anyhow::{anyhow, bail, Context, Result};
use clap::builder::PossibleValue;
use clap::{CommandFactory, Parser, ValueEnum};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::{DeviceArgs, ProgressArgs, RouteArgs, TtaArgs};
use crate::data::config::{GridConfig, Resampling};
use crate::data::validity::AlphaRule;
use crate::data::vsi;
use crate::precision::PrecisionChoice;
use crate::predict::{
    predict_scene, InferenceSettings, InferenceWork, PredictOptions, Predictor, ProbsType,
    SceneJob, Summary, Tta,
};
use crate::train::run::RunDir;

/// `dis2 predict`.
#[derive(Debug, Parser)]
#[command(
    name = "predict",
    after_help = "Inputs: one `--NAME FILE` per modality of the checkpoint (e.g. --optical a.tif \
                  --dsm b.tif --sar c.tif). A modality left out, or without data at a pixel, is \
                  missing there: its student runs, or a student of more missing modalities, or \
                  with --allow-fill the teacher with it filled. See docs/predict.md."
)]
pub struct PredictArgs {
    /// The checkpoint: a checkpoint directory (a run's `checkpoints/best`), a checkpoint name
    /// (NAME.safetensors + NAME.yaml), or a run directory (its `checkpoints/best` is used).
    #[arg(long, value_name = "CHECKPOINT")]
    pub checkpoint: Option<PathBuf>,
    /// Class map to write (u8 GeoTIFF, 255 = nodata).
    #[arg(long, value_name = "FILE.tif")]
    pub out: Option<PathBuf>,
    /// Also write per-class probabilities (one band per class).
    #[arg(long, value_name = "FILE.tif")]
    pub probs: Option<PathBuf>,
    /// Pixel type of --probs: u8 (255 x p) or f32 [default: f32].
    #[arg(long, value_enum, value_name = "TYPE")]
    pub probs_type: Option<ProbsType>,
    /// Also write a downsampled colour rendering of the class map (PNG, at most 1024 px a side).
    #[arg(long, value_name = "FILE.png")]
    pub preview: Option<PathBuf>,
    /// Pixels shared by neighbouring windows [default: a quarter of the model's crop].
    #[arg(long, value_name = "PX")]
    pub overlap: Option<usize>,
    /// Windows per model call [default: 8].
    #[arg(long, value_name = "N")]
    pub batch: Option<usize>,
    /// Without a student for the missing modalities, run the teacher with them filled with the
    /// training mean.
    #[arg(long)]
    pub allow_fill: bool,
    /// Where a modality is missing (repeatable), e.g. `optical=clouds.tif`: any raster on any
    /// grid (resampled by nearest); nonzero = missing, its nodata = not missing.
    #[arg(long, value_name = "MODALITY=FILE")]
    pub missing_mask: Vec<String>,
    /// Also write the route map: which branch classified each pixel (u8 codes with a colour
    /// table and category names, 255 = nodata).
    #[arg(long, value_name = "FILE.tif")]
    pub routes: Option<PathBuf>,
    /// Also write each pixel's confidence: the maximum blended class probability (Float32, one
    /// band, NaN = nodata where the class map is).
    #[arg(long, value_name = "FILE.tif")]
    pub confidence: Option<PathBuf>,
    #[command(flatten)]
    pub routes_per_pixel: RouteArgs,
    /// Write every raster output (class map, probabilities, route map) as a Cloud-Optimized
    /// GeoTIFF by GDAL's COG driver: tiled, with overviews (MODE for class and route maps,
    /// AVERAGE for probabilities).
    #[arg(long)]
    pub cog: bool,
    #[command(flatten)]
    pub tta: TtaArgs,
    /// Also write the spread across the views of --tta (flips or d8): the standard deviation
    /// over the views of the probability of the predicted class (float32, NaN = nodata).
    #[arg(long, value_name = "FILE.tif")]
    pub tta_spread: Option<PathBuf>,
    /// Several scenes: one line per scene, `NAME=FILE ... out=FILE [probs=FILE]
    /// [preview=FILE] [routes=FILE] [tta-spread=FILE] [confidence=FILE] [missing.NAME=FILE ...]`;
    /// relative paths are relative to the list's folder (also the archive of
    /// `/vsizip/a.zip/x.tif`); `#` starts a comment.
    #[arg(long, value_name = "FILE")]
    pub list: Option<PathBuf>,
    /// With --list: predict only scenes i, i+n, i+2n, ... (0-based), for job arrays.
    #[arg(long, value_name = "i/n")]
    pub shard: Option<String>,
    /// With --list: leave out the scenes whose outputs (`out=`, and `probs=`, `routes=`,
    /// `preview=` where given) all exist, so that a rerun of a stopped or requeued task goes on
    /// where it stopped (outputs appear only when complete).
    #[arg(long)]
    pub skip_existing: bool,
    /// The modality whose grid the outputs take; inputs on other grids are resampled onto it
    /// [default: the first input in the checkpoint's modality order].
    #[arg(long, value_name = "NAME")]
    pub grid_reference: Option<String>,
    /// Refuse inputs that are not on the reference grid instead of resampling them.
    #[arg(long)]
    pub strict_grid: bool,
    /// Classify inputs whose values lie far outside the checkpoint's normalisation (another
    /// bit depth, unit or scale than the training data's), with a warning, instead of refusing
    /// them.
    #[arg(long)]
    pub accept_input_range: bool,
    /// Read bands the inputs mark as alpha as data, not as transparency masks (GDAL's and
    /// rasterio's defaults mark the NIR band of a 4-band byte RGB + NIR file as alpha).
    #[arg(long)]
    pub alpha_as_data: bool,
    /// Resampling of one modality onto the grid (repeatable), e.g. `dsm=cubic`: nearest,
    /// bilinear, cubic, cubic_spline, lanczos, average, mode, min, max, median [default:
    /// average when downsampling 2x or more, nearest for class maps, else bilinear].
    #[arg(long, value_name = "NAME=METHOD")]
    pub resampling: Vec<String>,
    #[command(flatten)]
    pub progress: ProgressArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// fp32, bf16 (bfloat16 convolutions and matrix products, float32 probabilities and
    /// blending) or auto (bf16 where the CPU or GPU computes it in hardware) [default: fp32].
    #[arg(long, value_name = "PRECISION")]
    pub precision: Option<PrecisionChoice>,
    /// `--NAME FILE` per modality, moved behind a `--` by [`inputs_last`].
    #[arg(
        last = true,
        allow_hyphen_values = true,
        hide = true,
        value_name = "--NAME FILE"
    )]
    pub inputs: Vec<String>,
}

/// `--probs-type u8|f32`.
impl ValueEnum for ProbsType {
    fn value_variants<'a>() -> &'a [Self] {
        &[ProbsType::U8, ProbsType::F32]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            ProbsType::U8 => PossibleValue::new("u8").help(
                "round(255 x p); no nodata value (the class map says where the inputs were nodata)",
            ),
            ProbsType::F32 => PossibleValue::new("f32")
                .help("p as it is; NaN (the band's nodata) where any input is nodata"),
        })
    }
}

/// The long options of `predict` (and dis2's global ones), each with whether it takes a value.
fn known_options() -> Vec<(String, bool)> {
    PredictArgs::command()
        .get_arguments()
        .filter_map(|a| {
            a.get_long()
                .map(|l| (l.to_string(), a.get_action().takes_values()))
        })
        .chain([("help".to_string(), false), ("threads".to_string(), true)])
        .collect()
}

/// A `dis2 ... predict ...` command line with its `--NAME FILE` inputs moved behind a `--` (in
/// their order), where [`PredictArgs::inputs`] collects them; any other command line as it is.
/// Every token that is not one of predict's options (or the value of one) is an input: clap
/// then parses all the options once, whether they stand before or after the inputs.
pub(crate) fn inputs_last(args: Vec<OsString>) -> Vec<OsString> {
    let Some(at) = predict_position(&args) else {
        return args;
    };
    let known = known_options();
    let mut options: Vec<OsString> = args[..=at].to_vec();
    let mut inputs: Vec<OsString> = Vec::new();
    let mut tokens = args.into_iter().skip(at + 1).peekable();
    while let Some(token) = tokens.next() {
        let text = token.to_string_lossy();
        if text == "--" {
            inputs.extend(tokens.by_ref());
            break;
        }
        let Some(flag) = text.strip_prefix("--") else {
            options.push(token);
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((name, _)) => (name, true),
            None => (flag, false),
        };
        let target = match known.iter().find(|(long, _)| long == name) {
            Some((_, takes_value)) => {
                let value = *takes_value && !inline;
                options.push(token);
                if value {
                    options.extend(tokens.next());
                }
                continue;
            }
            None => &mut inputs,
        };
        target.push(token);
        let value_follows = tokens
            .peek()
            .is_some_and(|next| !next.to_string_lossy().starts_with("--"));
        if !inline && value_follows {
            target.extend(tokens.next());
        }
    }
    if !inputs.is_empty() {
        options.push("--".into());
        options.extend(inputs);
    }
    options
}

/// The index of the `predict` subcommand in `args`, if that is the command (global options such
/// as `--threads N` may stand before it).
fn predict_position(args: &[OsString]) -> Option<usize> {
    let mut i = 1;
    while let Some(token) = args.get(i) {
        let text = token.to_string_lossy();
        if text == "--threads" {
            i += 2;
        } else if text.starts_with('-') {
            i += 1;
        } else {
            return (text == "predict").then_some(i);
        }
    }
    None
}

/// The `MODALITY=FILE` pairs of `--missing-mask`.
fn parse_masks(items: &[String]) -> Result<Vec<(String, PathBuf)>> {
    items
        .iter()
        .map(|item| {
            item.split_once('=')
                .filter(|(n, f)| !n.is_empty() && !f.is_empty())
                .map(|(n, f)| (n.to_string(), PathBuf::from(f)))
                .ok_or_else(|| {
                    anyhow!(
                        "--missing-mask {item:?}: expected MODALITY=FILE, e.g. optical=clouds.tif"
                    )
                })
        })
        .collect()
}

/// The `--NAME FILE` pairs of [`PredictArgs::inputs`].
fn parse_inputs(tokens: &[String]) -> Result<Vec<(String, PathBuf)>> {
    let mut inputs: Vec<(String, PathBuf)> = Vec::new();
    let mut tokens = tokens.iter();
    while let Some(token) = tokens.next() {
        let Some(flag) = token.strip_prefix("--") else {
            bail!("unexpected argument {token:?}: inputs are given as --NAME FILE");
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag.to_string(), None),
        };
        if name.is_empty() {
            bail!("unexpected argument \"--\"");
        }
        let value = match inline {
            Some(v) => v,
            None => match tokens.next() {
                Some(v) if !v.starts_with("--") => v.clone(),
                _ => bail!("--{name}: expected a file after it"),
            },
        };
        if value.is_empty() {
            bail!("--{name}: expected a file, found an empty string");
        }
        inputs.push((name, PathBuf::from(value)));
    }
    Ok(inputs)
}

/// The grid flags as the grid configuration.
fn grid_config(args: &PredictArgs) -> Result<GridConfig> {
    let mut resampling = BTreeMap::new();
    for item in &args.resampling {
        let (name, method) = item
            .split_once('=')
            .filter(|(n, m)| !n.is_empty() && !m.is_empty())
            .ok_or_else(|| {
                anyhow!("--resampling {item:?}: expected NAME=METHOD, e.g. dsm=cubic")
            })?;
        let method = Resampling::parse(method).with_context(|| format!("--resampling {item}"))?;
        resampling.insert(name.to_string(), method);
    }
    Ok(GridConfig {
        reference: args.grid_reference.clone(),
        strict: args.strict_grid,
        resampling,
    })
}

/// `i/n` with `i < n`.
fn parse_shard(text: &str) -> Result<(usize, usize)> {
    let bad = || anyhow!("--shard {text:?}: expected i/n with 0 <= i < n, e.g. 0/4");
    let (i, n) = text.split_once('/').ok_or_else(bad)?;
    let i: usize = i.trim().parse().map_err(|_| bad())?;
    let n: usize = n.trim().parse().map_err(|_| bad())?;
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

/// Reads a scene list (see [`PredictArgs::list`]).
fn parse_list(path: &Path) -> Result<Vec<SceneJob>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--list: cannot read {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new(""));
    let resolve = |v: &str| vsi::resolve(base, v);
    let mut jobs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("{}:{}", path.display(), n + 1);
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut job = SceneJob::default();
        let mut out = None;
        for item in line.split_whitespace() {
            let (key, value) = item
                .split_once('=')
                .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                .ok_or_else(|| anyhow!("{at}: {item:?} is not KEY=FILE"))?;
            match key {
                "out" => out = Some(resolve(value)),
                "probs" => job.probs = Some(resolve(value)),
                "preview" => job.preview = Some(resolve(value)),
                "routes" => job.routes = Some(resolve(value)),
                "tta-spread" => job.tta_spread = Some(resolve(value)),
                "confidence" => job.confidence = Some(resolve(value)),
                key => match key.strip_prefix("missing.") {
                    Some(name) => job.missing_masks.push((name.to_string(), resolve(value))),
                    None => job.inputs.push((key.to_string(), resolve(value))),
                },
            }
        }
        job.out = out.ok_or_else(|| anyhow!("{at}: no out=FILE"))?;
        if job.inputs.is_empty() {
            bail!("{at}: no input (NAME=FILE)");
        }
        jobs.push(job);
    }
    if jobs.is_empty() {
        bail!("--list {}: no scenes in the file", path.display());
    }
    Ok(jobs)
}

/// Runs `dis2 predict`.
pub(crate) fn run(args: PredictArgs) -> Result<()> {
    let named = args
        .checkpoint
        .clone()
        .ok_or_else(|| anyhow!("--checkpoint is required"))?;
    let (checkpoint, _) = RunDir::locate_checkpoint(&named);
    let jobs = scene_jobs(&args)?;
    let options = predict_options(&args)?;
    let device = args.device.device.resolve()?;
    let precision = args.precision.unwrap_or_default().resolve(device);
    let predictor = Predictor::load_in(&checkpoint, device, precision.context("--precision")?)?;
    let work = InferenceWork::of(&predictor.info().model, options.batch);
    let _settings = InferenceSettings::enter(device, &work);
    options.grid.validate(
        &predictor.info().model,
        ["--grid-reference", "--resampling"],
    )?;
    if args.list.is_some() {
        crate::preempt::install()?;
    }
    run_jobs(&predictor, &jobs, &options, args.skip_existing)
}

/// The scenes to predict: those of `--list` (this shard's), or the one of the command line.
fn scene_jobs(args: &PredictArgs) -> Result<Vec<SceneJob>> {
    let inputs = parse_inputs(&args.inputs)?;
    if let Some(list) = &args.list {
        if !inputs.is_empty()
            || args.out.is_some()
            || args.probs.is_some()
            || args.preview.is_some()
            || args.routes.is_some()
            || args.tta_spread.is_some()
            || args.confidence.is_some()
            || !args.missing_mask.is_empty()
        {
            bail!("--list names inputs, masks and outputs per scene: leave out --NAME FILE, --missing-mask, --out, --probs, --routes, --tta-spread, --confidence and --preview");
        }
        let jobs = parse_list(list)?;
        return Ok(match &args.shard {
            None => jobs,
            Some(s) => {
                let (i, n) = parse_shard(s)?;
                jobs.into_iter().skip(i).step_by(n).collect()
            }
        });
    }
    if let Some(s) = &args.shard {
        parse_shard(s)?;
        bail!("--shard needs --list");
    }
    if args.skip_existing {
        bail!("--skip-existing needs --list");
    }
    let out = args
        .out
        .clone()
        .ok_or_else(|| anyhow!("--out is required (or --list)"))?;
    Ok(vec![SceneJob {
        inputs,
        missing_masks: parse_masks(&args.missing_mask)?,
        out,
        probs: args.probs.clone(),
        preview: args.preview.clone(),
        routes: args.routes.clone(),
        tta_spread: args.tta_spread.clone(),
        confidence: args.confidence.clone(),
    }])
}

/// The options of every scene, from the command line.
fn predict_options(args: &PredictArgs) -> Result<PredictOptions> {
    let mut options = PredictOptions {
        overlap: args.overlap,
        batch: args.batch.unwrap_or(8),
        allow_fill: args.allow_fill,
        probs_type: args.probs_type.unwrap_or(ProbsType::F32),
        prefetch: 2,
        quiet: args.progress.quiet,
        announce_fill: true,
        grid: grid_config(args)?,
        grid_file: None,
        announce_grid: true,
        accept_input_range: args.accept_input_range,
        alpha: AlphaRule::data_if(args.alpha_as_data),
        cog: args.cog,
        tta: args.tta.tta,
        ..PredictOptions::default()
    };
    args.routes_per_pixel.apply(&mut options)?;
    if options.batch == 0 {
        bail!("--batch must be at least 1");
    }
    Ok(options)
}

/// Predicts the scenes in turn, a summary line each; with `skip_existing`, a scene whose
/// outputs all exist is left out. A stop signal ends the run between scenes.
fn run_jobs(
    predictor: &Predictor,
    jobs: &[SceneJob],
    options: &PredictOptions,
    skip_existing: bool,
) -> Result<()> {
    let count = jobs.len();
    for (n, job) in jobs.iter().enumerate() {
        if skip_existing && outputs(job).iter().all(|p| p.exists()) {
            println!("{}: exists, skipped", job.out.display());
            continue;
        }
        // A stop signal ends a list between scenes: every output written so far is complete.
        crate::preempt::check(|| {
            format!(
                "predict stopped before scene {} of {count} ({}); the scenes before it are \
                 written, --skip-existing goes on from there",
                n + 1,
                job.out.display()
            )
        })?;
        let summary = predict_scene(predictor, job, options)
            .with_context(|| format!("scene {} of {count} ({})", n + 1, job.out.display()))?;
        println!("{}", summary_line(job, &summary, options.tta));
    }
    Ok(())
}

/// The files a scene writes.
fn outputs(job: &SceneJob) -> Vec<&Path> {
    let optional = [
        &job.probs,
        &job.routes,
        &job.tta_spread,
        &job.confidence,
        &job.preview,
    ];
    let named = optional.into_iter().flatten().map(PathBuf::as_path);
    std::iter::once(job.out.as_path()).chain(named).collect()
}

/// A scene's summary line: size, windows, the branch or each route's share, the nodata share
/// when there is any, precision, the TTA views when there are several, time and speed.
fn summary_line(job: &SceneJob, summary: &Summary, tta: Tta) -> String {
    let nodata = match summary.nodata_pixels {
        0 => String::new(),
        n => format!(
            ", nodata {:.1} %",
            100.0 * n as f64 / (summary.width * summary.height) as f64
        ),
    };
    let tta = match tta {
        Tta::None => String::new(),
        tta => format!(", tta {tta}"),
    };
    format!(
        "{}: {}x{} px, {} windows, {}{nodata}, {}{tta}, {:.1} s, {:.2} MP/s",
        job.out.display(),
        summary.width,
        summary.height,
        summary.windows,
        summary.route,
        summary.precision,
        summary.seconds,
        summary.megapixels_per_s()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cli::{Cli, Command};
    use clap::parser::ValueSource;

    /// `predict`'s arguments and inputs as `dis2 ARGS...` parses them.
    #[derive(Debug)]
    struct Resolved {
        args: PredictArgs,
        inputs: Vec<(String, PathBuf)>,
        threads: Option<usize>,
    }

    fn parse(args: &[&str]) -> Result<Resolved> {
        let argv = std::iter::once("dis2").chain(args.iter().copied());
        let cli = Cli::try_parse_from(inputs_last(argv.map(OsString::from).collect()))?;
        let Command::Predict(args) = cli.command else {
            bail!("not predict");
        };
        let inputs = parse_inputs(&args.inputs)?;
        Ok(Resolved {
            args,
            inputs,
            threads: cli.threads,
        })
    }

    /// Every option of `predict`, given after an input, reaches its own field: clap parses the
    /// options once, wherever they stand. A new option without a sample value here fails.
    #[test]
    fn every_option_after_an_input_is_parsed() {
        let samples: BTreeMap<&str, &str> = [
            ("checkpoint", "ck"),
            ("out", "c.tif"),
            ("probs", "p.tif"),
            ("probs-type", "u8"),
            ("preview", "v.png"),
            ("overlap", "4"),
            ("batch", "3"),
            ("list", "scenes.txt"),
            ("shard", "0/2"),
            ("grid-reference", "sar"),
            ("resampling", "dsm=cubic"),
            ("device", "cpu"),
            ("precision", "bf16"),
            ("missing-mask", "optical=m.tif"),
            ("routes", "r.tif"),
            ("confidence", "k.tif"),
            ("context-margin", "4"),
            ("route-blend", "4"),
            ("tta", "d8"),
            ("tta-spread", "s.tif"),
        ]
        .into();
        let command = crate::cli::Cli::command();
        let predict = command.find_subcommand("predict").unwrap();
        let mut argv: Vec<String> = ["dis2", "predict", "--optical", "a.tif"]
            .map(String::from)
            .into();
        let mut ids = Vec::new();
        for arg in predict.get_arguments().filter(|a| !a.is_hide_set()) {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" {
                continue;
            }
            ids.push(arg.get_id().to_string());
            argv.push(format!("--{long}"));
            if arg.get_action().takes_values() {
                let value = samples
                    .get(long)
                    .unwrap_or_else(|| panic!("--{long}: give it a sample value in this test"));
                argv.push(value.to_string());
            }
        }
        argv.extend(["--sar", "s.tif", "--threads", "2"].map(String::from));
        let rewritten = inputs_last(argv.iter().map(OsString::from).collect());
        let matches = command.clone().try_get_matches_from(&rewritten).unwrap();
        let (_, sub) = matches.subcommand().unwrap();
        for id in &ids {
            assert_eq!(sub.value_source(id), Some(ValueSource::CommandLine), "{id}");
        }
        let rest: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
        let r = parse(&rest).unwrap();
        assert_eq!(r.inputs.len(), 2);
        assert_eq!(r.threads, Some(2));
        assert_eq!(r.args.precision.map(|p| p.to_string()), Some("bf16".into()));
    }

    #[test]
    fn modality_flags_and_options_mix_in_any_order() {
        let r = parse(&[
            "predict",
            "--checkpoint",
            "ck",
            "--optical",
            "a.tif",
            "--out",
            "c.tif",
            "--sar=s.tif",
            "--allow-fill",
            "--device",
            "cpu",
            "--batch",
            "3",
        ])
        .unwrap();
        assert_eq!(
            r.inputs,
            vec![
                ("optical".to_string(), PathBuf::from("a.tif")),
                ("sar".to_string(), PathBuf::from("s.tif"))
            ]
        );
        assert_eq!(r.args.out, Some(PathBuf::from("c.tif")));
        assert_eq!(r.args.checkpoint, Some(PathBuf::from("ck")));
        assert_eq!(r.args.batch, Some(3));
        assert!(r.args.allow_fill);
        assert_eq!(r.args.device.device, crate::device::DeviceChoice::Cpu);
        let early = parse(&["predict", "--device", "cpu", "--dsm", "d.tif"]).unwrap();
        assert_eq!(early.args.device.device, crate::device::DeviceChoice::Cpu);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let err = parse(&["predict", "--optical"]).unwrap_err().to_string();
        assert!(err.contains("--optical: expected a file"), "{err}");
        let err = parse(&["predict", "--optical", "a.tif", "stray"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("stray"), "{err}");
        // dis2's global --threads is an option wherever it stands, not an input.
        let r = parse(&["predict", "--sar", "a", "--threads", "2"]).unwrap();
        assert_eq!((r.inputs.len(), r.threads), (1, Some(2)));
    }

    #[test]
    fn grid_flags_mix_with_inputs_and_bad_methods_are_named() {
        let r = parse(&[
            "predict",
            "--optical",
            "a.tif",
            "--grid-reference",
            "sar",
            "--sar",
            "s.tif",
            "--resampling",
            "dsm=cubic",
            "--strict-grid",
            "--resampling=sar=average",
        ])
        .unwrap();
        assert_eq!(r.inputs.len(), 2);
        let grid = grid_config(&r.args).unwrap();
        assert_eq!(grid.reference.as_deref(), Some("sar"));
        assert!(grid.strict);
        assert_eq!(grid.resampling["dsm"], Resampling::Cubic);
        assert_eq!(grid.resampling["sar"], Resampling::Average);
        for (bad, expected) in [
            ("dsm", "NAME=METHOD"),
            ("dsm=bicubic", "unknown resampling"),
        ] {
            let r = parse(&["predict", "--resampling", bad]).unwrap();
            let err = format!("{:#}", grid_config(&r.args).unwrap_err());
            assert!(
                err.contains("--resampling") && err.contains(expected),
                "{err}"
            );
        }
    }

    #[test]
    fn shards_are_checked() {
        assert_eq!(parse_shard("1/4").unwrap(), (1, 4));
        for bad in ["4/4", "0/0", "1", "a/2", "-1/3"] {
            let err = parse_shard(bad).unwrap_err().to_string();
            assert!(err.contains("--shard") && err.contains("i/n"), "{err}");
        }
    }

    #[test]
    fn lists_resolve_paths_and_report_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("scenes.txt");
        std::fs::write(
            &list,
            "# comment\noptical=a.tif dsm=/abs/b.tif out=o/c.tif probs=p.tif confidence=k.tif\n\n sar=s.tif out=x.tif # tail\n",
        )
        .unwrap();
        let jobs = parse_list(&list).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            jobs[0].inputs[0],
            ("optical".into(), dir.path().join("a.tif"))
        );
        assert_eq!(jobs[0].inputs[1].1, PathBuf::from("/abs/b.tif"));
        assert_eq!(jobs[0].out, dir.path().join("o/c.tif"));
        assert_eq!(jobs[0].probs, Some(dir.path().join("p.tif")));
        assert_eq!(jobs[0].confidence, Some(dir.path().join("k.tif")));
        assert_eq!(jobs[1].confidence, None);
        assert_eq!(
            jobs[1].inputs,
            vec![("sar".into(), dir.path().join("s.tif"))]
        );
        std::fs::write(&list, "optical=a.tif\n").unwrap();
        let err = parse_list(&list).unwrap_err().to_string();
        assert!(
            err.contains("scenes.txt:1") && err.contains("out="),
            "{err}"
        );
        std::fs::write(&list, "optical=a.tif out=b.tif junk\n").unwrap();
        let err = parse_list(&list).unwrap_err().to_string();
        assert!(err.contains("\"junk\" is not KEY=FILE"), "{err}");
    }
}
