//! `make bench-predict`: what `dis2 predict` costs, whole job (reading, model, blending, writing
//! the GeoTIFFs), each measurement in a fresh child process.
//!
//! 1. Throughput of the width-32 model of experiments/synthetic-w32.yaml (128 x 128 windows, no
//!    overlap) and of the width-8 model of experiments/synthetic.yaml (64 x 64 windows, overlap
//!    16), batch 8, the teacher with optical + dsm + sar, on a 2048 x 2048 scene, in fp32 and
//!    bf16, with the pipeline `dis2 predict` runs (its `InferenceSettings` split the threads)
//!    and with everything in one thread; rounds alternate the four, so that each ratio (bf16
//!    over fp32, pipeline over one thread) comes from runs minutes apart at most. Each run also
//!    says where its time went ([`Timings`]) and how many threads libtorch had. Then, per
//!    configuration (its fastest round), GFLOP/s of the whole job and of the model's seconds
//!    alone, from the GFLOP per window that libtorch's profiler counts (convolutions and matrix
//!    products of the fp32 teacher, as `make bench-step` counts them), and the model's share of
//!    the GEMM peak (a 2048² matrix product in that precision, before and after the rounds, the
//!    faster) measured with the threads the model had.
//! 2. Warping and routes: the width-8 model (64 x 64 windows, one thread) with the SAR on the
//!    scene's grid (aligned), at 4x coarser resolution (warped onto the optical grid window by
//!    window), and cut off over the right 30 % of the scene (`cut`: those pixels take a second
//!    route, student[sar], composed per pixel with the teacher's), and the cost of warping alone
//!    (the SAR read in predict's strips, aligned against warped).
//! 3. Peak resident memory (VmHWM) of the width-8 model with the warped SAR cut off over 30 % of
//!    the scene (`warped-cut`: a resampled input and a second route) on 2048 x 2048 and
//!    8192 x 8192 scenes, one thread, writing the class map, the f32 probabilities and the route
//!    map as plain GeoTIFFs and as COGs (`--cog`): memory must not grow with the scene's height
//!    either way; what `--cog` costs in time and in bytes written, beside the plain files.
//!
//! Models are freshly initialised (speed does not depend on the weights). "one thread" is a rayon
//! pool of 1, one libtorch thread and no background threads (each batch is read, run, then
//! blended and written). Scenes mirror one generated 1024 x 1024 synthetic scene (seamless), with
//! `sar_coarse.tif` the SAR averaged over 4 x 4 pixels, and are kept in DIR.
//!
//! Usage: `bench_predict [DIR [ROUNDS [THROUGHPUT_SIZE SMALL_SIZE LARGE_SIZE]]]` (defaults:
//! target/bench-predict, 2, 2048, 2048, 8192; the warping runs use THROUGHPUT_SIZE). A child:
//! `bench_predict --child MODE PRECISION SAR CHECKPOINT SCENE_DIR OVERLAP OUTPUTS`, MODE
//! `pipeline`, `single`, `read` (the SAR alone) or `threads:T:R:P` (libtorch threads, rayon
//! threads, batches read ahead; for trying other splits), SAR `aligned`, `warped`, `cut` or
//! `warped-cut`, OUTPUTS `classes` (the class map), `all` (with the f32 probabilities and the
//! route map) or `cog` (those three as COGs).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use dis2::checkpoint::{self, CheckpointInfo};
use dis2::config::Experiment;
use dis2::data::config::GridConfig;
use dis2::data::grid::{self, GridFile, GridKeys};
use dis2::data::raster::{write_geotiff, GeoRef, RasterData, RasterInfo, Window, WriteOptions};
use dis2::data::synth;
use dis2::model::{Dis2Net, Route};
use dis2::native::{gemm_gflops, matrix_flops, profile};
use dis2::precision::{Precision, PrecisionChoice};
use dis2::predict::{
    cores, InferenceWork, PredictOptions, Predictor, SceneJob, ThreadSplit, Timings,
};
use dis2::tiling::reflect_index;

const TILE: usize = 1024;

/// One child run's figures.
struct Figures {
    windows: f64,
    seconds: f64,
    mps: f64,
    peak_kb: f64,
    /// Bytes of the files the run wrote (sidecars included).
    bytes: f64,
    /// libtorch's threads in the run (0 for a read alone).
    threads: usize,
    timings: Timings,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return child(&args[1..]);
    }
    let dir = PathBuf::from(
        args.first()
            .cloned()
            .unwrap_or("target/bench-predict".into()),
    );
    let rounds: usize = match args.get(1) {
        Some(r) => r.parse().with_context(|| format!("ROUNDS: {r:?}"))?,
        None => 2,
    };
    let sizes: Vec<usize> = args
        .iter()
        .skip(2)
        .map(|a| {
            a.parse()
                .with_context(|| format!("expected a scene size, got {a:?}"))
        })
        .collect::<Result<_>>()?;
    let [big, small, large] = match sizes[..] {
        [] => [2048, 2048, 8192],
        [a, b, c] if a > 0 && b > 0 && c > 0 => [a, b, c],
        _ => bail!("usage: bench_predict [DIR [ROUNDS [THROUGHPUT_SIZE SMALL_SIZE LARGE_SIZE]]]"),
    };
    std::fs::create_dir_all(&dir)?;
    println!(
        "bench-predict: {} cores (dis2::predict::cores); CPU bf16: {}",
        cores(),
        dis2::precision::CpuBf16::detect().describe()
    );
    throughput(&dir, big, rounds)?;
    warping(&dir, big)?;
    memory(&dir, small, large)
}

/// A model of part 1: its experiment file, checkpoint folder and windows' overlap.
struct Model {
    label: &'static str,
    config: &'static str,
    folder: &'static str,
    overlap: usize,
}

const MODELS: [Model; 2] = [
    Model {
        label: "width 32, 128 x 128 windows, no overlap",
        config: "experiments/synthetic-w32.yaml",
        folder: "model-w32",
        overlap: 0,
    },
    Model {
        label: "width 8, 64 x 64 windows, overlap 16",
        config: "experiments/synthetic.yaml",
        folder: "model-w8",
        overlap: 16,
    },
];

/// Part 1: widths 32 and 8, fp32 and bf16, pipeline and one thread, `rounds` alternating
/// rounds; then GFLOP/s and the share of the GEMM peak of the model's threads.
fn throughput(dir: &Path, size: usize, rounds: usize) -> Result<()> {
    let scene = scene(dir, size)?;
    for model in &MODELS {
        let ck = dir.join(model.folder);
        write_checkpoint(&ck, model.config)?;
        let gflop = window_gflop(&ck)?;
        println!(
            "\n{}, batch 8, {size} x {size} scene, whole job; {gflop:.3} GFLOP per window \
             (libtorch's profiler: convolutions and matrix products)",
            model.label
        );
        let before = peaks()?;
        let all = throughput_rounds(&ck, &scene, model.overlap, rounds)?;
        let after = peaks()?;
        let peak = |threads: usize, bf16: bool| -> f64 {
            let pick = |p: &[(usize, f64, f64)]| {
                (p.iter().find(|q| q.0 == threads))
                    .map_or(f64::NAN, |q| if bf16 { q.2 } else { q.1 })
            };
            pick(&before).max(pick(&after))
        };
        share_of_peak(&all, gflop, &peak);
    }
    Ok(())
}

const CONFIGS: [(&str, &str); 4] = [
    ("fp32", "pipeline"),
    ("bf16", "pipeline"),
    ("fp32", "single"),
    ("bf16", "single"),
];

/// The rounds of part 1 for one model: every configuration's figures, in [`CONFIGS`] order.
fn throughput_rounds(
    ck: &Path,
    scene: &Path,
    overlap: usize,
    rounds: usize,
) -> Result<Vec<Vec<Figures>>> {
    println!(
        "{:>5} {:>9} {:>9} {:>7} {:>8} {:>8} | seconds in: {:>6} {:>6} {:>6} {:>6} {:>7}",
        "round",
        "precision",
        "mode",
        "threads",
        "seconds",
        "MP/s",
        "read",
        "model",
        "blend",
        "write",
        "handoff"
    );
    let mut all: Vec<Vec<Figures>> = (0..CONFIGS.len()).map(|_| Vec::new()).collect();
    for round in 0..rounds {
        // Alternate the order, so that no configuration always runs first.
        let order: Vec<usize> = if round % 2 == 0 {
            (0..CONFIGS.len()).collect()
        } else {
            (0..CONFIGS.len()).rev().collect()
        };
        for i in order {
            let (precision, mode) = CONFIGS[i];
            let f = run_child(mode, precision, "aligned", ck, scene, overlap, "classes")?;
            let t = f.timings;
            println!(
                "{round:>5} {precision:>9} {mode:>9} {:>7} {:>8.1} {:>8.3} |             {:>6.1} {:>6.1} {:>6.1} {:>6.1} {:>7.1}",
                f.threads, f.seconds, f.mps, t.read_s, t.model_s, t.blend_s, t.write_s, t.handoff_s
            );
            all[i].push(f);
        }
        let mps = |i: usize| all[i][round].mps;
        println!(
            "      round {round}: bf16 / fp32 = {:.2}x (pipeline), {:.2}x (one thread); \
             pipeline / one thread = {:.2}x (fp32), {:.2}x (bf16)",
            mps(1) / mps(0),
            mps(3) / mps(2),
            mps(0) / mps(2),
            mps(1) / mps(3)
        );
    }
    Ok(all)
}

/// Prints each configuration's best round as GFLOP/s (whole job, and the model's seconds alone)
/// and as a share of the GEMM peak (`peak(threads, bf16)`) of the threads the model used.
fn share_of_peak(all: &[Vec<Figures>], gflop: f64, peak: &dyn Fn(usize, bool) -> f64) {
    println!(
        "  {:>9} {:>9} {:>7} {:>12} {:>12} {:>11} {:>13}",
        "precision", "mode", "threads", "GFLOP/s job", "GFLOP/s model", "GEMM peak", "model / peak"
    );
    for (i, (precision, mode)) in CONFIGS.iter().enumerate() {
        let Some(f) = all[i].iter().max_by(|a, b| a.mps.total_cmp(&b.mps)) else {
            continue;
        };
        let work = f.windows * gflop;
        let model = work / f.timings.model_s;
        let peak = peak(f.threads, *precision == "bf16");
        println!(
            "  {precision:>9} {mode:>9} {:>7} {:>12.1} {:>13.1} {:>11.1} {:>12.1} %",
            f.threads,
            work / f.seconds,
            model,
            peak,
            100.0 * model / peak
        );
    }
}

/// GFLOP of one window of the teacher prepared for inference in fp32 (a batch of 8 random
/// windows through libtorch's profiler: convolutions and matrix products, as bench-step counts).
fn window_gflop(ck: &Path) -> Result<f64> {
    let predictor = Predictor::load_in(ck, tch::Device::Cpu, Precision::Fp32)?;
    let cfg = &predictor.info().model;
    let (h, w) = (cfg.crop[0], cfg.crop[1]);
    let inputs: Vec<tch::Tensor> = (cfg.modalities.iter())
        .map(|m| tch::Tensor::randn([8, m.channels, h, w], (tch::Kind::Float, tch::Device::Cpu)))
        .collect();
    let refs: Vec<Option<&tch::Tensor>> = inputs.iter().map(Some).collect();
    let net = predictor.net();
    let (out, ops) = profile(|| tch::no_grad(|| net.forward_route(&Route::Teacher, &refs, false)))?;
    let _probs = out?;
    Ok(matrix_flops(&ops) as f64 / 8.0 / 1e9)
}

/// The GEMM peak (2048², GFLOP/s in fp32 and bf16) for 1 thread and for the threads the
/// pipeline gives the models of [`MODELS`]: `(threads, fp32, bf16)`.
fn peaks() -> Result<Vec<(usize, f64, f64)>> {
    let before = tch::get_num_threads();
    let mut threads: Vec<usize> = vec![1];
    for model in &MODELS {
        let exp = Experiment::load(Path::new(model.config), &[])?;
        let work = InferenceWork::of(&exp.model, PredictOptions::default().batch);
        threads.push(ThreadSplit::choose(cores(), &work).model);
    }
    threads.sort_unstable();
    threads.dedup();
    let peaks = threads
        .into_iter()
        .map(|t| {
            tch::set_num_threads(i32::try_from(t).unwrap_or(1));
            let fp32 = gemm_gflops(tch::Kind::Float, 2048);
            (t, fp32, gemm_gflops(tch::Kind::BFloat16, 2048))
        })
        .collect();
    tch::set_num_threads(before);
    Ok(peaks)
}

/// Part 2: the width-8 model in one thread with the SAR aligned and warped, and the SAR alone
/// read both ways.
fn warping(dir: &Path, size: usize) -> Result<()> {
    let ck = dir.join("model-w8");
    write_checkpoint(&ck, "experiments/synthetic.yaml")?;
    let scene = scene(dir, size)?;
    println!(
        "\nwidth 8, 64 x 64 windows, overlap 16, fp32, {size} x {size} scene: the SAR on the grid \
         (aligned) or 4x coarser (warped); \"read\": the SAR alone, in predict's strips"
    );
    for (mode, sar) in [
        ("single", "aligned"),
        ("single", "cut"),
        ("single", "warped"),
        ("read", "aligned"),
        ("read", "warped"),
    ] {
        let f = run_child(mode, "fp32", sar, &ck, &scene, 16, "classes")?;
        println!(
            "  {mode:>6} {sar:>7} {:>6} {} {:>7.1} s {:>8.3} MP/s",
            f.windows,
            if mode == "read" { "strips " } else { "windows" },
            f.seconds,
            f.mps
        );
    }
    Ok(())
}

/// Part 3: peak memory of the width-8 model with the warped SAR at two scene sizes, one thread,
/// every raster output written plain and as COGs (alternated).
fn memory(dir: &Path, small: usize, large: usize) -> Result<()> {
    let ck = dir.join("model-w8");
    write_checkpoint(&ck, "experiments/synthetic.yaml")?;
    println!(
        "\nwidth 8, 64 x 64 windows, overlap 16, one thread, fp32, SAR warped and cut off over \
         30 % of the scene (a second route); class map, f32 probabilities and route map written \
         plain or as COGs: peak memory, time and bytes written"
    );
    let mut peaks = [Vec::new(), Vec::new()];
    for size in [small, large] {
        let scene = scene(dir, size)?;
        let mut plain: Option<Figures> = None;
        for (i, outputs) in ["all", "cog"].into_iter().enumerate() {
            let f = run_child("single", "fp32", "warped-cut", &ck, &scene, 16, outputs)?;
            let cost = match &plain {
                None => String::new(),
                Some(p) => format!(
                    "   --cog: {:+.1} s ({:+.1} %), bytes x {:.3}",
                    f.seconds - p.seconds,
                    100.0 * (f.seconds / p.seconds - 1.0),
                    f.bytes / p.bytes
                ),
            };
            println!(
                "  {size:>5} x {size:<5} {outputs:>4} {:>6} windows {:>7.1} s {:>7.3} MP/s   peak RSS {:>5.0} MiB   {:>7.1} MiB written{cost}",
                f.windows,
                f.seconds,
                f.mps,
                f.peak_kb / 1024.0,
                f.bytes / (1024.0 * 1024.0)
            );
            peaks[i].push(f.peak_kb);
            plain.get_or_insert(f);
        }
    }
    for (peaks, outputs) in peaks.iter().zip(["plain", "--cog"]) {
        println!(
            "peak RSS {large}x{large} / {small}x{small} with a second route, {outputs} = {:.3} (must be <= 1.3)",
            peaks[1] / peaks[0]
        );
    }
    Ok(())
}

/// Runs one child and reads its `RESULT` line.
fn run_child(
    mode: &str,
    precision: &str,
    sar: &str,
    ck: &Path,
    scene: &Path,
    overlap: usize,
    outputs: &str,
) -> Result<Figures> {
    let out = Command::new(std::env::current_exe()?)
        .args(["--child", mode, precision, sar])
        .arg(ck)
        .arg(scene)
        .arg(overlap.to_string())
        .arg(outputs)
        .output()
        .context("cannot start the child process")?;
    if !out.status.success() {
        bail!(
            "child {mode} {precision} {sar} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .context("the child printed no RESULT line")?;
    let f: Vec<f64> = line
        .split_whitespace()
        .map(|v| v.parse::<f64>())
        .collect::<Result<_, _>>()?;
    let [windows, seconds, mps, peak_kb, bytes, read_s, model_s, blend_s, write_s, handoff_s, threads] =
        f[..]
    else {
        bail!("bad RESULT line {line:?}");
    };
    Ok(Figures {
        windows,
        seconds,
        mps,
        peak_kb,
        bytes,
        threads: threads as usize,
        timings: Timings {
            read_s,
            model_s,
            blend_s,
            write_s,
            handoff_s,
        },
    })
}

/// A freshly initialised model of the experiment `config`.
fn write_checkpoint(path: &Path, config: &str) -> Result<()> {
    let exp = Experiment::load(Path::new(config), &[])?;
    tch::manual_seed(1);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    Dis2Net::new(&vs.root(), &exp.model)?;
    let info = CheckpointInfo::new(&exp.model)?.with_data(&exp.data);
    checkpoint::save(path, &vs, &info)
}

/// The folder of a `size` x `size` scene (optical.tif, dsm.tif, sar.tif, sar_coarse.tif and
/// their copies cut off over the right 30 %), written when absent.
fn scene(dir: &Path, size: usize) -> Result<PathBuf> {
    let out = dir.join(format!("scene{size}"));
    if !out.join("sar_coarse.tif").is_file() {
        write_scene(&out, size)?;
    }
    if !out.join("sar_coarse_cut.tif").is_file() {
        cut_off(&out.join("sar.tif"), &out.join("sar_cut.tif"))?;
        cut_off(&out.join("sar_coarse.tif"), &out.join("sar_coarse_cut.tif"))?;
    }
    Ok(out)
}

/// A copy of the one-band SAR `src` with nodata over its right 30 % (a swath edge).
fn cut_off(src: &Path, dst: &Path) -> Result<()> {
    let info = RasterInfo::read(src)?;
    let (w, h) = (info.width, info.height);
    let mut px = dis2::data::raster::read_window_at(src, Window::new(0, 0, w, h))?;
    let edge = w - w * 3 / 10;
    for row in px.data.chunks_mut(w) {
        row[edge..].fill(synth::SAR_NODATA);
    }
    let raster = RasterData {
        width: w,
        height: h,
        bands: 1,
        data: &px.data,
    };
    let opts = WriteOptions {
        nodata: Some(f64::from(synth::SAR_NODATA)),
        ..Default::default()
    };
    let georef = GeoRef::of(&info).context("the SAR has no georeferencing")?;
    write_geotiff(dst, &raster, &georef, &opts)
}

/// Writes the scene of [`scene`] into `out`.
fn write_scene(out: &Path, size: usize) -> Result<()> {
    let t = Instant::now();
    let tile = synth::generate_scene(42, 0, TILE);
    let georef = GeoRef::north_up(500_000.0, 5_000_000.0, synth::PIXEL_SIZE, synth::EPSG);
    let mirror = |plane: &[f32]| -> Vec<f32> {
        let mut v = Vec::with_capacity(size * size);
        for y in 0..size {
            let ty = reflect_index(y as isize, TILE);
            for x in 0..size {
                v.push(plane[ty * TILE + reflect_index(x as isize, TILE)]);
            }
        }
        v
    };
    let mut optical: Vec<u8> = Vec::with_capacity(4 * size * size);
    for b in 0..4 {
        let plane: Vec<f32> = tile.optical[b * TILE * TILE..(b + 1) * TILE * TILE]
            .iter()
            .map(|&v| f32::from(v))
            .collect();
        optical.extend(mirror(&plane).into_iter().map(|v| v as u8));
    }
    let write = |name: &str, bands: usize, data: &[f32], nodata: Option<f64>| {
        let raster = RasterData {
            width: size,
            height: size,
            bands,
            data,
        };
        let opts = WriteOptions {
            nodata,
            ..Default::default()
        };
        write_geotiff(&out.join(name), &raster, &georef, &opts)
    };
    let raster = RasterData {
        width: size,
        height: size,
        bands: 4,
        data: &optical,
    };
    write_geotiff(
        &out.join("optical.tif"),
        &raster,
        &georef,
        &WriteOptions::default(),
    )?;
    drop(optical);
    write("dsm.tif", 1, &mirror(&tile.dsm), None)?;
    let sar = mirror(&tile.sar);
    write("sar.tif", 1, &sar, Some(f64::from(synth::SAR_NODATA)))?;
    let coarse = average_4x4(&sar, size);
    let georef4 = GeoRef::north_up(500_000.0, 5_000_000.0, 4.0 * synth::PIXEL_SIZE, synth::EPSG);
    let raster = RasterData {
        width: size / 4,
        height: size / 4,
        bands: 1,
        data: &coarse,
    };
    let opts = WriteOptions {
        nodata: Some(f64::from(synth::SAR_NODATA)),
        ..Default::default()
    };
    write_geotiff(&out.join("sar_coarse.tif"), &raster, &georef4, &opts)?;
    println!(
        "wrote the {size}x{size} scene to {} in {:.1} s",
        out.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The mean of the valid values of each 4 x 4 block of a `size` x `size` plane (SAR nodata
/// where none is valid).
fn average_4x4(plane: &[f32], size: usize) -> Vec<f32> {
    let n = size / 4;
    let mut out = Vec::with_capacity(n * n);
    for by in 0..n {
        for bx in 0..n {
            let (mut sum, mut count) = (0.0f64, 0u32);
            for y in 4 * by..4 * by + 4 {
                for x in 4 * bx..4 * bx + 4 {
                    let v = plane[y * size + x];
                    if v != synth::SAR_NODATA {
                        sum += f64::from(v);
                        count += 1;
                    }
                }
            }
            out.push(match count {
                0 => synth::SAR_NODATA,
                _ => (sum / f64::from(count)) as f32,
            });
        }
    }
    out
}

/// `--child read PRECISION aligned|warped CHECKPOINT SCENE_DIR OVERLAP`: reads the SAR input alone
/// on the optical grid, in full-width strips of 64 rows as predict does, and prints `RESULT
/// strips seconds megapixels_per_s peak_rss_kb` and seven zeros (no bytes written, model,
/// blending, writing or libtorch threads).
fn read_child(sar: &str, scene: &Path) -> Result<()> {
    let header = |name: &str| RasterInfo::read(&scene.join(name));
    let files = [
        GridFile {
            role: "optical".into(),
            key: "optical".into(),
            header: header("optical.tif")?,
            categorical: false,
        },
        GridFile {
            role: "sar".into(),
            key: "sar".into(),
            header: header(sar_file(sar)?)?,
            categorical: false,
        },
    ];
    let plan = grid::plan(&files, 0, &GridConfig::default(), &GridKeys::PREDICT)?;
    let (w, h) = (plan.grid.info.width, plan.grid.info.height);
    let t = Instant::now();
    let open = plan.sources[1].open()?;
    let mut strips = 0;
    for y in (0..h).step_by(64) {
        let px = open.read(Window::new(0, y as i64, w, 64.min(h - y)))?;
        std::hint::black_box(&px);
        strips += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "RESULT {strips} {secs:.3} {:.4} {} 0 0 0 0 0 0 0",
        (w * h) as f64 / 1e6 / secs,
        peak_rss_kb()?
    );
    Ok(())
}

fn sar_file(sar: &str) -> Result<&'static str> {
    match sar {
        "aligned" => Ok("sar.tif"),
        "warped" => Ok("sar_coarse.tif"),
        "cut" => Ok("sar_cut.tif"),
        "warped-cut" => Ok("sar_coarse_cut.tif"),
        other => bail!("unknown SAR input {other:?} (aligned, warped, cut or warped-cut)"),
    }
}

/// Sets rayon's global pool of `mode`; returns the batches read ahead (0: none) and the
/// libtorch threads `mode` asks for (`None`: those of `dis2 predict`'s `InferenceSettings`,
/// which decide from rayon's pool: 1 for `single`).
fn threads_for(mode: &str) -> Result<(usize, Option<i32>)> {
    let pool = |n: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
    };
    match mode {
        "single" => {
            pool(1)?;
            Ok((0, None))
        }
        "pipeline" | "read" => Ok((2, None)),
        custom => {
            let parts: Vec<usize> = custom
                .strip_prefix("threads:")
                .map(|p| p.split(':').filter_map(|v| v.parse().ok()).collect())
                .unwrap_or_default();
            let [torch, rayon, prefetch] = parts[..] else {
                bail!("unknown mode {custom:?}: pipeline, single or threads:T:R:P");
            };
            pool(rayon)?;
            Ok((prefetch, Some(i32::try_from(torch)?)))
        }
    }
}

/// `--child MODE PRECISION SAR CHECKPOINT SCENE_DIR OVERLAP OUTPUTS`: predicts the scene (with
/// the SAR on its grid, or 4x coarser) into the OUTPUTS and prints `RESULT windows seconds
/// megapixels_per_s peak_rss_kb bytes_written read model blend write handoff threads`
/// (`threads`: libtorch's, the model's).
fn child(args: &[String]) -> Result<()> {
    let [mode, precision, sar, ck, scene, overlap, outputs] = args else {
        bail!("usage: --child MODE PRECISION SAR CHECKPOINT SCENE_DIR OVERLAP OUTPUTS");
    };
    let (prefetch, torch) = threads_for(mode)?;
    let precision: PrecisionChoice = precision.parse().map_err(anyhow::Error::msg)?;
    let device = tch::Device::Cpu;
    let predictor = Predictor::load_in(Path::new(ck), device, precision.resolve(device)?)?;
    // `dis2 predict`'s inference settings (GDAL's cache, the threads); `threads:T:R:P` then
    // sets libtorch's own.
    let work = InferenceWork::of(&predictor.info().model, PredictOptions::default().batch);
    let _settings = dis2::predict::InferenceSettings::enter(device, &work);
    if let Some(torch) = torch {
        tch::set_num_threads(torch);
    }
    if mode == "read" {
        return read_child(sar, Path::new(scene));
    }
    let scene = PathBuf::from(scene);
    let name = |what: &str| scene.join(format!("{what}-{mode}-{precision}-{sar}-{outputs}.tif"));
    let (all, cog) = match outputs.as_str() {
        "classes" => (false, false),
        "all" => (true, false),
        "cog" => (true, true),
        other => bail!("unknown OUTPUTS {other:?} (classes, all or cog)"),
    };
    let job = SceneJob {
        inputs: vec![
            ("optical".to_string(), scene.join("optical.tif")),
            ("dsm".to_string(), scene.join("dsm.tif")),
            ("sar".to_string(), scene.join(sar_file(sar)?)),
        ],
        out: name("classes"),
        probs: all.then(|| name("probs")),
        routes: all.then(|| name("routes")),
        ..Default::default()
    };
    let options = PredictOptions {
        quiet: true,
        prefetch,
        overlap: Some(overlap.parse()?),
        cog,
        ..Default::default()
    };
    let summary = dis2::predict::predict_scene(&predictor, &job, &options)?;
    let t = summary.timings;
    let written = [Some(&job.out), job.probs.as_ref(), job.routes.as_ref()];
    let bytes: u64 = (written.into_iter().flatten())
        .flat_map(|p| [p.clone(), PathBuf::from(format!("{}.aux.xml", p.display()))])
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "RESULT {} {:.3} {:.4} {} {bytes} {:.3} {:.3} {:.3} {:.3} {:.3} {}",
        summary.windows,
        summary.seconds,
        summary.megapixels_per_s(),
        peak_rss_kb()?,
        t.read_s,
        t.model_s,
        t.blend_s,
        t.write_s,
        t.handoff_s,
        tch::get_num_threads()
    );
    Ok(())
}

/// VmHWM of this process in kB.
fn peak_rss_kb() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status")
}
