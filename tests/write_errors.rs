//! Every writer on a full disk: a failed write exits non-zero naming the file and the cause
//! ("No space left on device"), and leaves the earlier file, or nothing, at the path; files that
//! were written are whole (GDAL reads every pixel back). Each test mounts a real small tmpfs
//! (root here and in CI); where this process may not mount one, the test says why and checks
//! nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{
    dis2, failed, predict, read_all, s, synthetic_checkpoint, synthetic_scene, tiny_benchmark,
};

const NO_SPACE: &str = "No space left on device";

/// A tmpfs of `size` (mount's syntax: `8k`, `2m`) on a temporary directory, unmounted when
/// dropped, also when the test fails.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None`, with the reason printed, where this process may not mount a file system (not
    /// root, no CAP_SYS_ADMIN, no `mount`).
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Self { dir }),
            Ok(out) => {
                let why = String::from_utf8_lossy(&out.stderr);
                eprintln!(
                    "skipped: cannot mount a {size} tmpfs ({}): {why}",
                    out.status
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills what is left of the file system with a file of zeros.
    fn fill(&self) {
        let mut filler = std::fs::File::create(self.path().join("filler")).unwrap();
        while filler.write_all(&[0; 4096]).is_ok() {}
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Every file under `dir`, recursively, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// No temporary file (`.NAME.tmp-PID`) is left under `dir`.
fn no_temporaries(dir: &Path) {
    let left: Vec<PathBuf> = files_under(dir)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// Every GeoTIFF under `dir` reads back whole (all pixels of all bands).
fn rasters_whole(dir: &Path) -> usize {
    let rasters: Vec<PathBuf> = files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tif"))
        .collect();
    for raster in &rasters {
        read_all(raster);
    }
    rasters.len()
}

/// The synthetic scene's inputs as `predict` arguments.
fn inputs(files: &[PathBuf]) -> Vec<String> {
    ["--optical", "--dsm", "--sar"]
        .iter()
        .zip(files)
        .flat_map(|(flag, f)| [flag.to_string(), s(f).to_string()])
        .collect()
}

#[test]
fn a_class_map_that_does_not_fit_fails_and_keeps_the_earlier_file() {
    let Some(disk) = Tmpfs::mount("8k") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ck = synthetic_checkpoint(dir.path());
    let files = synthetic_scene(dir.path(), 128);
    let out = disk.path().join("classes.tif");
    std::fs::write(&out, b"earlier").unwrap();
    disk.fill();
    let mut args = vec!["--checkpoint".to_string(), s(&ck).into()];
    args.extend(inputs(&files));
    args.extend(["--out".into(), s(&out).into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = failed(&predict(&args));
    assert!(
        err.contains("classes.tif") && err.contains(NO_SPACE),
        "{err}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"earlier");
    no_temporaries(disk.path());
}

#[test]
fn probabilities_that_do_not_fit_leave_no_output_of_the_scene() {
    let Some(disk) = Tmpfs::mount("2m") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ck = synthetic_checkpoint(dir.path());
    let files = synthetic_scene(dir.path(), 512);
    let classes = dir.path().join("out/classes.tif");
    let probs = disk.path().join("probs.tif");
    let mut args = vec!["--checkpoint".to_string(), s(&ck).into()];
    args.extend(inputs(&files));
    args.extend(["--out".into(), s(&classes).into()]);
    args.extend(["--probs".into(), s(&probs).into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = failed(&predict(&args));
    assert!(err.contains("probs.tif") && err.contains(NO_SPACE), "{err}");
    // 6 float bands of 512 x 512 need more than 2 MB; nothing of the scene is left.
    assert!(files_under(disk.path()).is_empty());
    assert!(files_under(&dir.path().join("out")).is_empty());
}

/// With `--cog` the streamed probabilities fit but not their COG copy beside them: the run
/// fails naming the file and the cause, and leaves nothing of the scene, temporaries included.
#[test]
fn a_cog_that_does_not_fit_leaves_no_output_of_the_scene() {
    let dir = tempfile::tempdir().unwrap();
    let ck = synthetic_checkpoint(dir.path());
    let files = synthetic_scene(dir.path(), 320);
    let run = |classes: &Path, probs: &Path, cog: bool| {
        let mut args = vec!["--checkpoint".to_string(), s(&ck).into()];
        args.extend(inputs(&files));
        args.extend(["--out".into(), s(classes).into()]);
        args.extend(["--probs".into(), s(probs).into()]);
        if cog {
            args.push("--cog".into());
        }
        predict(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let plain = dir.path().join("plain/probs.tif");
    common::ok(&run(&dir.path().join("plain/classes.tif"), &plain, false));
    let bytes = std::fs::metadata(&plain).unwrap().len();
    // Room for the streamed file, not for it and its copy with overviews.
    let Some(disk) = Tmpfs::mount(&format!("{}k", bytes * 3 / 2 / 1024)) else {
        return;
    };
    let probs = disk.path().join("probs.tif");
    let err = failed(&run(&dir.path().join("out/classes.tif"), &probs, true));
    assert!(err.contains("probs.tif") && err.contains(NO_SPACE), "{err}");
    assert!(files_under(disk.path()).is_empty());
    assert!(files_under(&dir.path().join("out")).is_empty());
}

#[test]
fn a_preview_that_does_not_fit_fails_naming_it() {
    let Some(disk) = Tmpfs::mount("8k") else {
        return;
    };
    disk.fill();
    let dir = tempfile::tempdir().unwrap();
    let ck = synthetic_checkpoint(dir.path());
    let files = synthetic_scene(dir.path(), 64);
    let classes = dir.path().join("out/classes.tif");
    let preview = disk.path().join("preview.png");
    let mut args = vec!["--checkpoint".to_string(), s(&ck).into()];
    args.extend(inputs(&files));
    args.extend(["--out".into(), s(&classes).into()]);
    args.extend(["--preview".into(), s(&preview).into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = failed(&predict(&args));
    assert!(
        err.contains("preview.png") && err.contains(NO_SPACE),
        "{err}"
    );
    assert!(!preview.exists() && !classes.exists());
    no_temporaries(disk.path());
}

#[test]
fn synth_stops_at_the_first_raster_that_does_not_fit() {
    let Some(disk) = Tmpfs::mount("1m") else {
        return;
    };
    let out = disk.path().join("synthetic");
    let err = failed(&dis2(&[
        "synth",
        "--out",
        s(&out),
        "--scenes",
        "6",
        "--size",
        "256",
    ]));
    assert!(err.contains(".tif") && err.contains(NO_SPACE), "{err}");
    assert!(!err.contains("experiment.yaml"), "{err}");
    assert!(rasters_whole(disk.path()) > 0, "some rasters fit in 1 MB");
    no_temporaries(disk.path());
}

#[test]
fn blocks_that_do_not_fit_fail_and_leave_whole_rasters() {
    let Some(disk) = Tmpfs::mount("256k") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let files = synthetic_scene(dir.path(), 512);
    let out = disk.path().join("blocks");
    let err = failed(&dis2(&[
        "blocks",
        "--modality",
        &format!("optical={}", s(&files[0])),
        "--modality",
        &format!("dsm={}", s(&files[1])),
        "--labels",
        s(&files[3]),
        "--grid",
        "2x2",
        "--out",
        s(&out),
    ]));
    assert!(err.contains(".tif") && err.contains(NO_SPACE), "{err}");
    assert!(!out.join("blocks.json").exists());
    rasters_whole(disk.path());
    no_temporaries(disk.path());
}

#[test]
fn stats_that_cannot_be_written_back_leave_the_experiment_as_it_was() {
    let Some(disk) = Tmpfs::mount("64k") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let experiment = tiny_benchmark(dir.path(), 5);
    let yaml = disk.path().join("experiment.yaml");
    std::fs::copy(&experiment, &yaml).unwrap();
    let before = std::fs::read(&yaml).unwrap();
    disk.fill();
    let err = failed(&dis2(&["stats", "--config", s(&yaml), "--class-weights"]));
    assert!(
        err.contains("experiment.yaml") && err.contains(NO_SPACE),
        "{err}"
    );
    assert_eq!(std::fs::read(&yaml).unwrap(), before);
    no_temporaries(disk.path());
}

#[test]
fn a_training_run_whose_checkpoint_does_not_fit_stops_with_whole_logs() {
    // The logs and the run's YAML fit in 1 MB; the first checkpoint (about 2 MB) does not.
    let Some(disk) = Tmpfs::mount("1m") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_benchmark(dir.path(), 3);
    let run = disk.path().join("run");
    let err = failed(&dis2(&[
        "--threads",
        "2",
        "train-teacher",
        "--config",
        s(&config),
        "--out",
        s(&run),
        "--device",
        "cpu",
        "--quiet",
        "--set",
        "data.sampling.samples_per_epoch=8",
        "--set",
        "data.sampling.batch_size=4",
        "--set",
        "train.epochs=1",
        "--set",
        "train.val_batches=1",
        "--set",
        "train.image_every=1",
    ]));
    assert!(
        err.contains(".safetensors") && err.contains(NO_SPACE),
        "{err}"
    );
    for line in common::metrics_text(&run).lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("whole JSON lines");
    }
    let records = dis2::train::tensorboard::read_records(&run.join("tensorboard")).unwrap();
    assert!(!records.is_empty());
    assert!(
        !run.join("checkpoints/last").exists(),
        "no checkpoint taken"
    );
    no_temporaries(disk.path());
}
