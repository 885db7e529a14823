//! Training end to end through the binary, on a tiny synthetic benchmark: exact resume after a
//! kill, the NaN stop, incompatible checkpoints, and the TensorBoard records.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dis2::train::tensorboard::{read_records, Record};

mod common;
use common::{dis2, metrics_records, ok, tiny_benchmark, BIN};

/// Small, quick settings: 16 samples of 4 per epoch, validation on two batches.
fn settings(epochs: u64, val_every: u64) -> Vec<String> {
    [
        "data.sampling.samples_per_epoch=16".to_string(),
        "data.sampling.batch_size=4".into(),
        format!("train.epochs={epochs}"),
        format!("train.val_every={val_every}"),
        "train.val_batches=2".into(),
        "train.image_every=3".into(),
        "train.kd_warmup_epochs=1".into(),
    ]
    .into_iter()
    .flat_map(|s| ["--set".to_string(), s])
    .collect()
}

/// `WORDS --config CONFIG --out OUT EXTRA --device cpu --threads 2 --quiet`.
fn args(words: &[&str], config: &Path, out: &Path, extra: Vec<String>) -> Vec<String> {
    let mut a: Vec<String> = words.iter().map(|s| s.to_string()).collect();
    a.extend([
        "--config".into(),
        config.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ]);
    a.extend(extra);
    a.extend([
        "--device".into(),
        "cpu".into(),
        "--threads".into(),
        "2".into(),
        "--quiet".into(),
    ]);
    a
}

#[test]
fn a_killed_run_resumes_exactly_and_distills_a_student() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_benchmark(dir.path(), 5);
    let epochs = 3; // 4 steps an epoch: 12 steps, a checkpoint every 2
    let straight = dir.path().join("straight");
    ok(&dis2(&args(
        &["train-teacher"],
        &config,
        &straight,
        settings(epochs, 2),
    )));
    let reference = metrics_records(&straight);
    assert_eq!(reference.len(), 12);

    // The same run, killed after its fifth step (last checkpoint: step 4), then resumed.
    let killed = dir.path().join("killed");
    let mut child = Command::new(BIN)
        .args(args(
            &["train-teacher"],
            &config,
            &killed,
            settings(epochs, 2),
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done =
            std::fs::read_to_string(killed.join("metrics.jsonl")).map_or(0, |t| t.lines().count());
        if done >= 5 {
            break;
        }
        assert!(Instant::now() < deadline, "the run never reached step 5");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed by a signal");
    assert!(
        metrics_records(&killed).len() < 12,
        "the run was interrupted"
    );
    let resumed = dis2(&[
        "train-teacher".into(),
        "--resume".into(),
        killed.display().to_string(),
        "--device".into(),
        "cpu".into(),
        "--threads".into(),
        "2".into(),
        "--quiet".into(),
    ]);
    ok(&resumed);
    assert_eq!(
        metrics_records(&killed),
        reference,
        "resumed losses differ from the uninterrupted run"
    );

    // The TensorBoard records of the straight run hold the same losses, step by step.
    let records = read_records(&straight.join("tensorboard")).unwrap();
    let totals: Vec<(i64, f32)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Scalar { tag, step, value } if tag == "loss/total" => Some((*step, *value)),
            _ => None,
        })
        .collect();
    let expected: Vec<(i64, f32)> = reference
        .iter()
        .map(|l| {
            (
                l["step"].as_i64().unwrap(),
                l["loss"]["total"].as_f64().unwrap() as f32,
            )
        })
        .collect();
    assert_eq!(totals, expected);
    assert!(records
        .iter()
        .any(|r| matches!(r, Record::Scalar { tag, .. } if tag == "val/teacher/miou")));
    let image = records.iter().find_map(|r| match r {
        Record::Image { png, .. } => Some(png.clone()),
        _ => None,
    });
    let image = image::load_from_memory(&image.expect("an image record")).unwrap();
    assert_eq!(
        (image.width(), image.height()),
        (3 * 64, 64),
        "input | label | prediction"
    );

    // A student for the dsm-missing scenario from that teacher.
    let student = dir.path().join("student");
    let mut extra = settings(1, 4);
    extra.extend([
        "--teacher".into(),
        straight.join("checkpoints/best").display().to_string(),
        "--missing".into(),
        "dsm".into(),
    ]);
    let out = dis2(&args(&["distill"], &config, &student, extra));
    ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("student[dsm]") && stdout.contains("teacher-fill[dsm]"),
        "{stdout}"
    );
    let info = dis2::checkpoint::read_info(&student.join("checkpoints/last")).unwrap();
    assert_eq!(info.model.scenarios, Some(vec![vec!["dsm".to_string()]]));
    assert_eq!(
        info.class_names.as_ref().map(|c| c[5].as_str()),
        Some("water")
    );
    // The teacher inside the student checkpoint is the frozen one: its weights did not move.
    let teacher =
        tch::Tensor::read_safetensors(straight.join("checkpoints/best/model.safetensors")).unwrap();
    let after: std::collections::HashMap<String, tch::Tensor> =
        tch::Tensor::read_safetensors(student.join("checkpoints/last/model.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    for (name, t) in teacher
        .iter()
        .filter(|(n, _)| n.starts_with("teacher.") || n.starts_with("encoders."))
    {
        assert!(after[name].equal(t), "{name} changed during distillation");
    }
}

#[test]
fn a_nan_loss_stops_the_run_and_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_benchmark(dir.path(), 5);
    let run = dir.path().join("nan");
    let mut extra = settings(2, 1);
    extra.extend(["--set".into(), "train.schedule.lr=1e30".into()]);
    let out = dis2(&args(&["train-teacher"], &config, &run, extra));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: step 2 (epoch 0): loss term `"),
        "{stderr}"
    );
    assert!(stderr.contains("the last good checkpoint is"), "{stderr}");
    let info = dis2::checkpoint::read_info(&run.join("checkpoints/last")).unwrap();
    assert_eq!(info.metadata["step"].as_u64(), Some(1));
}

#[test]
fn checkpoints_of_another_configuration_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_benchmark(dir.path(), 5);
    let teacher = dir.path().join("teacher");
    ok(&dis2(&args(
        &["train-teacher"],
        &config,
        &teacher,
        settings(1, 4),
    )));
    let mut extra = settings(1, 4);
    extra.extend([
        "--set".into(),
        "model.base_width=16".into(),
        "--teacher".into(),
        teacher.join("checkpoints/last").display().to_string(),
        "--missing".into(),
        "sar".into(),
    ]);
    let out = dis2(&args(&["distill"], &config, &dir.path().join("s"), extra));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("made for another model"), "{stderr}");
    assert!(
        stderr.contains("base_width: checkpoint has 8, configuration has 16"),
        "{stderr}"
    );
    // The refused run left no run behind: the corrected command can use the same folder.
    let mut extra = settings(1, 4);
    extra.extend([
        "--teacher".into(),
        teacher.join("checkpoints/last").display().to_string(),
        "--missing".into(),
        "sar".into(),
    ]);
    ok(&dis2(&args(
        &["distill"],
        &config,
        &dir.path().join("s"),
        extra,
    )));
    // An unknown modality and a second run in the same directory are clear errors too.
    let mut extra = settings(1, 4);
    extra.extend([
        "--teacher".into(),
        teacher.join("checkpoints/last").display().to_string(),
        "--missing".into(),
        "lidar".into(),
    ]);
    let out = dis2(&args(&["distill"], &config, &dir.path().join("s2"), extra));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("lidar") && stderr.contains("optical"),
        "{stderr}"
    );
    let out = dis2(&args(&["train-teacher"], &config, &teacher, settings(1, 4)));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a run"));
}

/// `text` with the synthetic experiment's three modalities replaced by `model_keys` (YAML lines
/// at the indentation of `model:`'s keys).
fn with_model_keys(text: &str, model_keys: &str) -> String {
    let three = "  modalities:\n    - {name: optical, channels: 4}\n    - {name: dsm, channels: 1}\n    - {name: sar, channels: 1}\n";
    assert!(text.contains(three), "{text}");
    text.replace(three, model_keys)
}

#[test]
fn models_on_a_subset_of_the_modalities_train_score_and_predict() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_benchmark(dir.path(), 5);
    let text = std::fs::read_to_string(&config).unwrap();

    // The single-modality baseline: optical alone, no students. The normalisation of dsm and
    // sar stays in the file and is ignored.
    let one = dir.path().join("one.yaml");
    std::fs::write(
        &one,
        with_model_keys(
            &text,
            "  modalities:\n    - {name: optical, channels: 4}\n  scenarios: []\n",
        ),
    )
    .unwrap();
    let run = dir.path().join("optical");
    let out = dis2(&args(&["train-teacher"], &one, &run, settings(1, 4)));
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("validation teacher"));
    let eval = dis2(&[
        "eval".into(),
        "--checkpoint".into(),
        run.display().to_string(),
        "--device".into(),
        "cpu".into(),
        "--quiet".into(),
    ]);
    ok(&eval);
    let stdout = String::from_utf8_lossy(&eval.stdout);
    assert!(stdout.starts_with("teacher: mIoU"), "{stdout}");
    let scene = std::fs::read_dir(dir.path().join("synthetic/test/optical"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let classes = dir.path().join("classes.tif");
    let predict = dis2(&[
        "predict".into(),
        "--checkpoint".into(),
        run.join("checkpoints/best").display().to_string(),
        "--optical".into(),
        scene.display().to_string(),
        "--out".into(),
        classes.display().to_string(),
        "--device".into(),
        "cpu".into(),
        "--quiet".into(),
    ]);
    ok(&predict);
    assert!(classes.is_file());

    // Both ablations on optical + sar: a teacher, then a student distilled from it.
    let two = dir.path().join("two.yaml");
    std::fs::write(
        &two,
        with_model_keys(
            &text,
            "  modalities:\n    - {name: optical, channels: 4}\n    - {name: sar, channels: 1}\n  decoder: plain\n  fusion: level4\n",
        ),
    )
    .unwrap();
    let teacher = dir.path().join("ablation-teacher");
    ok(&dis2(&args(
        &["train-teacher"],
        &two,
        &teacher,
        settings(1, 4),
    )));
    let mut extra = settings(1, 4);
    extra.extend([
        "--teacher".into(),
        teacher.join("checkpoints/best").display().to_string(),
        "--missing".into(),
        "sar".into(),
    ]);
    let student = dir.path().join("ablation-student");
    let out = dis2(&args(&["distill"], &two, &student, extra));
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("student[sar]"));
    let info = dis2::checkpoint::read_info(&student.join("checkpoints/last")).unwrap();
    assert_eq!(
        (info.model.decoder.name(), info.model.fusion.name()),
        ("plain", "level4")
    );

    // A teacher of the reference network does not serve an ablation's student.
    let reference = dir.path().join("reference-teacher");
    let three = dir.path().join("three.yaml");
    std::fs::write(
        &three,
        with_model_keys(
            &text,
            "  modalities:\n    - {name: optical, channels: 4}\n    - {name: sar, channels: 1}\n",
        ),
    )
    .unwrap();
    ok(&dis2(&args(
        &["train-teacher"],
        &three,
        &reference,
        settings(1, 4),
    )));
    let mut extra = settings(1, 4);
    extra.extend([
        "--teacher".into(),
        reference.join("checkpoints/best").display().to_string(),
        "--missing".into(),
        "sar".into(),
    ]);
    let out = dis2(&args(&["distill"], &two, &dir.path().join("s"), extra));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("decoder: checkpoint has classwise, configuration has plain")
            && stderr.contains("fusion: checkpoint has hierarchical, configuration has level4"),
        "{stderr}"
    );
}
