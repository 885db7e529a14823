//! Helpers shared by the integration tests: running the built binary and reading what it wrote,
//! the shared fixtures (reference files, the real Sentinel-1 scene), the synthetic benchmark and
//! its checkpoints, and small seeded models.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use dis2::config::Experiment;
use dis2::data::raster::{read_window_at, Pixels, RasterInfo, Window};
use dis2::model::config::{ModalitySpec, ModelConfig};
use dis2::model::Dis2Net;
use tch::{nn, Device, Kind, Tensor};

/// The `dis2` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_dis2");

/// Runs the binary with `args` and returns its output, whatever its exit status. The command
/// line goes to the test's captured stderr, shown when the test fails.
pub fn dis2<S: AsRef<OsStr>>(args: &[S]) -> Output {
    let line: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    eprintln!("$ dis2 {}", line.join(" "));
    Command::new(BIN)
        .args(args)
        .output()
        .expect("the dis2 binary starts")
}

/// `dis2 predict ARGS --device cpu`.
pub fn predict(args: &[&str]) -> Output {
    let mut all = vec!["predict"];
    all.extend_from_slice(args);
    all.extend(["--device", "cpu"]);
    dis2(&all)
}

/// The stdout and stderr of a run that must have succeeded; a failure panics with its exit
/// status, stdout and stderr.
pub fn ok_with_stderr(out: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "dis2 failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// The stdout of a run that must have succeeded (see [`ok_with_stderr`]).
pub fn ok(out: &Output) -> String {
    ok_with_stderr(out).0
}

/// The stderr followed by the stdout of a run that must have succeeded (see
/// [`ok_with_stderr`]): for checks of a log line on either stream.
pub fn ok_all(out: &Output) -> String {
    let (stdout, stderr) = ok_with_stderr(out);
    stderr + &stdout
}

/// The stderr of a run that must have failed; a success panics with its stdout and stderr.
pub fn failed(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "dis2 should have failed but succeeded:\n--- stdout\n{}\n--- stderr\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// A path as a command-line argument (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every pixel of a raster (all bands) with its validity.
pub fn read_all(path: &Path) -> Pixels {
    let info = RasterInfo::read(path).unwrap();
    read_window_at(path, Window::new(0, 0, info.width, info.height)).unwrap()
}

/// GDAL's category names of a band (the gdal crate does not bind them).
pub fn category_names(band: &gdal::raster::RasterBand) -> Vec<String> {
    let mut names = Vec::new();
    // SAFETY: the band is open; GDAL returns a null-terminated list it owns.
    unsafe {
        let list = gdal_sys::GDALGetRasterCategoryNames(band.c_rasterband());
        if list.is_null() {
            return names;
        }
        let mut i = 0;
        while !(*list.add(i)).is_null() {
            let name = std::ffi::CStr::from_ptr(*list.add(i));
            names.push(name.to_string_lossy().into_owned());
            i += 1;
        }
    }
    names
}

/// A JSON file (metrics.json, results.json, done.json, ...) as a value; panics naming the file
/// when it cannot be read or parsed.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A run directory's `metrics.jsonl` (one line per optimiser step) as written.
pub fn metrics_text(run: &Path) -> String {
    std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics.jsonl")
}

/// A run directory's `metrics.jsonl`, one JSON value per optimiser step.
pub fn metrics_records(run: &Path) -> Vec<serde_json::Value> {
    metrics_text(run)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// The tests of one test binary that take it, one at a time (a test that panicked while holding
/// it does not stop the others). Each file says why its tests take turns.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The real Sentinel-1 scene of `../shared/fixtures/real` (20 m, EPSG:32631), or `None` with a
/// note when absent.
pub fn real_sar() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/real/S1A__IW___D_20170309T054356_VV_grd_mli_geo_norm_db.tif");
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "skipped: real Sentinel-1 fixture not found at {}",
            path.display()
        );
        None
    }
}

/// `../shared/reference` next to the crate (CI's layout), or `None` with a note when absent.
pub fn reference_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference");
    if dir.join("small.weights.safetensors").is_file() {
        Some(dir)
    } else {
        eprintln!("skipped: reference files not found in {}", dir.display());
        None
    }
}

/// The header metadata of a safetensors file.
pub fn metadata(path: &std::path::Path) -> HashMap<String, String> {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    meta.metadata().clone().unwrap_or_default()
}

/// The model configuration a reference file was made with.
pub fn reference_config(path: &std::path::Path) -> ModelConfig {
    let m = metadata(path);
    let get = |k: &str| -> i64 {
        m.get(k)
            .unwrap_or_else(|| panic!("metadata {k}"))
            .parse()
            .unwrap()
    };
    ModelConfig {
        base_width: get("base_width"),
        num_classes: get("num_classes"),
        crop: [get("height"), get("width")],
        heads: get("heads"),
        ffn_dim: get("ffn_dim"),
        depth: get("depth"),
        modalities: vec![
            ModalitySpec {
                name: "rgb".into(),
                channels: get("rgb_channels"),
            },
            ModalitySpec {
                name: "ndsm".into(),
                channels: get("ndsm_channels"),
            },
        ],
        scenarios: None,
        decoder: Default::default(),
        fusion: Default::default(),
    }
}

/// All tensors of a safetensors file by name.
pub fn read_tensors(path: &std::path::Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a - b).abs().max().double_value(&[])
}

pub fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let (x, y) = (a.double_value(&[]), b.reshape([-1]).double_value(&[0]));
    (x - y).abs() / y.abs().max(1e-12)
}

/// A small configuration: base width 8, 64x64, the given modality channel counts.
pub fn small_config(channels: &[i64], classes: i64) -> ModelConfig {
    let names = ["rgb", "ndsm", "sar", "hs"];
    ModelConfig {
        base_width: 8,
        num_classes: classes,
        crop: [64, 64],
        heads: 8,
        ffn_dim: 32,
        depth: 1,
        modalities: channels
            .iter()
            .zip(names)
            .map(|(&c, n)| ModalitySpec {
                name: n.into(),
                channels: c,
            })
            .collect(),
        scenarios: None,
        decoder: Default::default(),
        fusion: Default::default(),
    }
}

/// The tiny synthetic benchmark (6 scenes of 96 x 96 px) written into `dir/synthetic`, and its
/// experiment file.
pub fn tiny_benchmark(dir: &Path, seed: u64) -> PathBuf {
    let options = dis2::data::synth::SynthOptions {
        out: dir.join("synthetic"),
        scenes: 6,
        size: 96,
        seed,
        gaps: false,
    };
    dis2::data::synth::generate(&options).expect("synth");
    dis2::prepare::write_synthetic_experiment(&options).expect("experiment")
}

/// An untrained model of `cfg` (libtorch seeded with `seed`) saved in `dir/name` with the class
/// table and normalisation of `data`: a checkpoint for tests of reading, routing and writing.
pub fn untrained_checkpoint(
    dir: &Path,
    name: &str,
    cfg: &ModelConfig,
    data: &dis2::data::config::DataConfig,
    seed: i64,
) -> PathBuf {
    tch::manual_seed(seed);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    dis2::model::Dis2Net::new(&vs.root(), cfg).unwrap();
    let path = dir.join(name);
    let info = dis2::checkpoint::CheckpointInfo::new(cfg)
        .unwrap()
        .with_data(data);
    dis2::checkpoint::save(&path, &vs, &info).unwrap();
    path
}

/// A synthetic scene of `size` x `size` pixels in `dir`: [optical, dsm, sar, label].
pub fn synthetic_scene(dir: &Path, size: usize) -> Vec<PathBuf> {
    let scene = dis2::data::synth::generate_scene(5, 0, size);
    dis2::data::synth::write_scene(dir, "scene", &scene).unwrap()
}

/// experiments/synthetic.yaml: a width-8 model of optical (4 bands), dsm (1) and sar (1) on
/// 64 x 64 crops, six classes.
pub fn synthetic_experiment() -> Experiment {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/synthetic.yaml");
    Experiment::load(&path, &[]).unwrap()
}

/// An untrained, seeded (11) model of experiments/synthetic.yaml saved as `dir/model` with the
/// experiment's class table and normalisation.
pub fn synthetic_checkpoint(dir: &Path) -> PathBuf {
    synthetic_checkpoint_with(dir, "model", |_| {})
}

/// [`synthetic_checkpoint`] saved as `dir/name`, of the experiment as `edit` changes it (its
/// scenarios, classes or bands, and the normalisation to match).
pub fn synthetic_checkpoint_with(
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut Experiment),
) -> PathBuf {
    let mut exp = synthetic_experiment();
    edit(&mut exp);
    untrained_checkpoint(dir, name, &exp.model, &exp.data, 11)
}

/// A model of `cfg` on the CPU, initialised with libtorch seeded with 0.
pub fn build(cfg: &ModelConfig) -> (nn::VarStore, Dis2Net) {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Dis2Net::new(&vs.root(), cfg).unwrap();
    (vs, net)
}

/// Standard-normal inputs `[batch, c, size, size]`, one per modality of `channels` bands.
pub fn random_inputs(channels: &[i64], batch: i64, size: i64) -> Vec<Tensor> {
    channels
        .iter()
        .map(|&c| Tensor::randn([batch, c, size, size], (Kind::Float, Device::Cpu)))
        .collect()
}

/// Names of the trainable variables that backward reached, and of those it did not (sorted).
pub fn reached(vs: &nn::VarStore) -> (Vec<String>, Vec<String>) {
    let (mut yes, mut no) = (Vec::new(), Vec::new());
    for (name, t) in vs.variables() {
        if t.requires_grad() {
            if t.grad().defined() {
                yes.push(name)
            } else {
                no.push(name)
            }
        }
    }
    yes.sort();
    no.sort();
    (yes, no)
}
