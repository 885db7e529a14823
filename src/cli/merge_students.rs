//! `dis2 merge-students`.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

use crate::checkpoint;
use crate::merge_students::merge_students;
use crate::model::Route;
use crate::train::run::RunDir;

/// `dis2 merge-students`.
#[derive(Debug, Args)]
pub struct MergeStudentsArgs {
    /// Checkpoint to write: CHECKPOINT.safetensors and CHECKPOINT.yaml (or model.* inside an
    /// existing directory).
    #[arg(long, value_name = "CHECKPOINT")]
    pub out: PathBuf,
    /// The student checkpoints, two or more, each a checkpoint directory (a run's
    /// `checkpoints/best`), a checkpoint name, or a run directory (its `checkpoints/best`); their
    /// students are merged in this order.
    #[arg(required = true, value_name = "STUDENT_CHECKPOINT")]
    pub students: Vec<PathBuf>,
}

pub(crate) fn run(args: &MergeStudentsArgs) -> Result<()> {
    let inputs = args
        .students
        .iter()
        .map(|named| {
            let (path, _) = RunDir::locate_checkpoint(named);
            checkpoint::check_present(&path).map(|()| path)
        })
        .collect::<Result<Vec<_>>>()?;
    let report = merge_students(&inputs, &args.out)
        .with_context(|| format!("merge-students --out {}", args.out.display()))?;
    for line in &report.duplicates {
        eprintln!("note: {line}");
    }
    let model = checkpoint::read_info(&args.out)?.model;
    let (weights, sidecar) = checkpoint::checkpoint_files(&args.out);
    println!(
        "wrote {} and {}: the teacher of {}",
        weights.display(),
        sidecar.display(),
        inputs[0].display()
    );
    for (scenario, from) in &report.students {
        let label = Route::Student(scenario.clone()).label(&model);
        println!("  {label} from {}", from.display());
    }
    Ok(())
}
