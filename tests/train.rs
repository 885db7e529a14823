//! Training end to end through the binary, on a tiny synthetic benchmark: exact resume after a
//! kill, the NaN stop, incompatible checkpoints, the TensorBoard records, what a run reads checked
//! before its first step, and a resume that changes the run's length.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dis2::train::tensorboard::{read_records, Record};

mod common;
use common::{dis2, failed, metrics_records, ok, ok_with_stderr, s, tiny_benchmark, BIN};

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
        .any(|r| matches!(r, Record::Scalar { tag, .. } if tag == "val/teacher/miou_percent")));
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

/// `--set data.dataset=...`: a generic layout over the tiny benchmark's train folders, with the
/// `val` entry given (YAML) or none.
fn generic_layout(bench: &Path, val: Option<&str>) -> Vec<String> {
    let train = bench.join("synthetic/train");
    let folder = |m: &str| train.join(m).display().to_string();
    let val = val.map_or(String::new(), |v| format!(", val: {v}"));
    let dataset = format!(
        "data.dataset={{generic: {{train: {{modalities: {{optical: {}, dsm: {}, sar: {}}}, \
         labels: {}}}{val}}}}}",
        folder("optical"),
        folder("dsm"),
        folder("sar"),
        folder("label")
    );
    vec!["--set".into(), dataset]
}

#[test]
fn what_a_run_reads_is_checked_before_its_first_step() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_benchmark(dir.path(), 5);
    let run = dir.path().join("run");

    // A key given twice: refused with both lines, with and without --set.
    let text = std::fs::read_to_string(&config).unwrap();
    let line = 1 + text
        .lines()
        .position(|l| l == "  ignore_index: 255")
        .unwrap();
    let twice = dir.path().join("twice.yaml");
    std::fs::write(
        &twice,
        text.replace(
            "  ignore_index: 255\n",
            "  ignore_index: 255\n  ignore_index: 254\n",
        ),
    )
    .unwrap();
    let want = format!(
        "twice.yaml: key `data.ignore_index` is given twice: on line {line} (column 3) and line {} \
         (column 3)",
        line + 1
    );
    for extra in [vec![], settings(1, 2)] {
        let stderr = failed(&dis2(&args(&["train-teacher"], &twice, &run, extra)));
        assert!(stderr.contains(&want), "{stderr}");
    }

    // A generic dataset without a val split: refused before step 1, naming the file and key,
    // and leaving no run behind.
    let mut extra = settings(1, 2);
    extra.extend(generic_layout(dir.path(), None));
    let stderr = failed(&dis2(&args(&["train-teacher"], &config, &run, extra)));
    assert!(
        stderr.contains(&format!("{}: the val split", config.display()))
            && stderr.contains("data.dataset.generic.val: not configured"),
        "{stderr}"
    );
    assert!(!run.join("metrics.jsonl").exists() && !run.join("run.yaml").exists());
    // A sweep over a dataset without the split it scores (test): refused before any training.
    let sweep = dir.path().join("sweep");
    let mut cmd: Vec<String> = ["sweep", "--config", s(&config), "--out", s(&sweep)]
        .map(String::from)
        .into();
    cmd.extend(
        [
            "--methods",
            "unimodal",
            "--scenarios",
            "dsm",
            "--seeds",
            "1",
        ]
        .map(String::from),
    );
    let train = dir.path().join("synthetic/train").display().to_string();
    let split = format!(
        "{{modalities: {{optical: {train}/optical, dsm: {train}/dsm, sar: {train}/sar}}, \
         labels: {train}/label}}"
    );
    cmd.extend(generic_layout(dir.path(), Some(&split)));
    let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let stderr = failed(&dis2(&refs));
    assert!(
        stderr.contains(&format!("{}: the test split", config.display()))
            && stderr.contains("data.dataset.generic.test: not configured"),
        "{stderr}"
    );
    assert!(
        !sweep.exists(),
        "the sweep wrote {} before refusing",
        sweep.display()
    );
    // A val split whose folder is missing: the folder named.
    let missing = dir.path().join("nowhere");
    let val = format!(
        "{{modalities: {{optical: {m}, dsm: {m}, sar: {m}}}, labels: {m}}}",
        m = missing.display()
    );
    let mut extra = settings(1, 2);
    extra.extend(generic_layout(dir.path(), Some(&val)));
    let stderr = failed(&dis2(&args(&["train-teacher"], &config, &run, extra)));
    assert!(
        stderr.contains("the val split")
            && stderr.contains(&format!("folder {} does not exist", missing.display())),
        "{stderr}"
    );
    assert!(!run.join("metrics.jsonl").exists());
    // With a val split the same command trains in the same folder.
    let train = dir.path().join("synthetic/train").display().to_string();
    let val = format!(
        "{{modalities: {{optical: {train}/optical, dsm: {train}/dsm, sar: {train}/sar}}, \
         labels: {train}/label}}"
    );
    let mut extra = settings(1, 2);
    extra.extend(generic_layout(dir.path(), Some(&val)));
    extra.extend(["--set".into(), "train.max_steps=1".into()]);
    ok(&dis2(&args(&["train-teacher"], &config, &run, extra)));
    assert_eq!(metrics_records(&run).len(), 1);
}

/// `train-teacher --resume RUN ARGS --device cpu --threads 2 --quiet`.
fn resume(run: &Path, extra: &[&str]) -> std::process::Output {
    let mut a = vec!["train-teacher", "--resume", run.to_str().unwrap()];
    a.extend_from_slice(extra);
    a.extend(["--device", "cpu", "--threads", "2", "--quiet"]);
    dis2(&a)
}

#[test]
fn a_resumed_run_takes_a_new_length_and_refuses_other_changes() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_benchmark(dir.path(), 5);
    let steps = |n: u64| vec!["--set".to_string(), format!("train.max_steps={n}")];
    // A schedule that does not depend on the run's length: a run of 2 steps lengthened to 4 is
    // the run of 4 steps, loss for loss.
    let cosine = |n: u64| {
        let mut a = settings(3, 2);
        a.extend(steps(n));
        a.extend([
            "--set".into(),
            "train.schedule={lr: 0.002, shape: {kind: cosine_restarts, t0: 3}}".into(),
        ]);
        a
    };
    let straight = dir.path().join("straight");
    ok(&dis2(&args(
        &["train-teacher"],
        &config,
        &straight,
        cosine(4),
    )));
    let short = dir.path().join("short");
    ok(&dis2(&args(&["train-teacher"], &config, &short, cosine(2))));
    let (_, stderr) = ok_with_stderr(&resume(&short, &["--set", "train.max_steps=4"]));
    assert!(
        stderr.contains("now runs to step 4 (from step 2)"),
        "{stderr}"
    );
    assert_eq!(metrics_records(&short), metrics_records(&straight));
    let saved = std::fs::read_to_string(short.join("config.yaml")).unwrap();
    assert!(saved.contains("max_steps: 4"), "{saved}");

    // Anything but the length is refused, naming the key, the run's value and the given one;
    // so are --config, flags run.yaml holds and a length below the steps done.
    let stderr = failed(&resume(
        &short,
        &[
            "--set",
            "train.max_steps=6",
            "--set",
            "train.schedule.lr=0.01",
        ],
    ));
    assert!(
        stderr.contains("train.schedule.lr: the run has 0.002, --set gives 0.01"),
        "{stderr}"
    );
    let stderr = failed(&resume(&short, &["--config", config.to_str().unwrap()]));
    assert!(stderr.contains("reads its own"), "{stderr}");
    let stderr = failed(&resume(&short, &["--modality-dropout", "0.5"]));
    assert!(stderr.contains("keeps its own (run.yaml)"), "{stderr}");
    let stderr = failed(&resume(&short, &["--set", "train.max_steps=3"]));
    assert!(
        stderr.contains("would stop after 3 optimiser steps") && stderr.contains("done 4"),
        "{stderr}"
    );
    assert_eq!(metrics_records(&short), metrics_records(&straight));

    // The benchmark's poly schedule decays over the whole run: lengthened from 2 to 3 steps, the
    // third step's rate is the decay over 3 steps.
    let poly = dir.path().join("poly");
    let mut extra = settings(3, 2);
    extra.extend(steps(2));
    ok(&dis2(&args(&["train-teacher"], &config, &poly, extra)));
    let (_, stderr) = ok_with_stderr(&resume(&poly, &["--set", "train.max_steps=3"]));
    assert!(stderr.contains("poly schedule"), "{stderr}");
    let lr: Vec<f64> = metrics_records(&poly)
        .iter()
        .map(|l| l["lr"].as_f64().unwrap())
        .collect();
    let want = [
        0.002,
        0.002 * 0.5f64.powf(0.9),
        0.002 * (1.0f64 / 3.0).powf(0.9),
    ];
    assert_eq!(lr.len(), 3);
    for (got, want) in lr.iter().zip(want) {
        assert!((got - want).abs() < 1e-12, "{lr:?}");
    }
}
