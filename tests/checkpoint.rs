//! Checkpoints and `dis2 import-torch`: round trips, BatchNorm statistics, and errors that name
//! what does not fit without writing anything.

mod common;

use common::*;
use dis2::checkpoint::{self, CheckpointInfo};
use dis2::import_torch::{import_torch, read_model_config};
use dis2::model::{Dis2Net, Route, Scenario};
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn shipped_model_files_match_the_reference_settings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["small", "wide"] {
        let cfg =
            read_model_config(&root.join(format!("experiments/models/reference-{name}.yaml")))
                .unwrap();
        let Some(dir) = reference_dir() else { return };
        let mut want = reference_config(&dir.join(format!("{name}.weights.safetensors")));
        want.scenarios = cfg.scenarios.clone();
        assert_eq!(cfg, want, "experiments/models/reference-{name}.yaml");
        assert_eq!(cfg.scenario_list().unwrap(), want.scenario_list().unwrap());
    }
}

#[test]
fn import_torch_checkpoint_reproduces_the_reference() {
    let Some(dir) = reference_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ref");
    let config =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/models/reference-small.yaml");
    import_torch(&dir.join("small.weights.safetensors"), &config, &out).unwrap();
    assert_eq!(files_in(tmp.path()), ["ref.safetensors", "ref.yaml"]);

    let loaded = checkpoint::load(&out, Device::Cpu).unwrap();
    assert_eq!(
        loaded.info.metadata["source"],
        serde_yaml::Value::from("import-torch")
    );
    let io = read_tensors(&dir.join("small.io.safetensors"));
    let parts = loaded.net.split_input(&io["input"]).unwrap();
    let pred = tch::no_grad(|| {
        loaded.net.forward_route(
            &Route::Student(Scenario::new(vec![0], 2).unwrap()),
            &[None, Some(&parts[1])],
            false,
        )
    })
    .unwrap();
    assert!(max_abs_diff(&pred, &io["eval.miss_rgb.seg_pred"]) < 1e-4);

    // BatchNorm running statistics travel with the weights.
    let state = read_tensors(&dir.join("small.weights.safetensors"));
    let saved = read_tensors(&tmp.path().join("ref.safetensors"));
    let ours = &saved["encoders.1.e2.1.running_var"];
    assert_eq!(
        max_abs_diff(ours, &state["ndsm_encoder.e2.1.running_var"]),
        0.0
    );
    assert_eq!(
        max_abs_diff(
            &saved["students.m1.fuse.conv_res1.1.running_mean"],
            &state["miss_ndsm_fuse.conv_res1.1.running_mean"]
        ),
        0.0
    );
}

#[test]
fn import_torch_lists_every_bad_tensor_and_writes_nothing() {
    let Some(dir) = reference_dir() else { return };
    let mut state: Vec<(String, Tensor)> =
        Tensor::read_safetensors(dir.join("small.weights.safetensors")).unwrap();
    let removed = "full_fuse.unify.weight";
    let renamed = "miss_rgb_classwise_attention.class_queries";
    let reshaped = "rgb_encoder.e3.0.weight";
    state.retain(|(n, _)| n != removed);
    for (n, t) in state.iter_mut() {
        if n == renamed {
            *n = "miss_rgb_classwise_attention.class_querys".into();
        }
        if n == reshaped {
            *t = t.reshape([-1]);
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let weights = tmp.path().join("broken.safetensors");
    Tensor::write_safetensors(&state, &weights).unwrap();
    let config =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/models/reference-small.yaml");
    let out = tmp.path().join("out/ckpt");
    let err = format!("{:#}", import_torch(&weights, &config, &out).unwrap_err());
    assert!(
        err.contains(&format!("{removed} (for teacher.fuse.unify.weight)")),
        "{err}"
    );
    assert!(err.contains(renamed), "{err}"); // reported missing
    assert!(
        err.contains("miss_rgb_classwise_attention.class_querys"),
        "{err}"
    ); // unexpected
    assert!(
        err.contains(&format!("{reshaped}: file [8192], model [32, 16, 4, 4]")),
        "{err}"
    );
    assert!(
        err.contains("missing (2)")
            && err.contains("unexpected (1)")
            && err.contains("wrong shape (1)"),
        "{err}"
    );
    assert!(!out.with_extension("safetensors").exists() && !out.with_extension("yaml").exists());
    assert!(!tmp.path().join("out").exists() || files_in(&tmp.path().join("out")).is_empty());
    assert_eq!(files_in(tmp.path()), ["broken.safetensors"]);

    // A three-modality configuration is refused by name.
    let cfg3 = tmp.path().join("three.yaml");
    std::fs::write(
        &cfg3,
        serde_yaml::to_string(&small_config(&[3, 1, 1], 5)).unwrap(),
    )
    .unwrap();
    let err = import_torch(&dir.join("small.weights.safetensors"), &cfg3, &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("modalities") && err.contains("two"), "{err}");
}

#[test]
fn model_config_from_an_experiment_file_names_bad_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("exp.yaml");
    let model = serde_yaml::to_string(&small_config(&[3, 1], 5))
        .unwrap()
        .replace('\n', "\n  ");
    std::fs::write(&path, format!("name: x\ndata: {{}}\nmodel:\n  {model}")).unwrap();
    assert_eq!(read_model_config(&path).unwrap(), small_config(&[3, 1], 5));
    std::fs::write(&path, "model:\n  base_widht: 8\n").unwrap();
    let err = read_model_config(&path).unwrap_err().to_string();
    assert!(
        err.contains("base_widht") && err.contains("exp.yaml"),
        "{err}"
    );
    std::fs::write(&path, "num_classes: 5\ncrop: [64, 64]\nmodalities: [{name: a, channels: 1}, {name: b, channels: 1}]\nscenarios: [[c]]\n").unwrap();
    let err = format!("{:#}", read_model_config(&path).unwrap_err());
    assert!(
        err.contains("scenarios[0]") && err.contains("\"c\""),
        "{err}"
    );
}

#[test]
fn a_sidecar_or_model_file_that_gives_a_key_twice_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = small_config(&[3, 1], 4);
    let data = dis2::data::config::DataConfig::default();
    let path = untrained_checkpoint(tmp.path(), "ck", &cfg, &data, 1);
    let sidecar = tmp.path().join("ck.yaml");
    let text = std::fs::read_to_string(&sidecar).unwrap();
    let first = 1 + text
        .lines()
        .position(|l| l.starts_with("version:"))
        .unwrap();
    let again = 1 + text.lines().count();
    std::fs::write(&sidecar, format!("{text}version: 1\n")).unwrap();
    let err = format!("{:#}", checkpoint::read_info(&path).unwrap_err());
    let want = format!(
        "key `version` is given twice: on line {first} (column 1) and line {again} (column 1)"
    );
    assert!(err.contains("ck.yaml") && err.contains(&want), "{err}");

    let model = tmp.path().join("model.yaml");
    std::fs::write(
        &model,
        "model:\n  num_classes: 5\n  crop: [64, 64]\n  num_classes: 6\n",
    )
    .unwrap();
    let err = format!("{:#}", read_model_config(&model).unwrap_err());
    assert!(
        err.contains("model.yaml")
            && err.contains("key `model.num_classes` is given twice: on line 2 (column 3) and line 4 (column 3)"),
        "{err}"
    );
}

#[test]
fn checkpoint_round_trip_keeps_every_variable_and_batchnorm_stats() {
    tch::manual_seed(1);
    let cfg = small_config(&[3, 1], 4);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Dis2Net::new(&vs.root(), &cfg).unwrap();
    // One training-mode forward moves the BatchNorm running statistics away from 0 / 1.
    let x = [
        Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu)),
        Tensor::randn([2, 1, 64, 64], (Kind::Float, Device::Cpu)),
    ];
    let s = Scenario::new(vec![1], 2).unwrap();
    tch::no_grad(|| net.forward_train(&s, &[Some(&x[0]), Some(&x[1])], true)).unwrap();
    let mean = vs.variables()["encoders.0.e2.1.running_mean"]
        .abs()
        .sum(Kind::Float)
        .double_value(&[]);
    assert!(mean > 0.0);

    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ck.safetensors");
    let mut info = CheckpointInfo::new(&cfg).unwrap();
    info.class_names = Some(vec!["a".into(), "b".into(), "c".into(), "d".into()]);
    info.metadata
        .insert("step".into(), serde_yaml::Value::from(7));
    checkpoint::save(&path, &vs, &info).unwrap();
    assert_eq!(files_in(tmp.path()), ["ck.safetensors", "ck.yaml"]);

    tch::manual_seed(2);
    let loaded = checkpoint::load_as(&tmp.path().join("ck"), &cfg, Device::Cpu).unwrap();
    assert_eq!(loaded.info, info);
    let a = vs.variables();
    let b = loaded.vs.variables();
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert_eq!(max_abs_diff(t, &b[name]), 0.0, "{name}");
    }
    let student = Route::Student(s.clone());
    let p1 = tch::no_grad(|| net.forward_route(&student, &[Some(&x[0]), None], false)).unwrap();
    let p2 = tch::no_grad(|| {
        loaded
            .net
            .forward_route(&student, &[Some(&x[0]), None], false)
    })
    .unwrap();
    assert_eq!(max_abs_diff(&p1, &p2), 0.0);

    // Another model: the error names each key that differs.
    let mut other = cfg.clone();
    other.base_width = 16;
    other.crop = [64, 32];
    other.scenarios = Some(vec![vec!["rgb".into()]]);
    let err = checkpoint::load_as(&path, &other, Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("base_width: checkpoint has 8, configuration has 16"),
        "{err}"
    );
    assert!(
        err.contains("crop: checkpoint has [64, 64], configuration has [64, 32]"),
        "{err}"
    );
    assert!(
        err.contains("scenarios: checkpoint has [rgb], [ndsm], configuration has [rgb]"),
        "{err}"
    );

    // Weights into a model of another shape: every differing variable named.
    let vs6 = nn::VarStore::new(Device::Cpu);
    let _net6 = Dis2Net::new(&vs6.root(), &small_config(&[3, 1], 6)).unwrap();
    let err = checkpoint::load_weights(&vs6, &path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing (") && err.contains("teacher.decoder.seg_d4_layers.5.weight"),
        "{err}"
    );
    assert!(
        err.contains("wrong shape (")
            && err.contains(
                "teacher.decoder.final_conv.weight: file [4, 8, 1, 1], model [6, 8, 1, 1]"
            ),
        "{err}"
    );
}

#[test]
fn import_torch_command_line() {
    let Some(dir) = reference_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let config =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/models/reference-small.yaml");
    let out = tmp.path().join("cli");
    let run = |weights: &Path| {
        dis2(&[
            "import-torch",
            "--weights",
            s(weights),
            "--config",
            s(&config),
            "--out",
            s(&out),
        ])
    };
    let bad = run(&tmp.path().join("nope.safetensors"));
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("--weights") && stderr.contains("nope.safetensors"),
        "{stderr}"
    );
    assert!(files_in(tmp.path()).is_empty());

    ok(&run(&dir.join("small.weights.safetensors")));
    assert_eq!(files_in(tmp.path()), ["cli.safetensors", "cli.yaml"]);
    let info = checkpoint::read_info(&out).unwrap();
    assert_eq!(info.model.scenario_list().unwrap().len(), 2);
}
