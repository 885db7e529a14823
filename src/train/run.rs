//! A training run's directory and what makes it resumable.
//!
//! ```text
//! runs/NAME/
//!   config.yaml          the effective experiment (after --set), model scenarios written out
//!   run.yaml             what is trained: teacher, distill (scenario, teacher) or joint
//!   metrics.jsonl        one line per optimiser step: step, epoch, lr, every loss term
//!   validation.jsonl     one line per validation: step, branch, mIoU, per-class IoU (fractions)
//!   tensorboard/         event files
//!   checkpoints/
//!     step-000120/       model.safetensors, model.yaml, optim.safetensors
//!     last -> step-...   symbolic links, replaced atomically once a checkpoint is complete
//!     best -> step-...
//! ```
//!
//! A checkpoint directory is complete before a link points to it, and old ones are removed only
//! after, so a run killed at any moment resumes from a whole checkpoint.

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::Experiment;

/// The `--set` keys a resumed run honours: its length. Any other key would make the steps to come
/// unlike those already taken, so a resume refuses it.
pub(crate) const RESUME_KEYS: [&str; 2] = ["train.max_steps", "train.epochs"];

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

/// What a training checkpoint's sidecar (`checkpoints/step-N/model.yaml`) records under
/// `metadata`: where the run stood, read back to resume it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CheckpointMeta {
    pub kind: RunKind,
    /// Optimiser steps done.
    pub step: u64,
    /// The epoch of the last step.
    pub epoch: u64,
    /// The experiment's seed.
    pub seed: u64,
    /// Processes of the data-parallel job; absent: one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world_size: Option<u64>,
    /// The validation score that picks `best`, at this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_miou: Option<f64>,
    /// The best such score so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_miou: Option<f64>,
}

impl CheckpointMeta {
    /// The sidecar's `metadata` map.
    pub(crate) fn to_metadata(&self) -> Result<BTreeMap<String, serde_yaml::Value>> {
        let value = serde_yaml::to_value(self).context("cannot serialise checkpoint metadata")?;
        Ok(serde_yaml::from_value(value)?)
    }

    /// Reads the record back from the `metadata` map of the sidecar `sidecar`; other keys are
    /// ignored.
    ///
    /// # Errors
    /// A key missing or of another type, naming the sidecar and the key.
    pub(crate) fn from_metadata(
        metadata: &BTreeMap<String, serde_yaml::Value>,
        sidecar: &Path,
    ) -> Result<Self> {
        let value = serde_yaml::to_value(metadata)?;
        serde_yaml::from_value(value)
            .map_err(|e| anyhow::anyhow!("{}: metadata: {e}", sidecar.display()))
    }
}

#[derive(Debug, PartialEq)]
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

    /// The run `path` belongs to: `path` itself, or the nearest of its ancestors down to the
    /// layout's depth (`RUN/checkpoints/NAME/FILE`), that holds a `run.yaml` and a
    /// `config.yaml`; `None` for a path outside any run (an imported checkpoint, say).
    pub(crate) fn containing(path: &Path) -> Option<RunDir> {
        path.ancestors()
            .take(4)
            .map(RunDir::new)
            .find(|run| run.spec().exists() && run.config().exists())
    }

    /// The checkpoint `path` names, as `--checkpoint` takes it: the run's `checkpoints/best`
    /// when `path` is a run directory, else `path` itself (a checkpoint directory or name); with
    /// the run it belongs to ([`RunDir::containing`]).
    pub(crate) fn locate_checkpoint(path: &Path) -> (PathBuf, Option<RunDir>) {
        let as_run = RunDir::new(path);
        let checkpoint = match as_run.spec().exists() {
            true => as_run.best(),
            false => path.to_path_buf(),
        };
        let run = RunDir::containing(&checkpoint);
        (checkpoint, run)
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

    /// The run's experiment (`config.yaml`) with the `--set` overrides of a resume, and whether
    /// they changed it. They may change the run's length only ([`RESUME_KEYS`]); values equal to
    /// the saved ones are accepted.
    ///
    /// # Errors
    /// `config.yaml` cannot be read, an override is not a key of the experiment, or one changes
    /// another key (each such key named with the run's value and the given one).
    pub(crate) fn resumed_experiment(&self, overrides: &[String]) -> Result<(Experiment, bool)> {
        let saved = Experiment::load(&self.config(), &[])?;
        if overrides.is_empty() {
            return Ok((saved, false));
        }
        let given = Experiment::load(&self.config(), overrides)?;
        let refused: Vec<String> = saved
            .differences(&given)?
            .into_iter()
            .filter(|(key, _, _)| !RESUME_KEYS.contains(&key.as_str()))
            .map(|(key, was, now)| format!("{key}: the run has {was}, --set gives {now}"))
            .collect();
        ensure!(
            refused.is_empty(),
            "--resume {}: a resumed run keeps its {} but for its length ({}):\n  {}",
            self.root.display(),
            self.config().display(),
            RESUME_KEYS.join(", "),
            refused.join("\n  ")
        );
        let changed = given != saved;
        Ok((given, changed))
    }

    /// Refuses to continue this run as the one that `spec` and the experiment `exp` (read from
    /// `config`, after `--set`) would start (`--resume-if-present`): the same `run.yaml` and the
    /// same experiment, but for its length ([`RESUME_KEYS`]).
    ///
    /// # Errors
    /// `run.yaml` or `config.yaml` cannot be read, or they differ from the command's (each
    /// differing key named with the run's value and the command's).
    pub(crate) fn check_same_run(
        &self,
        spec: &RunSpec,
        exp: &Experiment,
        config: &Path,
    ) -> Result<()> {
        let at = self.root.display();
        let found = self.read_spec()?;
        ensure!(
            &found == spec,
            "--resume-if-present: {at} holds another run ({}: {found:?}) than this command \
             starts ({spec:?}); choose another --out",
            self.spec().display()
        );
        let mut given = exp.clone();
        given.model.scenarios = Some(spec.scenarios.clone());
        let saved = Experiment::load(&self.config(), &[])?;
        let differ: Vec<String> = saved
            .differences(&given)?
            .into_iter()
            .filter(|(key, _, _)| !RESUME_KEYS.contains(&key.as_str()))
            .map(|(key, was, now)| {
                format!("{key}: the run has {was}, {} gives {now}", config.display())
            })
            .collect();
        ensure!(
            differ.is_empty(),
            "--resume-if-present: {at} holds a run of another experiment ({}):\n  {}",
            self.config().display(),
            differ.join("\n  ")
        );
        Ok(())
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
    fn a_checkpoint_anywhere_in_a_run_finds_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(&dir.path().join("run"));
        run.create().unwrap();
        std::fs::write(run.spec(), "kind: teacher\n").unwrap();
        std::fs::write(run.config(), "name: x\n").unwrap();
        std::fs::create_dir_all(run.step_dir(7)).unwrap();
        run.point(&run.best(), &run.step_dir(7)).unwrap();
        let file = run.step_dir(7).join("model.safetensors");
        for path in [run.root.clone(), run.best(), run.step_dir(7), file] {
            let found = RunDir::containing(&path).map(|r| r.root);
            assert_eq!(
                found.as_deref(),
                Some(run.root.as_path()),
                "{}",
                path.display()
            );
        }
        assert_eq!(
            RunDir::locate_checkpoint(&run.root),
            (run.best(), Some(RunDir::new(&run.root)))
        );
        assert_eq!(
            RunDir::locate_checkpoint(&run.step_dir(7)),
            (run.step_dir(7), Some(RunDir::new(&run.root)))
        );
        // Outside a run, or in a folder without its config.yaml: no run.
        let outside = dir.path().join("imported/ck");
        assert_eq!(RunDir::locate_checkpoint(&outside), (outside.clone(), None));
        std::fs::remove_file(run.config()).unwrap();
        assert!(RunDir::containing(&run.best()).is_none());
    }

    #[test]
    fn checkpoint_metadata_keeps_its_keys_and_reads_older_checkpoints() {
        let meta = CheckpointMeta {
            kind: RunKind::Distill,
            step: 120,
            epoch: 3,
            seed: 42,
            world_size: Some(2),
            val_miou: Some(0.5),
            best_miou: Some(0.625),
        };
        let map = meta.to_metadata().unwrap();
        let text = serde_yaml::to_string(&map).unwrap();
        assert_eq!(
            text,
            "best_miou: 0.625\nepoch: 3\nkind: distill\nseed: 42\nstep: 120\nval_miou: 0.5\n\
             world_size: 2\n"
        );
        let sidecar = Path::new("run/checkpoints/step-000120/model.yaml");
        assert_eq!(CheckpointMeta::from_metadata(&map, sidecar).unwrap(), meta);
        // Written before data-parallel training and without a validation score; other keys kept
        // by later tools are ignored.
        let old: BTreeMap<String, serde_yaml::Value> =
            serde_yaml::from_str("epoch: 0\nkind: teacher\nseed: 1\nstep: 4\nsource: x\n").unwrap();
        let read = CheckpointMeta::from_metadata(&old, sidecar).unwrap();
        assert_eq!(
            (read.step, read.world_size, read.best_miou),
            (4, None, None)
        );
        let mut no_step = old.clone();
        no_step.remove("step");
        let err = CheckpointMeta::from_metadata(&no_step, sidecar)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model.yaml: metadata") && err.contains("step"),
            "{err}"
        );
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
