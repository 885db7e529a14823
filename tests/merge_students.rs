//! `dis2 merge-students`: student checkpoints of one teacher merged into one checkpoint whose
//! students and teacher give their inputs' probabilities bit for bit, found by `dis2 predict`;
//! and the refusals (another teacher, a scenario twice, other classes, a plain teacher), each
//! leaving nothing at the output path.

mod common;

use common::*;
use dis2::checkpoint;
use dis2::merge_students::{merge_students, SOURCE};
use dis2::model::{student_key, Dis2Net, Route, Scenario};
use std::path::{Path, PathBuf};
use tch::{nn, Device, Tensor};

/// A teacher checkpoint of experiments/synthetic.yaml (`scenarios: []`), untrained, libtorch
/// seeded with `seed`.
fn teacher_checkpoint(dir: &Path, name: &str, seed: i64) -> PathBuf {
    let exp = synthetic_experiment();
    let mut model = exp.model.clone();
    model.scenarios = Some(vec![]);
    let _one_seed_at_a_time = serial();
    untrained_checkpoint(dir, name, &model, &exp.data, seed)
}

/// A student checkpoint as `dis2 distill --teacher` makes one: the students of `scenarios`
/// (each a `dsm+sar`-style text, initialised with libtorch seeded with `seed`) beside the
/// encoders and teacher of `teacher` (every variable outside `students.`, BatchNorm statistics
/// included), after one training-mode distillation forward per student, which moves the
/// students' BatchNorm statistics and leaves the frozen teacher's as they are.
fn student_checkpoint(
    dir: &Path,
    name: &str,
    teacher: &Path,
    scenarios: &[&str],
    seed: i64,
) -> PathBuf {
    let mut exp = synthetic_experiment();
    exp.model.scenarios = Some(
        scenarios
            .iter()
            .map(|s| s.split('+').map(str::to_string).collect())
            .collect(),
    );
    let shared = read_tensors(Path::new(&format!("{}.safetensors", teacher.display())));
    let _one_seed_at_a_time = serial();
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Dis2Net::new(&vs.root(), &exp.model).unwrap();
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            if student_key(&name).is_none() {
                var.copy_(&shared[&name]);
            }
        }
    });
    let x = random_inputs(&[4, 1, 1], 2, 64);
    let all: Vec<Option<&Tensor>> = x.iter().map(Some).collect();
    tch::no_grad(|| {
        for s in net.scenarios() {
            net.forward_distill(s, &all, true).unwrap();
        }
    });
    let path = dir.join(name);
    let info = checkpoint::CheckpointInfo::new(&exp.model)
        .unwrap()
        .with_data(&exp.data);
    checkpoint::save(&path, &vs, &info).unwrap();
    path
}

/// The file names in `dir`, sorted.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A branch's probabilities `[2, K, 64, 64]` on `x`, the inputs the route does not read left out.
fn probabilities(net: &Dis2Net, route: &Route, x: &[Tensor]) -> Tensor {
    let inputs: Vec<Option<&Tensor>> = x
        .iter()
        .enumerate()
        .map(|(i, t)| (!route.scenario().is_some_and(|s| s.is_missing(i))).then_some(t))
        .collect();
    tch::no_grad(|| net.forward_route(route, &inputs, false)).unwrap()
}

#[test]
fn every_variable_is_the_teachers_or_one_students() {
    let cfg = synthetic_experiment().model;
    let (vs, net) = build(&cfg);
    let keys: Vec<String> = net.scenarios().iter().map(Scenario::key).collect();
    let mut seen: Vec<String> = Vec::new();
    for name in vs.variables().keys() {
        match student_key(name) {
            None => assert!(
                name.starts_with("encoders.") || name.starts_with("teacher."),
                "{name} is neither the teacher's nor a student's"
            ),
            Some(key) => {
                assert!(keys.iter().any(|k| k == key), "{name}: no student {key}");
                seen.push(key.to_string());
            }
        }
    }
    seen.sort();
    seen.dedup();
    let mut keys = keys;
    keys.sort();
    assert_eq!(seen, keys);
    assert_eq!(student_key("students"), None);
    assert_eq!(student_key("studentsm1.x"), None);
}

#[test]
fn merged_students_and_teacher_give_their_checkpoints_probabilities() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = teacher_checkpoint(dir.path(), "teacher", 11);
    let sar = student_checkpoint(dir.path(), "sar", &teacher, &["sar"], 1);
    let dsm = student_checkpoint(dir.path(), "dsm", &teacher, &["dsm"], 2);
    // A joint-style input holding two students, one of them the first input's, identical.
    let both = dir.path().join("both");
    std::fs::create_dir(&both).unwrap();
    let report = merge_students(&[sar.clone(), dsm.clone()], &both).unwrap();
    assert!(report.duplicates.is_empty(), "{:?}", report.duplicates);
    assert_eq!(
        files_in(&both),
        ["model.safetensors", "model.yaml"],
        "a directory takes model.*"
    );
    let optical = student_checkpoint(dir.path(), "optical", &teacher, &["optical", "dsm+sar"], 3);
    let merged = dir.path().join("merged");
    let report = merge_students(&[both.clone(), optical.clone(), sar.clone()], &merged).unwrap();
    assert_eq!(report.duplicates.len(), 1, "{:?}", report.duplicates);
    assert!(
        report.duplicates[0].starts_with("student[sar]: "),
        "{:?}",
        report.duplicates
    );

    let m = checkpoint::load(&merged, Device::Cpu).unwrap();
    let order = ["sar", "dsm", "optical", "dsm+sar"];
    let listed: Vec<String> = m
        .net
        .scenarios()
        .iter()
        .map(|s| s.text(&m.info.model))
        .collect();
    assert_eq!(listed, order, "input order");
    let sources: Vec<&Path> = report.students.iter().map(|(_, p)| p.as_path()).collect();
    let (b, o) = (both.as_path(), optical.as_path());
    assert_eq!(sources, [b, b, o, o]);
    assert_eq!(m.info.metadata["source"], serde_yaml::Value::from(SOURCE));
    let from: Vec<String> = m.info.metadata["merged_from"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(from, [s(&both), s(&optical), s(&sar)]);

    let x = random_inputs(&[4, 1, 1], 2, 64);
    let owner = |text: &str| match text {
        "sar" => &sar,
        "dsm" => &dsm,
        _ => &optical,
    };
    for text in order {
        let route = Route::Student(Scenario::parse(text, &m.info.model).unwrap());
        let own = checkpoint::load(owner(text), Device::Cpu).unwrap();
        let (got, want) = (
            probabilities(&m.net, &route, &x),
            probabilities(&own.net, &route, &x),
        );
        assert!(got.equal(&want), "student[{text}]: not bit-identical");
    }
    for input in [&sar, &dsm, &optical] {
        let own = checkpoint::load(input, Device::Cpu).unwrap();
        let (got, want) = (
            probabilities(&m.net, &Route::Teacher, &x),
            probabilities(&own.net, &Route::Teacher, &x),
        );
        assert!(got.equal(&want), "teacher of {}", input.display());
    }
}

#[test]
fn the_command_merges_and_predict_finds_every_student() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = teacher_checkpoint(dir.path(), "teacher", 11);
    let sar = student_checkpoint(dir.path(), "sar", &teacher, &["sar"], 1);
    let dsm = student_checkpoint(dir.path(), "dsm", &teacher, &["dsm"], 2);
    let merged = dir.path().join("merged");
    let stdout = ok(&dis2(&[
        "merge-students",
        "--out",
        s(&merged),
        s(&sar),
        s(&dsm),
    ]));
    assert!(
        stdout.contains("student[sar] from") && stdout.contains("student[dsm] from"),
        "{stdout}"
    );
    let scene = synthetic_scene(&dir.path().join("scene"), 96);
    let (optical, dsm_file, sar_file) = (s(&scene[0]), s(&scene[1]), s(&scene[2]));
    let cases: [(&str, &Path, &[&str]); 2] = [
        ("sar", &sar, &["--optical", optical, "--dsm", dsm_file]),
        ("dsm", &dsm, &["--optical", optical, "--sar", sar_file]),
    ];
    for (missing, own, inputs) in cases {
        let mut classes = Vec::new();
        for (name, checkpoint) in [("merged", merged.as_path()), ("own", own)] {
            let out = dir.path().join(format!("{missing}-{name}.tif"));
            let mut args = vec!["--checkpoint", s(checkpoint), "--out", s(&out)];
            args.extend_from_slice(inputs);
            let stdout = ok(&predict(&args));
            assert!(
                stdout.contains(&format!("student (missing: {missing})")),
                "{stdout}"
            );
            classes.push(read_all(&out).data);
        }
        assert_eq!(
            classes[0], classes[1],
            "student[{missing}]: class maps differ"
        );
    }
}

#[test]
fn merges_that_cannot_hold_together_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = teacher_checkpoint(dir.path(), "teacher", 11);
    let sar = student_checkpoint(dir.path(), "sar", &teacher, &["sar"], 1);
    let another = teacher_checkpoint(dir.path(), "another-teacher", 12);
    let other_teacher = student_checkpoint(dir.path(), "other-teacher", &another, &["dsm"], 2);
    // The student of sar again, from the same teacher, initialised otherwise.
    let sar_again = student_checkpoint(dir.path(), "sar-again", &teacher, &["dsm", "sar"], 1);
    let classes = {
        let exp = synthetic_experiment();
        let mut model = exp.model.clone();
        model.num_classes = 5;
        model.scenarios = Some(vec![vec!["dsm".into()]]);
        untrained_checkpoint(dir.path(), "five-classes", &model, &exp.data, 11)
    };
    let before = files_in(dir.path());
    let out = dir.path().join("merged");
    let weights = |p: &Path| format!("{}.safetensors", p.display());
    let sidecar = |p: &Path| format!("{}.yaml", p.display());
    let cases: Vec<(Vec<PathBuf>, Vec<String>)> = vec![
        (
            vec![sar.clone(), other_teacher.clone()],
            vec![
                "hold different teachers".into(),
                weights(&sar),
                weights(&other_teacher),
                "the first encoders.0.".into(),
                "by up to ".into(),
            ],
        ),
        (
            vec![sar.clone(), sar_again.clone()],
            vec![
                "student[sar] is in both".into(),
                weights(&sar),
                weights(&sar_again),
                "different weights".into(),
                "the first students.m2.".into(),
            ],
        ),
        (
            vec![sar.clone(), classes.clone()],
            vec![
                sidecar(&sar),
                sidecar(&classes),
                "model.num_classes: ".into(),
                "class_names: ".into(),
            ],
        ),
        (
            vec![sar.clone(), teacher.clone()],
            vec![
                sidecar(&teacher),
                "teacher without students".into(),
                "adds nothing".into(),
            ],
        ),
        (vec![sar.clone()], vec!["two or more".into()]),
    ];
    for (inputs, wanted) in cases {
        let err = format!("{:#}", merge_students(&inputs, &out).unwrap_err());
        for w in &wanted {
            assert!(err.contains(w.as_str()), "{w:?} not in: {err}");
        }
        assert_eq!(files_in(dir.path()), before, "{err}");
    }
    // The different teachers through the command line: the error, and nothing written.
    let stderr = failed(&dis2(&[
        "merge-students",
        "--out",
        s(&out),
        s(&sar),
        s(&other_teacher),
    ]));
    assert!(stderr.contains("hold different teachers"), "{stderr}");
    assert_eq!(files_in(dir.path()), before);
}
