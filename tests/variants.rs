//! The ablation variants of the network (`model.decoder: plain`, the "no CFLM" one;
//! `model.fusion: level4`, the "no HF" one; both) on a three-modality model, and the
//! single-modality model without students.

mod common;

use common::*;
use dis2::checkpoint::{self, CheckpointInfo};
use dis2::model::config::{DecoderKind, FusionKind, ModelConfig};
use dis2::model::{Dis2Net, Route, Scenario};
use dis2::train::dlkd::KdWeights;
use dis2::train::joint_backward::{forward_joint, JointBackward};
use dis2::train::objective::{
    distill_objective, joint_objective, masked_target, teacher_objective, Target,
};
use tch::{nn, Device, Kind, Tensor};

const B: i64 = 2;
const S: i64 = 32;
const K: i64 = 5;
const CH: [i64; 3] = [4, 1, 1];

/// The three ablation variants.
const VARIANTS: [(DecoderKind, FusionKind); 3] = [
    (DecoderKind::Plain, FusionKind::Hierarchical),
    (DecoderKind::ClassWise, FusionKind::Level4),
    (DecoderKind::Plain, FusionKind::Level4),
];

fn config(channels: &[i64], decoder: DecoderKind, fusion: FusionKind) -> ModelConfig {
    let mut cfg = small_config(channels, K);
    cfg.crop = [S, S];
    cfg.decoder = decoder;
    cfg.fusion = fusion;
    cfg
}

/// Random labels with every pixel counted and no class weights.
fn target() -> Target {
    let labels = Tensor::randint(K, [B, S, S], (Kind::Int64, Device::Cpu));
    masked_target(&labels, 255, K, None).unwrap()
}

fn modality_names(cfg: &ModelConfig) -> Vec<String> {
    cfg.modalities.iter().map(|m| m.name.clone()).collect()
}

fn assert_probabilities(p: &Tensor, what: &str) {
    assert_eq!(p.size(), [B, K, S, S], "{what}");
    let sums = p.sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    assert!(
        (sums - 1.0).abs().max().double_value(&[]) < 1e-5,
        "{what}: not probabilities"
    );
}

/// Shape of a variable by name, `None` when the model has no such variable.
fn shape(vs: &nn::VarStore, name: &str) -> Option<Vec<i64>> {
    vs.variables().get(name).map(|t| t.size())
}

fn assert_reached_exactly(vs: &nn::VarStore, expected: impl Fn(&str) -> bool, what: &str) {
    let (yes, no) = reached(vs);
    let wrong: Vec<&String> = yes.iter().filter(|n| !expected(n)).collect();
    let unreached: Vec<&String> = no.iter().filter(|n| expected(n)).collect();
    assert!(wrong.is_empty(), "{what}: gradient reached {wrong:?}");
    assert!(
        unreached.is_empty(),
        "{what}: gradient did not reach {unreached:?}"
    );
}

#[test]
fn variants_have_the_parameters_of_their_parts() {
    let w = 8;
    let (default_vs, _) = build(&config(
        &CH,
        DecoderKind::ClassWise,
        FusionKind::Hierarchical,
    ));
    for (decoder, fusion) in VARIANTS {
        let (vs, _) = build(&config(&CH, decoder, fusion));
        let what = format!("{decoder:?}/{fusion:?}");
        for branch in ["teacher", "students.m0_2"] {
            let has = |n: &str| shape(&vs, &format!("{branch}.{n}"));
            let plain = decoder == DecoderKind::Plain;
            assert_eq!(has("attention.class_queries").is_none(), plain, "{what}");
            assert_eq!(
                has("decoder.seg_d4_layers.0.weight").is_none(),
                plain,
                "{what}"
            );
            if plain {
                // One 1x1 head to K classes per scale, ordinary channels on the path.
                assert_eq!(has("decoder.seg_d4.weight"), Some(vec![K, 8 * w, 1, 1]));
                assert_eq!(has("decoder.seg_d1.weight"), Some(vec![K, w, 1, 1]));
                assert_eq!(
                    has("decoder.e1_conv.conv.weight"),
                    Some(vec![w, 2 * w, 3, 3])
                );
                assert_eq!(has("decoder.final_conv.weight"), Some(vec![K, w, 1, 1]));
            }
            let level4 = fusion == FusionKind::Level4;
            for part in [
                "fuse.conv_fusion_e1.fusion_layer.0.conv.weight",
                "fuse.conv_res2.0.weight",
                "fuse.pool_e3.proj.weight",
            ] {
                assert_eq!(has(part).is_none(), level4, "{what}: {part}");
            }
            // The level-4 transformer, the unify and the DLKD pools are there in every variant.
            assert_eq!(has("fuse.unify.weight"), Some(vec![8 * w, 3 * 8 * w, 1, 1]));
            assert_eq!(has("fuse.pos_2"), Some(vec![1, (S / 16) * (S / 16), 8 * w]));
            assert!(has("fuse_pool.attn_pools.0.mlp.0.weight").is_some());
        }
        // Nothing else changes: the encoders are the default network's, shape for shape.
        for (name, t) in default_vs.variables() {
            if name.starts_with("encoders.") {
                assert_eq!(shape(&vs, &name), Some(t.size()), "{what}: {name}");
            }
        }
    }
}

#[test]
fn every_variant_predicts_probabilities_in_every_scenario() {
    let x = random_inputs(&CH, B, S);
    let all: Vec<Option<&Tensor>> = x.iter().map(Some).collect();
    for (decoder, fusion) in VARIANTS {
        let (_vs, net) = build(&config(&CH, decoder, fusion));
        assert_eq!(net.scenarios().len(), 6);
        let what = format!("{decoder:?}/{fusion:?}");
        tch::no_grad(|| {
            assert_probabilities(
                &net.forward_route(&Route::Teacher, &all, false).unwrap(),
                &format!("{what} teacher"),
            );
            for s in net.scenarios() {
                let given: Vec<Option<&Tensor>> = (0..3)
                    .map(|i| if s.is_missing(i) { None } else { Some(&x[i]) })
                    .collect();
                let p = net
                    .forward_route(&Route::Student(s.clone()), &given, false)
                    .unwrap();
                assert_probabilities(&p, &format!("{what} {s:?}"));
            }
            // The CFLM's attention maps exist only where there is a CFLM.
            let maps = net.attention_maps(None, &all);
            match decoder {
                DecoderKind::ClassWise => {
                    assert_eq!(maps.unwrap().size(), [B, K, S / 16, S / 16], "{what}")
                }
                DecoderKind::Plain => {
                    let e = maps.unwrap_err().to_string();
                    assert!(e.contains("model.decoder: plain"), "{e}");
                }
            }
        });
    }
}

#[test]
fn variants_never_read_missing_inputs() {
    let x = random_inputs(&CH, B, S);
    let nan: Vec<Tensor> = CH
        .iter()
        .map(|&c| Tensor::full([B, c, S, S], f64::NAN, (Kind::Float, Device::Cpu)))
        .collect();
    for (decoder, fusion) in VARIANTS {
        let (_vs, net) = build(&config(&CH, decoder, fusion));
        tch::no_grad(|| {
            for s in net.scenarios() {
                let absent: Vec<Option<&Tensor>> = (0..3)
                    .map(|i| if s.is_missing(i) { None } else { Some(&x[i]) })
                    .collect();
                let poisoned: Vec<Option<&Tensor>> = (0..3)
                    .map(|i| Some(if s.is_missing(i) { &nan[i] } else { &x[i] }))
                    .collect();
                let a = net
                    .forward_route(&Route::Student(s.clone()), &absent, false)
                    .unwrap();
                let b = net
                    .forward_route(&Route::Student(s.clone()), &poisoned, false)
                    .unwrap();
                assert!(
                    b.isfinite().all().int64_value(&[]) == 1,
                    "{decoder:?}/{fusion:?} {s:?}: NaN leaked into the output"
                );
                assert_eq!(max_abs_diff(&a, &b), 0.0, "{decoder:?}/{fusion:?} {s:?}");
            }
        });
    }
}

#[test]
fn variant_training_forwards_are_finite_and_reach_their_parameters() {
    let x = random_inputs(&CH, B, S);
    let all: Vec<Option<&Tensor>> = x.iter().map(Some).collect();
    let target = target();
    let s = Scenario::new(vec![2], 3).unwrap();
    let key = format!("students.{}.", s.key());
    for (decoder, fusion) in VARIANTS {
        let what = format!("{decoder:?}/{fusion:?}");
        let cfg = config(&CH, decoder, fusion);

        // Joint training forward: teacher and this student, the full objective.
        let (vs, net) = build(&cfg);
        // The trainer's choice of backward for this model (side by side: small, on the CPU).
        let strategy = JointBackward::choose(Device::Cpu, &cfg, B);
        let step = forward_joint(&net, &s, &all, true, strategy).unwrap();
        let out = &step.outputs;
        assert_eq!(out.student.scale_preds.len(), 4, "{what}");
        for p in out
            .teacher
            .scale_preds
            .iter()
            .chain(&out.student.scale_preds)
        {
            assert_probabilities(p, &what);
        }
        assert_eq!(out.student.penultimate.size(), [B, 8, S, S], "{what}");
        assert_eq!(out.student.logits.size(), [B, K, S, S], "{what}");
        let terms = joint_objective(
            &step,
            &modality_names(&cfg),
            &target,
            KdWeights::both(5.0),
            1.0,
        );
        let term = |name: &str| terms.term(name).unwrap();
        for t in [
            &terms.total,
            term("kd_features"),
            term("kd_logits"),
            term("orth"),
            term("student_scales"),
        ] {
            assert!(t.double_value(&[]).is_finite(), "{what}: {t:?}");
        }
        assert!(
            term("kd_features").double_value(&[]) > 0.0
                && term("kd_logits").double_value(&[]) > 0.0,
            "{what}: no DLKD term"
        );
        terms.backward(1.0).unwrap();
        // The teacher's DLKD pools only ever see detached features: nothing trains them.
        assert_reached_exactly(
            &vs,
            |n| {
                !n.starts_with("teacher.fuse_pool.")
                    && (!n.starts_with("students.") || n.starts_with(&key))
            },
            &format!("{what} forward_train"),
        );

        // Distillation against a frozen teacher: only this student's parameters train.
        let (vs, net) = build(&cfg);
        let out = net.forward_distill(&s, &all, true).unwrap();
        let objective = distill_objective(&out, &target, KdWeights::both(1.0), 1.0);
        let total = &objective.total;
        assert!(total.double_value(&[]).is_finite(), "{what}: distill loss");
        objective.backward(1.0).unwrap();
        assert_reached_exactly(
            &vs,
            |n| n.starts_with(&key),
            &format!("{what} forward_distill"),
        );
    }
}

#[test]
fn variant_checkpoints_round_trip_and_refuse_another_variant() {
    let dir = tempfile::tempdir().unwrap();
    let x = random_inputs(&CH, B, S);
    let all: Vec<Option<&Tensor>> = x.iter().map(Some).collect();

    // The defaults are not written: sidecars of the reference network read as before.
    let default = config(&CH, DecoderKind::ClassWise, FusionKind::Hierarchical);
    let (vs, _) = build(&default);
    let path = dir.path().join("default");
    checkpoint::save(&path, &vs, &CheckpointInfo::new(&default).unwrap()).unwrap();
    let sidecar = std::fs::read_to_string(dir.path().join("default.yaml")).unwrap();
    assert!(
        !sidecar.contains("decoder") && !sidecar.contains("fusion"),
        "{sidecar}"
    );

    let plain = config(&CH, DecoderKind::Plain, FusionKind::Level4);
    let (vs, net) = build(&plain);
    let path = dir.path().join("plain");
    checkpoint::save(&path, &vs, &CheckpointInfo::new(&plain).unwrap()).unwrap();
    let sidecar = std::fs::read_to_string(dir.path().join("plain.yaml")).unwrap();
    assert!(
        sidecar.contains("decoder: plain") && sidecar.contains("fusion: level4"),
        "{sidecar}"
    );
    let loaded = checkpoint::load(&path, Device::Cpu).unwrap();
    assert!(checkpoint::config_differences(loaded.net.config(), &plain).is_empty());
    assert_eq!(
        (loaded.net.config().decoder, loaded.net.config().fusion),
        (DecoderKind::Plain, FusionKind::Level4)
    );
    tch::no_grad(|| {
        let a = net.forward_route(&Route::Teacher, &all, false).unwrap();
        let b = loaded
            .net
            .forward_route(&Route::Teacher, &all, false)
            .unwrap();
        assert_eq!(max_abs_diff(&a, &b), 0.0);
    });

    let mut classwise = plain.clone();
    classwise.decoder = DecoderKind::ClassWise;
    let err = checkpoint::load_as(&path, &classwise, Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("decoder: checkpoint has plain, configuration has classwise"),
        "{err}"
    );
    assert!(!err.contains("fusion"), "{err}");
    let mut hierarchical = plain.clone();
    hierarchical.fusion = FusionKind::Hierarchical;
    let diffs = checkpoint::network_differences(&plain, &hierarchical);
    assert_eq!(
        diffs,
        ["fusion: checkpoint has level4, configuration has hierarchical"]
    );

    // The keys' YAML spelling.
    let yaml = "num_classes: 5\ncrop: [32, 32]\nmodalities: [{name: a, channels: 1}, \
                {name: b, channels: 1}]\ndecoder: plain\nfusion: level4\n";
    let cfg: ModelConfig = serde_yaml::from_str(yaml).unwrap();
    assert_eq!(
        (cfg.decoder, cfg.fusion),
        (DecoderKind::Plain, FusionKind::Level4)
    );
    let err = serde_yaml::from_str::<ModelConfig>(&yaml.replace("plain", "unet"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("decoder") && err.contains("classwise"),
        "{err}"
    );
}

#[test]
fn a_single_modality_model_is_a_teacher_without_students() {
    let x = random_inputs(&[4], B, S);
    let target = target();
    for (decoder, fusion) in [
        (DecoderKind::ClassWise, FusionKind::Hierarchical),
        (DecoderKind::Plain, FusionKind::Level4),
    ] {
        let mut cfg = config(&[4], decoder, fusion);
        cfg.scenarios = Some(vec![]);
        let (vs, net) = build(&cfg);
        assert!(net.scenarios().is_empty());
        // HF over one slot: the level 1-3 fusion convolutions read C channels, unify 8w.
        if fusion == FusionKind::Hierarchical {
            assert_eq!(
                shape(
                    &vs,
                    "teacher.fuse.conv_fusion_e1.fusion_layer.0.conv.weight"
                ),
                Some(vec![8, 8, 1, 1])
            );
        }
        assert_eq!(
            shape(&vs, "teacher.fuse.unify.weight"),
            Some(vec![64, 64, 1, 1])
        );
        tch::no_grad(|| {
            let p = net
                .forward_route(&Route::Teacher, &[Some(&x[0])], false)
                .unwrap();
            assert_probabilities(&p, "single modality");
            let given = Route::of_given(&[true], 1).unwrap();
            let q = net.forward_route(&given, &[Some(&x[0])], false).unwrap();
            assert_eq!(max_abs_diff(&p, &q), 0.0);
        });
        let err = Route::of_given(&[false], 1).unwrap_err().to_string();
        assert!(err.contains("at least one modality available"), "{err}");
        let out = net.forward_train_teacher(&[Some(&x[0])], true).unwrap();
        assert_eq!(out.aux_preds.len(), 1);
        let objective = teacher_objective(&out, &modality_names(&cfg), &target);
        let total = &objective.total;
        assert!(total.double_value(&[]).is_finite());
        objective.backward(1.0).unwrap();
        assert_reached_exactly(
            &vs,
            |n| !n.starts_with("teacher.fuse_pool."),
            "single-modality teacher",
        );
    }

    // Students need a second modality: the error names the keys.
    for scenarios in [None, Some(vec![vec!["rgb".to_string()]])] {
        let mut cfg = config(&[4], DecoderKind::ClassWise, FusionKind::Hierarchical);
        cfg.scenarios = scenarios.clone();
        let vs = nn::VarStore::new(Device::Cpu);
        let err = Dis2Net::new(&vs.root(), &cfg).unwrap_err().to_string();
        assert!(
            err.starts_with("modalities: a single modality (rgb)") && err.contains("scenarios: []"),
            "{scenarios:?}: {err}"
        );
    }
    let mut cfg = config(&[4], DecoderKind::ClassWise, FusionKind::Hierarchical);
    cfg.modalities.clear();
    cfg.scenarios = Some(vec![]);
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.starts_with("modalities: need at least one"), "{err}");
}
