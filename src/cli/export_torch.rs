//! `dis2 export-torch`.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// `dis2 export-torch`.
#[derive(Debug, Args)]
pub struct ExportTorchArgs {
    /// The checkpoint: a checkpoint directory (a run's `checkpoints/best`), a checkpoint name
    /// (NAME.safetensors + NAME.yaml), or a run directory (its `checkpoints/best` is used).
    #[arg(long, value_name = "CHECKPOINT")]
    pub checkpoint: PathBuf,
    /// The state_dict to write, in the names of the authors' `DLKD_ver4` (float32 safetensors).
    #[arg(long, value_name = "FILE.safetensors")]
    pub out: PathBuf,
}

pub(crate) fn run(args: &ExportTorchArgs) -> Result<()> {
    let done = crate::export_torch::export_torch(&args.checkpoint, &args.out)?;
    println!(
        "wrote {} ({} tensors) from {}; in PyTorch, with the authors' repository on the path:\n\
         import safetensors.torch\n{}\n\
         model.load_state_dict(safetensors.torch.load_file({:?}), strict=True)",
        done.out.display(),
        done.tensors,
        done.checkpoint.display(),
        done.constructor,
        done.out.display().to_string()
    );
    Ok(())
}
