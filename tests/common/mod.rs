//! Helpers shared by the integration tests: the reference files and small models.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dis2::model::config::{ModalitySpec, ModelConfig};
use tch::Tensor;

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
    };
    dis2::data::synth::generate(&options).expect("synth");
    dis2::prepare::write_synthetic_experiment(&options).expect("experiment")
}

/// An untrained model of `cfg` (seed 11) saved in `dir/name` with the class table and
/// normalisation of `data`: a checkpoint for tests of reading, routing and writing.
pub fn untrained_checkpoint(
    dir: &Path,
    name: &str,
    cfg: &ModelConfig,
    data: &dis2::data::config::DataConfig,
) -> PathBuf {
    tch::manual_seed(11);
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
