//! A training run's directory and what makes it resumable.
//!
//! ```text
//! runs/NAME/
//!   config.yaml          the effective experiment (after --set), model scenarios written out
//!   run.yaml             what is trained: teacher, distill (scenario, teacher) or joint
//!   metrics.jsonl        one line per optimiser step: step, epoch, lr, every loss term
//!   validation.jsonl     one line per validation: step, branch, mIoU, per-class IoU
//!   tensorboard/         event files
//!   checkpoints/
//!     step-000120/       model.safetensors, model.yaml, optim.safetensors
//!     last -> step-...   symbolic links, replaced atomically once a checkpoint is complete
//!     best -> step-...
//! ```
//!
//! A checkpoint directory is complete before a link points to it, and old ones are removed only
//! after, so a run killed at any moment resumes from a whole checkpoint.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Which network parts a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// `train-teacher`: encoders with auxiliary decoders, full HF, CFLM and decoder.
    Teacher,
    /// `distill`: one student against a frozen teacher.
    Distill,
    /// `distill --joint`: teacher and students together, a scenario drawn per batch.
    Joint,
}

/// `run.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    pub kind: RunKind,
    /// `train-teacher --modality-dropout P`: chance of zeroing each modality of each sample.
    #[serde(default)]
    pub modality_dropout: f64,
    /// The student scenarios (missing modality names): one for `distill`, one or more for
    /// `joint`, none for the teacher.
    #[serde(default)]
    pub scenarios: Vec<Vec<String>>,
    /// The teacher checkpoint a student starts from (`distill`; optional for `joint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<PathBuf>,
}

pub(crate) struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("config.yaml")
    }
    pub fn spec(&self) -> PathBuf {
        self.root.join("run.yaml")
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    pub fn validation(&self) -> PathBuf {
        self.root.join("validation.jsonl")
    }
    pub fn tensorboard(&self) -> PathBuf {
        self.root.join("tensorboard")
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    pub fn last(&self) -> PathBuf {
        self.checkpoints().join("last")
    }
    pub fn best(&self) -> PathBuf {
        self.checkpoints().join("best")
    }

    /// A new run: the directory must not hold a run already.
    pub(crate) fn create(&self) -> Result<()> {
        if self.spec().exists() {
            bail!(
                "{} already holds a run; continue it with --resume {} or choose another --out",
                self.root.display(),
                self.root.display()
            );
        }
        std::fs::create_dir_all(self.checkpoints())
            .with_context(|| format!("cannot create run directory {}", self.root.display()))
    }

    pub(crate) fn write_spec(&self, spec: &RunSpec) -> Result<()> {
        let text = serde_yaml::to_string(spec)?;
        crate::fsutil::write_atomic(&self.spec(), text.as_bytes())
    }

    pub(crate) fn read_spec(&self) -> Result<RunSpec> {
        let path = self.spec();
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{} is not a dis2 run directory (no run.yaml)",
                self.root.display()
            )
        })?;
        crate::config::from_yaml_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// The directory for the checkpoint of `step`.
    pub(crate) fn step_dir(&self, step: u64) -> PathBuf {
        self.checkpoints().join(format!("step-{step:06}"))
    }

    /// Points `link` (`last` or `best`) at `target` atomically.
    pub fn point(&self, link: &Path, target: &Path) -> Result<()> {
        let name = target
            .file_name()
            .context("checkpoint directory without a name")?;
        let tmp = crate::fsutil::temp_sibling(link);
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(name, &tmp)
            .with_context(|| format!("cannot create link {}", tmp.display()))?;
        std::fs::rename(&tmp, link)
            .with_context(|| format!("cannot replace link {}", link.display()))
    }

    /// Removes step directories that neither `last` nor `best` points to.
    pub(crate) fn prune(&self) -> Result<()> {
        let keep: Vec<PathBuf> = [self.last(), self.best()]
            .iter()
            .filter_map(|l| std::fs::read_link(l).ok())
            .collect();
        for entry in std::fs::read_dir(self.checkpoints())? {
            let entry = entry?;
            let name = entry.file_name();
            let is_step = name.to_string_lossy().starts_with("step-");
            if is_step && !keep.iter().any(|k| k.as_os_str() == name) {
                std::fs::remove_dir_all(entry.path())
                    .with_context(|| format!("cannot remove {}", entry.path().display()))?;
            }
        }
        Ok(())
    }

    /// Appends a JSON line, checked: a line that cannot be written whole (a full disk) is cut off
    /// again and fails the run, naming the file and the cause ([`crate::fsutil::append`]).
    pub(crate) fn append_line(path: &Path, value: &serde_json::Value) -> Result<()> {
        crate::fsutil::append(path, format!("{value}\n").as_bytes())
    }

    /// Syncs the JSON-line logs to disk before a checkpoint is taken, so that a write the file
    /// system failed late (a network or quota-limited file system) stops the run there.
    pub(crate) fn sync_logs(&self) -> Result<()> {
        for log in [self.metrics(), self.validation()] {
            if log.exists() {
                crate::fsutil::sync_file(&log)?;
            }
        }
        Ok(())
    }

    /// Keeps the JSON lines whose `step` is at most `step` (a resumed run redoes later steps).
    pub(crate) fn truncate_lines(path: &Path, step: u64) -> Result<()> {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Ok(());
        };
        let kept: String = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                    .is_some_and(|s| s <= step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        crate::fsutil::write_atomic(path, kept.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_move_atomically_and_pruning_keeps_what_they_point_to() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        run.create().unwrap();
        for step in [1, 2, 3] {
            std::fs::create_dir_all(run.step_dir(step)).unwrap();
        }
        run.point(&run.best(), &run.step_dir(1)).unwrap();
        run.point(&run.last(), &run.step_dir(2)).unwrap();
        run.point(&run.last(), &run.step_dir(3)).unwrap();
        run.prune().unwrap();
        assert!(run.step_dir(1).exists() && !run.step_dir(2).exists() && run.step_dir(3).exists());
        assert_eq!(
            std::fs::canonicalize(run.last()).unwrap(),
            std::fs::canonicalize(run.step_dir(3)).unwrap()
        );
    }

    #[test]
    fn a_second_run_in_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        run.create().unwrap();
        run.write_spec(&RunSpec {
            kind: RunKind::Teacher,
            modality_dropout: 0.0,
            scenarios: vec![],
            teacher: None,
        })
        .unwrap();
        let err = run.create().unwrap_err().to_string();
        assert!(err.contains("--resume"), "{err}");
        assert_eq!(run.read_spec().unwrap().kind, RunKind::Teacher);
    }

    #[test]
    fn truncation_keeps_earlier_steps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        for s in 1..=5u64 {
            RunDir::append_line(&path, &serde_json::json!({"step": s})).unwrap();
        }
        RunDir::truncate_lines(&path, 3).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
    }
}
