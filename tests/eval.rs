//! `dis2 eval` through the binary on a tiny synthetic benchmark.

use std::path::Path;
use std::process::{Command, Output};

use dis2::data::synth::{self, SynthOptions};

const BIN: &str = env!("CARGO_BIN_EXE_dis2");

fn dis2(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--device", "cpu", "--quiet"])
        .output()
        .expect("dis2 runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Labelled pixels of the test split, counted from the label rasters themselves.
fn labelled_test_pixels(root: &Path) -> u64 {
    let mut n = 0;
    for entry in std::fs::read_dir(root.join("test/label")).unwrap() {
        let path = entry.unwrap().path();
        let info = dis2::data::raster::RasterInfo::read(&path).unwrap();
        let px = dis2::data::raster::read_window_at(
            &path,
            dis2::data::raster::Window::new(0, 0, info.width, info.height),
        )
        .unwrap();
        n += px.valid.iter().filter(|v| **v).count() as u64;
    }
    n
}

#[test]
fn eval_scores_whole_scenes_and_labels_the_filled_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let options = SynthOptions {
        out: dir.path().join("synthetic"),
        scenes: 6,
        size: 96,
        seed: 5,
    };
    synth::generate(&options).unwrap();
    let config = synth::write_experiment(&options).unwrap();
    let run = dir.path().join("teacher");
    let (config, run_s) = (config.display().to_string(), run.display().to_string());
    ok(&dis2(&[
        "train-teacher",
        "--config",
        &config,
        "--out",
        &run_s,
        "--set",
        "data.sampling.samples_per_epoch=16",
        "--set",
        "data.sampling.batch_size=4",
        "--set",
        "train.epochs=1",
        "--set",
        "train.val_batches=1",
    ]));

    let stdout = ok(&dis2(&["eval", "--checkpoint", &run_s]));
    assert!(stdout.starts_with("teacher: mIoU"), "{stdout}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval-test/metrics.json")).unwrap())
            .unwrap();
    let cm: Vec<Vec<u64>> = serde_json::from_value(doc["confusion_matrix"].clone()).unwrap();
    let total: u64 = cm.iter().flatten().sum();
    assert_eq!(
        total,
        labelled_test_pixels(&options.out),
        "every labelled test pixel is scored once"
    );
    assert_eq!(doc["pixels"].as_u64(), Some(total));
    let correct: u64 = (0..cm.len()).map(|i| cm[i][i]).sum();
    let oa = doc["overall_accuracy"].as_f64().unwrap();
    assert!((oa - correct as f64 / total as f64).abs() < 1e-12);
    assert!(
        run.join("eval-test/metrics.csv").exists() && run.join("eval-test/confusion.png").exists()
    );

    // No student for a dropped DSM in a teacher run: the teacher runs with it filled, and says so.
    let stdout = ok(&dis2(&[
        "eval",
        "--checkpoint",
        &run_s,
        "--drop",
        "dsm",
        "--exclude",
        "water",
    ]));
    assert!(stdout.starts_with("teacher-fill[dsm]: mIoU"), "{stdout}");
    assert!(stdout.contains("(not in means)"), "{stdout}");
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("eval-test-drop-dsm/metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(doc["branch"], "teacher-fill[dsm]");

    for (args, expected) in [
        (vec!["--drop", "lidar"], "unknown modality \"lidar\""),
        (vec!["--exclude", "forest"], "not a class"),
    ] {
        let mut all = vec!["eval", "--checkpoint", &run_s];
        all.extend(args);
        let out = dis2(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}
