//! `make bench-predict`: throughput of `dis2 predict` (megapixels per second) on a synthetic
//! 4096 x 4096 scene with the parallel pipeline and with everything in one thread, with the SAR
//! input on the scene's grid (aligned) and at 4x coarser resolution (warped onto the optical grid
//! window by window); the cost of that warping alone (the SAR read in predict's strips, aligned
//! against warped); and peak resident memory (VmHWM) for 2048 x 2048 and 8192 x 8192 scenes with
//! the warped SAR, each measured in a fresh child process. The model is the width-8 model of
//! experiments/synthetic.yaml (64 x 64 crops, freshly initialised: speed does not depend on the
//! weights), the teacher with all three inputs. Peak memory is measured in the one-thread mode.
//!
//! Usage: `bench_predict [DIR [THROUGHPUT_SIZE SMALL_SIZE LARGE_SIZE]]` (defaults:
//! target/bench-predict, 4096, 2048, 8192; scenes are written once and kept). Each scene mirrors
//! one generated 1024 x 1024 synthetic scene, so it is seamless; its `sar_coarse.tif` is the SAR
//! averaged over 4 x 4 pixels. "one thread" runs with a rayon pool of 1, one libtorch thread and
//! no background reader (each batch is read, then run).

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
use dis2::model::Dis2Net;
use dis2::predict::{PredictOptions, Predictor, SceneJob};
use dis2::tiling::reflect_index;

const TILE: usize = 1024;

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
    let sizes: Vec<usize> = args
        .iter()
        .skip(1)
        .map(|a| {
            a.parse()
                .with_context(|| format!("expected a scene size, got {a:?}"))
        })
        .collect::<Result<_>>()?;
    let [big, small, large] = match sizes[..] {
        [] => [4096, 2048, 8192],
        [a, b, c] if a > 0 && b > 0 && c > 0 => [a, b, c],
        _ => bail!("usage: bench_predict [DIR [THROUGHPUT_SIZE SMALL_SIZE LARGE_SIZE]]"),
    };
    std::fs::create_dir_all(&dir)?;
    let ck = dir.join("model");
    write_checkpoint(&ck)?;
    // (size, mode, SAR input, is a memory run). Memory runs use the one-thread mode: on a shared
    // machine it is the fastest (see docs/predict.md), and the pipeline's buffers are the same.
    let runs: [(usize, &str, &str, bool); 7] = [
        (big, "parallel", "aligned", false),
        (big, "single", "aligned", false),
        (big, "single", "warped", false),
        (big, "read", "aligned", false),
        (big, "read", "warped", false),
        (small, "single", "warped", true),
        (large, "single", "warped", true),
    ];
    println!(
        "rayon threads (parallel runs): {}; \"read\": the SAR alone, read in predict's strips",
        rayon::current_num_threads()
    );
    println!(
        "{:>11} {:>9} {:>8} {:>8} {:>8} {:>8} {:>11}",
        "scene", "threads", "sar", "windows", "seconds", "MP/s", "peak RSS"
    );
    let mut peaks = Vec::new();
    for (size, mode, sar, memory) in runs {
        let scene = scene(&dir, size)?;
        let [windows, secs, mps, peak_kb] = run_child(mode, sar, &ck, &scene)?;
        println!(
            "{:>11} {:>9} {:>8} {:>8} {:>8.1} {:>8.3} {:>8.0} MiB",
            format!("{size}x{size}"),
            mode,
            sar,
            windows,
            secs,
            mps,
            peak_kb / 1024.0
        );
        if memory {
            peaks.push((size, peak_kb));
        }
    }
    if let [(small, a), (large, b)] = peaks[..] {
        println!(
            "peak RSS {large}x{large} / {small}x{small} with the SAR warped = {:.3} (must be <= 1.3)",
            b / a
        );
    }
    Ok(())
}

/// Runs `--child MODE SAR CHECKPOINT SCENE` and returns its RESULT figures.
fn run_child(mode: &str, sar: &str, ck: &Path, scene: &Path) -> Result<[f64; 4]> {
    let out = Command::new(std::env::current_exe()?)
        .args(["--child", mode, sar])
        .arg(ck)
        .arg(scene)
        .output()
        .context("cannot start the child process")?;
    if !out.status.success() {
        bail!(
            "child {} {mode} {sar} failed:\n{}",
            scene.display(),
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
    match f[..] {
        [a, b, c, d] => Ok([a, b, c, d]),
        _ => bail!("bad RESULT line {line:?}"),
    }
}

/// A freshly initialised width-8 model of experiments/synthetic.yaml.
fn write_checkpoint(path: &Path) -> Result<()> {
    let exp = Experiment::load(Path::new("experiments/synthetic.yaml"), &[])?;
    tch::manual_seed(1);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    Dis2Net::new(&vs.root(), &exp.model)?;
    let info = CheckpointInfo::new(&exp.model)?.with_data(&exp.data);
    checkpoint::save(path, &vs, &info)
}

/// The folder of a `size` x `size` scene (optical.tif, dsm.tif, sar.tif), written when absent.
fn scene(dir: &Path, size: usize) -> Result<PathBuf> {
    let out = dir.join(format!("scene{size}"));
    if out.join("sar_coarse.tif").is_file() {
        return Ok(out);
    }
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
    Ok(out)
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

/// `--child read aligned|warped CHECKPOINT SCENE_DIR`: reads the SAR input alone on the optical
/// grid, in full-width strips of 64 rows as predict does, and prints
/// `RESULT strips seconds megapixels_per_s peak_rss_kb`.
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
        "RESULT {strips} {secs:.3} {:.4} {}",
        (w * h) as f64 / 1e6 / secs,
        peak_rss_kb()?
    );
    Ok(())
}

fn sar_file(sar: &str) -> Result<&'static str> {
    match sar {
        "aligned" => Ok("sar.tif"),
        "warped" => Ok("sar_coarse.tif"),
        other => bail!("unknown SAR input {other:?} (aligned or warped)"),
    }
}

/// `--child parallel|single|read aligned|warped CHECKPOINT SCENE_DIR`: predicts the scene (with
/// the SAR on its grid, or 4x coarser) and prints
/// `RESULT windows seconds megapixels_per_s peak_rss_kb`.
fn child(args: &[String]) -> Result<()> {
    let [mode, sar, ck, scene] = args else {
        bail!("usage: --child parallel|single|read aligned|warped CHECKPOINT SCENE_DIR");
    };
    if std::env::var_os("GDAL_CACHEMAX").is_none() {
        gdal::config::set_config_option("GDAL_CACHEMAX", "64")?;
    }
    if mode == "read" {
        return read_child(sar, Path::new(scene));
    }
    let prefetch = match mode.as_str() {
        "single" => {
            tch::set_num_threads(1);
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build_global()?;
            0
        }
        "parallel" => {
            dis2::predict::share_cpu_threads(tch::Device::Cpu);
            2
        }
        other => bail!("unknown mode {other:?}"),
    };
    let scene = PathBuf::from(scene);
    let predictor = Predictor::load(Path::new(ck), tch::Device::Cpu)?;
    let job = SceneJob {
        inputs: vec![
            ("optical".to_string(), scene.join("optical.tif")),
            ("dsm".to_string(), scene.join("dsm.tif")),
            ("sar".to_string(), scene.join(sar_file(sar)?)),
        ],
        out: scene.join(format!("classes-{mode}-{sar}.tif")),
        probs: None,
        preview: None,
    };
    let options = PredictOptions {
        quiet: true,
        prefetch,
        ..Default::default()
    };
    let summary = dis2::predict::predict_scene(&predictor, &job, &options)?;
    println!(
        "RESULT {} {:.3} {:.4} {}",
        summary.windows,
        summary.seconds,
        summary.megapixels_per_s(),
        peak_rss_kb()?
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
