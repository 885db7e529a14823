//! `dis2 export-torch`: a dis2 checkpoint as a state_dict of the authors' PyTorch model
//! (`DLKD_ver4`, GitHub nhikieu/DIS2 `models_bank/DLKD_ver4.py`), saved as safetensors: the way
//! back from `dis2 import-torch`.
//!
//! The names come from the one table of `model::import`; what the reference cannot hold (not two
//! modalities, an ablation, a missing student) is refused by name, with nothing written. The file
//! is written through a temporary file and a rename. Its header metadata repeats the settings the
//! reference model must be built with (the keys of `../shared/reference`'s files: `base_width`,
//! `num_classes`, `height`, `width`, `rgb_channels`, `ndsm_channels`, `heads`, `ffn_dim`,
//! `depth`), the dis2 modality names behind "rgb" and "ndsm", and `format: pt`.

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, checkpoint_files};
use crate::fsutil::write_atomic_with;
use crate::model::config::ModelConfig;
use crate::model::import::{reference_cannot_hold, reference_state_dict};
use crate::train::run::RunDir;

/// What [`export_torch`] wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The checkpoint read (a run directory's `checkpoints/best` when a run was named).
    pub checkpoint: PathBuf,
    /// The safetensors file written.
    pub out: PathBuf,
    /// Number of tensors in it (the reference's `state_dict`, buffers included).
    pub tensors: usize,
    /// The Python that builds the reference model this file loads into.
    pub constructor: String,
}

/// Writes the checkpoint `checkpoint` (a checkpoint directory or name, or a run directory, whose
/// `checkpoints/best` is used) as the reference `state_dict` to `out`: every variable as float32
/// under its `DLKD_ver4` name, BatchNorm running statistics included, and the tensors the
/// reference holds but never reads (see `model::import::reference_state_dict`).
///
/// # Errors
/// A checkpoint that is not there or does not load, naming `--checkpoint`; a model the reference
/// cannot hold, every reason listed by key; `out` being the checkpoint's own weights or sidecar;
/// a failed write (nothing is left at `out` then, or what was there before).
pub fn export_torch(checkpoint: &Path, out: &Path) -> Result<Exported> {
    let flag = || format!("--checkpoint {}", checkpoint.display());
    let (path, _) = RunDir::locate_checkpoint(checkpoint);
    let info = checkpoint::read_info(&path).with_context(flag)?;
    let (weights, sidecar) = checkpoint_files(&path);
    let cannot = reference_cannot_hold(&info.model);
    if !cannot.is_empty() {
        bail!(
            "{}: the authors' model (DLKD_ver4) cannot hold this checkpoint ({}):\n  {}",
            flag(),
            sidecar.display(),
            cannot.join("\n  ")
        );
    }
    for own in [&weights, &sidecar] {
        if same_file(out, own) {
            bail!(
                "--out {}: that is the checkpoint's own {}; choose another file",
                out.display(),
                own.display()
            );
        }
    }
    let loaded = checkpoint::load(&path, Device::Cpu).with_context(flag)?;
    let state = reference_state_dict(&loaded.vs, &info.model).with_context(flag)?;
    let metadata = reference_metadata(&info.model);
    write_atomic_with(out, |tmp| write_state_dict(&state, &metadata, tmp))?;
    Ok(Exported {
        checkpoint: path,
        out: out.to_path_buf(),
        tensors: state.len(),
        constructor: reference_constructor(&info.model),
    })
}

/// Whether `a` and `b` name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The header metadata: the reference model's settings under the keys of the reference files.
fn reference_metadata(cfg: &ModelConfig) -> HashMap<String, String> {
    let [rgb, ndsm] = [&cfg.modalities[0], &cfg.modalities[1]];
    [
        ("format", "pt".to_string()),
        ("base_width", cfg.base_width.to_string()),
        ("num_classes", cfg.num_classes.to_string()),
        ("height", cfg.crop[0].to_string()),
        ("width", cfg.crop[1].to_string()),
        ("rgb_channels", rgb.channels.to_string()),
        ("ndsm_channels", ndsm.channels.to_string()),
        ("rgb_modality", rgb.name.clone()),
        ("ndsm_modality", ndsm.name.clone()),
        ("heads", cfg.heads.to_string()),
        ("ffn_dim", cfg.ffn_dim.to_string()),
        ("depth", cfg.depth.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The Python that builds the reference model of `cfg`: the module constants the authors read at
/// construction (`gf_dim`, `MLP_DIM`, `NUM_HEADS`, `DEPTH`), then the constructor.
fn reference_constructor(cfg: &ModelConfig) -> String {
    format!(
        "import models_bank.DLKD_ver4 as dlkd\n\
         dlkd.gf_dim, dlkd.MLP_DIM, dlkd.NUM_HEADS, dlkd.DEPTH = {}, {}, {}, {}\n\
         model = dlkd.DLKD_ver4(num_classes={}, image_size=({}, {}), \
         rgb_encoder_channels={}, ndsm_encoder_channels={})",
        cfg.base_width,
        cfg.ffn_dim,
        cfg.heads,
        cfg.depth,
        cfg.num_classes,
        cfg.crop[0],
        cfg.crop[1],
        cfg.modalities[0].channels,
        cfg.modalities[1].channels
    )
}

/// Writes float32 and int64 tensors, with `metadata`, as safetensors at `path`.
fn write_state_dict(
    state: &[(String, Tensor)],
    metadata: &HashMap<String, String>,
    path: &Path,
) -> Result<()> {
    let mut data: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(state.len());
    for (name, t) in state {
        let shape = t.size().iter().map(|&d| d as usize).collect();
        let flat = t.reshape([-1]);
        let (dtype, bytes) = match t.kind() {
            Kind::Float => (
                Dtype::F32,
                le_bytes(Vec::<f32>::try_from(&flat)?, f32::to_le_bytes),
            ),
            Kind::Int64 => (
                Dtype::I64,
                le_bytes(Vec::<i64>::try_from(&flat)?, i64::to_le_bytes),
            ),
            other => bail!("{name}: cannot export a tensor of {other:?}"),
        };
        data.push((name, dtype, shape, bytes));
    }
    let views = data
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes).map(|v| (*name, v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{}: {e:?}", path.display()))?;
    safetensors::serialize_to_file(views, &Some(metadata.clone()), path)
        .map_err(|e| anyhow!("cannot write {}: {e:?}", path.display()))
}

fn le_bytes<T: Copy, const N: usize>(values: Vec<T>, to: fn(T) -> [u8; N]) -> Vec<u8> {
    values.into_iter().flat_map(to).collect()
}
