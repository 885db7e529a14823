//! `dis2 import-torch`.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// `dis2 import-torch`.
#[derive(Debug, Args)]
pub struct ImportTorchArgs {
    /// The reference model's state_dict saved as safetensors (names as in `DLKD_ver4`).
    #[arg(long, value_name = "FILE.safetensors")]
    pub weights: PathBuf,
    /// YAML with the model configuration: a model-only file, or a file whose `model:` key is read.
    #[arg(long, value_name = "CONFIG.yaml")]
    pub config: PathBuf,
    /// Checkpoint to write: CHECKPOINT.safetensors and CHECKPOINT.yaml.
    #[arg(long, value_name = "CHECKPOINT")]
    pub out: PathBuf,
}

pub(crate) fn run(args: &ImportTorchArgs) -> Result<()> {
    crate::import_torch::import_torch(&args.weights, &args.config, &args.out)
}
