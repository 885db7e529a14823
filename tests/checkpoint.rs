//! Checkpoints, `dis2 import-torch` and `dis2 export-torch`: round trips, BatchNorm statistics,
//! and errors that name what does not fit without writing anything.

mod common;

use common::*;
use dis2::checkpoint::{self, CheckpointInfo};
use dis2::export_torch::export_torch;
use dis2::import_torch::{import_torch, read_model_config};
use dis2::model::config::{DecoderKind, FusionKind, ModelConfig};
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

/// An untrained model of `cfg` with every variable (BatchNorm statistics included) drawn at
/// random, so that a wrong name or a transposed tensor shows, saved as the checkpoint directory
/// `dir/name` (`model.safetensors` and `model.yaml` inside).
fn random_checkpoint(dir: &Path, name: &str, cfg: &ModelConfig) -> std::path::PathBuf {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    Dis2Net::new(&vs.root(), cfg).unwrap();
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            let r = t.randn_like();
            t.copy_(&if name.ends_with("running_var") {
                r.abs()
            } else {
                r
            });
        }
    });
    let path = dir.join(name);
    std::fs::create_dir_all(&path).unwrap();
    checkpoint::save(&path, &vs, &CheckpointInfo::new(cfg).unwrap()).unwrap();
    path
}

#[test]
fn export_torch_then_import_gives_every_variable_bit_for_bit() {
    let mut cfg = small_config(&[4, 1], 6);
    cfg.crop = [64, 32];
    cfg.modalities[0].name = "optical".into();
    cfg.modalities[1].name = "dsm".into();
    let tmp = tempfile::tempdir().unwrap();
    let original = random_checkpoint(tmp.path(), "original", &cfg);
    let exported = tmp.path().join("torch/weights.safetensors");
    let done = export_torch(&original, &exported).unwrap();
    assert_eq!(files_in(&tmp.path().join("torch")), ["weights.safetensors"]);
    assert!(
        done.constructor.contains(
            "DLKD_ver4(num_classes=6, image_size=(64, 32), rgb_encoder_channels=4, \
             ndsm_encoder_channels=1)"
        ) && done.constructor.contains("= 8, 32, 8, 1"),
        "{}",
        done.constructor
    );
    let meta = metadata(&exported);
    assert_eq!(meta["rgb_modality"], "optical");
    assert_eq!(meta["ndsm_modality"], "dsm");
    let mut back = reference_config(&exported);
    back.modalities = cfg.modalities.clone();
    assert_eq!(back, cfg);

    let config = tmp.path().join("model.yaml");
    std::fs::write(&config, serde_yaml::to_string(&cfg).unwrap()).unwrap();
    let reimported = tmp.path().join("reimported");
    import_torch(&exported, &config, &reimported).unwrap();
    let a = read_tensors(&original.join("model.safetensors"));
    let b = read_tensors(&reimported.with_extension("safetensors"));
    let mut names: Vec<&String> = a.keys().collect();
    names.sort();
    assert_eq!(names, {
        let mut n: Vec<&String> = b.keys().collect();
        n.sort();
        n
    });
    for name in names {
        let (x, y) = (&a[name], &b[name]);
        assert_eq!(x.kind(), y.kind(), "{name}");
        assert!(x.equal(y), "{name} differs after export and import");
    }
}

#[test]
fn export_torch_writes_exactly_the_reference_state_dict() {
    let Some(dir) = reference_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let config =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/models/reference-small.yaml");
    let weights = dir.join("small.weights.safetensors");
    import_torch(&weights, &config, &tmp.path().join("ref")).unwrap();
    let out = tmp.path().join("back.safetensors");
    let done = export_torch(&tmp.path().join("ref"), &out).unwrap();
    let want = read_tensors(&weights);
    let got = read_tensors(&out);
    assert_eq!(done.tensors, want.len());
    let mut names: Vec<&String> = want.keys().collect();
    names.sort();
    let mut ours: Vec<&String> = got.keys().collect();
    ours.sort();
    assert_eq!(ours, names, "the key sets differ");
    // What the reference forward never reads comes back as zeros; everything else as it was.
    let unread = |n: &str| {
        n.ends_with(".num_batches_tracked")
            || n.ends_with(".query")
            || n.contains("_classwise_decoder.seg_d4.")
            || n.contains("_classwise_decoder.e1_conv_up.")
    };
    for name in names {
        let (w, g) = (&want[name], &got[name]);
        assert_eq!((g.kind(), g.size()), (w.kind(), w.size()), "{name}");
        if unread(name) {
            assert!(g.equal(&g.zeros_like()), "{name} is not zero");
        } else {
            assert!(g.equal(w), "{name} differs");
        }
    }
    let (meta, want_meta) = (metadata(&out), metadata(&weights));
    for (key, value) in &want_meta {
        if key != "batch" {
            assert_eq!(meta.get(key), Some(value), "metadata {key}");
        }
    }
}

#[test]
fn export_torch_refuses_what_the_reference_cannot_hold_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out/w.safetensors");
    let refused = |cfg: &ModelConfig, name: &str| {
        let ck = random_checkpoint(tmp.path(), name, cfg);
        let err = format!("{:#}", export_torch(&ck, &out).unwrap_err());
        assert!(
            err.contains(&format!("--checkpoint {}", ck.display()))
                && err.contains("cannot hold this checkpoint"),
            "{err}"
        );
        assert!(
            !tmp.path().join("out").exists(),
            "{name}: something written"
        );
        err
    };
    let err = refused(&small_config(&[3, 1, 1], 5), "three");
    assert!(
        err.contains(
            "modalities: the reference has exactly two (its rgb and ndsm), this model has 3"
        ),
        "{err}"
    );
    let mut ablation = small_config(&[3, 1], 5);
    ablation.decoder = DecoderKind::Plain;
    ablation.fusion = FusionKind::Level4;
    let err = refused(&ablation, "ablation");
    assert!(
        err.contains("fusion: the reference has only `hierarchical` (HF), this model has `level4`")
            && err.contains(
                "decoder: the reference has only `classwise` (CFLM), this model has `plain`"
            ),
        "{err}"
    );
    let mut teacher = small_config(&[3, 1], 5);
    teacher.scenarios = Some(vec![]);
    let err = refused(&teacher, "teacher");
    assert!(
        err.contains("scenarios:") && err.contains("none for rgb missing and ndsm missing"),
        "{err}"
    );
    let mut one_student = small_config(&[3, 1], 5);
    one_student.scenarios = Some(vec![vec!["ndsm".into()]]);
    let err = refused(&one_student, "one-student");
    assert!(
        err.contains("none for rgb missing (`dis2 distill --joint`"),
        "{err}"
    );

    // The checkpoint's own weights are not overwritten.
    let named = tmp.path().join("named");
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = small_config(&[3, 1], 5);
    Dis2Net::new(&vs.root(), &cfg).unwrap();
    checkpoint::save(&named, &vs, &CheckpointInfo::new(&cfg).unwrap()).unwrap();
    let own = named.with_extension("safetensors");
    let before = std::fs::read(&own).unwrap();
    let err = export_torch(&named, &own).unwrap_err().to_string();
    assert!(err.contains("checkpoint's own"), "{err}");
    assert_eq!(std::fs::read(&own).unwrap(), before);

    let err = format!(
        "{:#}",
        export_torch(&tmp.path().join("nowhere"), &out).unwrap_err()
    );
    assert!(
        err.contains("--checkpoint") && err.contains("nowhere"),
        "{err}"
    );
}

#[test]
fn export_torch_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = random_checkpoint(tmp.path(), "ck", &small_config(&[3, 1], 5));
    let out = tmp.path().join("w.safetensors");
    let stdout = ok(&dis2(&[
        "export-torch",
        "--checkpoint",
        s(&ck),
        "--out",
        s(&out),
    ]));
    assert!(
        stdout.contains("load_state_dict") && stdout.contains("DLKD_ver4("),
        "{stdout}"
    );
    assert!(out.is_file());
    let bad = dis2(&[
        "export-torch",
        "--checkpoint",
        s(&tmp.path().join("nope")),
        "--out",
        s(&tmp.path().join("x.safetensors")),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(!tmp.path().join("x.safetensors").exists());
}
