//! A three-modality model (4 + 1 + 1 bands): every scenario runs, missing inputs are never read,
//! gradients reach exactly the parameters a scenario uses, and bad inputs are clear errors.
//!
//! The tests of this file run one at a time (`common::serial`): with two of them running
//! libtorch's transposed convolution backward passes (the auxiliary decoders) at once in one
//! process, an auxiliary decoder's bias gradient came out different now and then, which the
//! comparisons here would misread. (Training itself never runs two of those at once: see
//! `dis2::train::joint_backward`.)

mod common;

use common::*;
use dis2::model::losses::seg_loss;
use dis2::model::{Dis2Net, Route, Scenario};
use dis2::train::dlkd::{dlkd, orthogonality, KdWeights};
use dis2::train::joint_backward::{forward_joint, JointBackward, JointForward};
use dis2::train::objective::{joint_objective, masked_target, Objective, Target};
use tch::{nn, Device, Kind, Tensor};

const B: i64 = 2;

/// Random inputs and a random target of 5 classes at 64x64 (every pixel counted, no class
/// weights).
fn inputs_and_target(channels: &[i64]) -> (Vec<Tensor>, Target) {
    let labels = Tensor::randint(5, [B, 64, 64], (Kind::Int64, Device::Cpu));
    (
        random_inputs(channels, B, 64),
        masked_target(&labels, 255, 5, None).unwrap(),
    )
}

/// The joint objective as `dis2 distill --joint` computes it (KD weight 5, orthogonality 1).
fn objective(net: &Dis2Net, step: &JointForward, target: &Target) -> Objective {
    let names: Vec<String> = net
        .config()
        .modalities
        .iter()
        .map(|m| m.name.clone())
        .collect();
    joint_objective(step, &names, target, KdWeights::both(5.0), 1.0)
}

/// The backward strategy the trainer chooses for `net` on the CPU.
fn strategy(net: &Dis2Net) -> JointBackward {
    JointBackward::choose(Device::Cpu, net.config(), B)
}

#[test]
fn three_modalities_every_scenario_runs_with_right_shapes() {
    let _serial = serial();
    let ch = [4, 1, 1];
    let (_vs, net) = build(&small_config(&ch, 5));
    assert_eq!(net.scenarios().len(), 6);
    let x = random_inputs(&ch, B, 64);
    let all: Vec<Option<&Tensor>> = x.iter().map(Some).collect();
    let labels = Tensor::randint(5, [B, 64, 64], (Kind::Int64, Device::Cpu));
    let objective_target = masked_target(&labels, 255, 5, None).unwrap();
    let target = &objective_target.onehot;
    tch::no_grad(|| {
        let t = net.forward_route(&Route::Teacher, &all, false).unwrap();
        assert_eq!(t.size(), [B, 5, 64, 64]);
        let sums = t.sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
        assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-5);
        for s in net.scenarios() {
            let given: Vec<Option<&Tensor>> = (0..3)
                .map(|i| if s.is_missing(i) { None } else { Some(&x[i]) })
                .collect();
            let p = net
                .forward_route(&Route::Student(s.clone()), &given, false)
                .unwrap();
            assert_eq!(p.size(), [B, 5, 64, 64], "{s:?}");
            let flags: Vec<bool> = given.iter().map(Option::is_some).collect();
            let route = Route::of_given(&flags, 3).unwrap();
            assert_eq!(
                max_abs_diff(&p, &net.forward_route(&route, &given, false).unwrap()),
                0.0
            );
            let step = forward_joint(&net, s, &all, false, strategy(&net)).unwrap();
            let out = &step.outputs;
            assert_eq!(out.aux_preds.len(), 3);
            for p in out
                .aux_preds
                .iter()
                .chain(&out.student.scale_preds)
                .chain([&out.teacher.pred, &out.student.pred])
            {
                assert_eq!(p.size(), [B, 5, 64, 64]);
            }
            assert_eq!(out.student.penultimate.size(), [B, 8, 64, 64]);
            assert_eq!(out.student.logits.size(), [B, 5, 64, 64]);
            let terms = objective(&net, &step, &objective_target);
            let term = |name: &str| terms.term(name).unwrap();
            let aux: Vec<&Tensor> = (terms.terms.iter())
                .filter(|(name, _)| name.starts_with("aux_"))
                .map(|(_, t)| t)
                .collect();
            assert_eq!(aux.len(), 3);
            // The batched losses equal the losses one by one, and the total is their sum.
            let close = |a: &Tensor, b: &Tensor| (a - b).abs().double_value(&[]) < 1e-5;
            assert!(close(term("teacher"), &seg_loss(&out.teacher.pred, target)));
            assert!(close(term("student"), &seg_loss(&out.student.pred, target)));
            assert!(close(aux[2], &seg_loss(&out.aux_preds[2], target)));
            let scales: f64 = out
                .student
                .scale_preds
                .iter()
                .map(|p| seg_loss(p, target).double_value(&[]))
                .sum();
            assert!((term("student_scales").double_value(&[]) - scales).abs() < 1e-5);
            let parts = [
                "teacher",
                "student",
                "teacher_scales",
                "student_scales",
                "orth",
            ]
            .map(term)
            .iter()
            .map(|t| t.double_value(&[]))
            .sum::<f64>()
                + aux.iter().map(|t| t.double_value(&[])).sum::<f64>()
                + 5.0 * term("kd_features").double_value(&[])
                + 5.0 * term("kd_logits").double_value(&[]);
            assert!((terms.total.double_value(&[]) - parts).abs() < 1e-4);
            let total = terms.total.double_value(&[]);
            assert!(total.is_finite() && total > 0.0, "{s:?}: {total}");
            assert!(
                orthogonality(&out.distill).double_value(&[]) >= 0.0
                    && dlkd(out).total().double_value(&[]) > 0.0
            );
        }
    });
}

#[test]
fn missing_modalities_are_never_read() {
    let _serial = serial();
    let ch = [4, 1, 1];
    let (_vs, net) = build(&small_config(&ch, 5));
    let x = random_inputs(&ch, B, 64);
    let nan: Vec<Tensor> = ch
        .iter()
        .map(|&c| Tensor::full([B, c, 64, 64], f64::NAN, (Kind::Float, Device::Cpu)))
        .collect();
    tch::no_grad(|| {
        for s in net.scenarios() {
            let absent: Vec<Option<&Tensor>> = (0..3)
                .map(|i| if s.is_missing(i) { None } else { Some(&x[i]) })
                .collect();
            let poisoned: Vec<Option<&Tensor>> = (0..3)
                .map(|i| {
                    if s.is_missing(i) {
                        Some(&nan[i])
                    } else {
                        Some(&x[i])
                    }
                })
                .collect();
            let a = net
                .forward_route(&Route::Student(s.clone()), &absent, false)
                .unwrap();
            let b = net
                .forward_route(&Route::Student(s.clone()), &poisoned, false)
                .unwrap();
            assert!(
                b.isfinite().all().int64_value(&[]) == 1,
                "{s:?}: NaN leaked into the output"
            );
            assert_eq!(max_abs_diff(&a, &b), 0.0, "{s:?}");
        }
    });
}

#[test]
fn student_inference_gradients_reach_only_its_parameters() {
    let _serial = serial();
    let ch = [4, 1, 1];
    let x = random_inputs(&ch, B, 64);
    for s in [
        Scenario::new(vec![1], 3).unwrap(),
        Scenario::new(vec![0, 2], 3).unwrap(),
    ] {
        let (vs, net) = build(&small_config(&ch, 5));
        let given: Vec<Option<&Tensor>> = (0..3)
            .map(|i| if s.is_missing(i) { None } else { Some(&x[i]) })
            .collect();
        let p = net
            .forward_route(&Route::Student(s.clone()), &given, false)
            .unwrap();
        (p * Tensor::randn([B, 5, 64, 64], (Kind::Float, Device::Cpu)))
            .sum(Kind::Float)
            .backward();
        let (yes, no) = reached(&vs);
        let key = format!("students.{}.", s.key());
        let expected = |n: &str| {
            let enc = (0..3).any(|i| {
                !s.is_missing(i)
                    && ["e1.", "e2.", "e3.", "e4."]
                        .iter()
                        .any(|l| n.starts_with(&format!("encoders.{i}.{l}")))
            });
            let student = n.starts_with(&key)
                && ["comp.", "fuse.", "attention.", "decoder."]
                    .iter()
                    .any(|part| n.starts_with(&format!("{key}{part}")))
                && !n.contains(".seg_d");
            enc || student
        };
        let wrong: Vec<&String> = yes.iter().filter(|n| !expected(n)).collect();
        let unreached: Vec<&String> = no.iter().filter(|n| expected(n)).collect();
        assert!(wrong.is_empty(), "{s:?}: gradient reached {wrong:?}");
        assert!(
            unreached.is_empty(),
            "{s:?}: gradient did not reach {unreached:?}"
        );
        assert!(yes.iter().any(|n| n.starts_with(&format!("{key}comp."))));
    }
}

#[test]
fn training_gradients_reach_teacher_and_this_student_only() {
    let _serial = serial();
    let ch = [4, 1, 1];
    let (x, target) = inputs_and_target(&ch);
    let all: Vec<Option<&Tensor>> = x.iter().map(Some).collect();
    let s = Scenario::new(vec![2], 3).unwrap();
    let (vs, net) = build(&small_config(&ch, 5));
    let step = forward_joint(&net, &s, &all, true, strategy(&net)).unwrap();
    objective(&net, &step, &target).backward(1.0).unwrap();
    let (yes, no) = reached(&vs);
    let key = format!("students.{}.", s.key());
    // The teacher's DLKD pools only ever see detached features: nothing trains them.
    let expected = |n: &str| {
        !n.starts_with("teacher.fuse_pool.") && (!n.starts_with("students.") || n.starts_with(&key))
    };
    let wrong: Vec<&String> = yes.iter().filter(|n| !expected(n)).collect();
    let unreached: Vec<&String> = no.iter().filter(|n| expected(n)).collect();
    assert!(wrong.is_empty(), "gradient reached {wrong:?}");
    assert!(unreached.is_empty(), "gradient did not reach {unreached:?}");
}

#[test]
fn bad_inputs_and_configurations_are_clear_errors() {
    let _serial = serial();
    let ch = [3, 1];
    let (_vs, net) = build(&small_config(&ch, 5));
    let x = random_inputs(&ch, B, 64);
    let big = Tensor::randn([B, 3, 128, 64], (Kind::Float, Device::Cpu));
    let err = net
        .forward_route(&Route::Teacher, &[Some(&big), Some(&x[1])], false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expected size 64x64") && err.contains("got 128x64") && err.contains("rgb"),
        "{err}"
    );
    let err = net
        .forward_route(&Route::Teacher, &[Some(&x[1]), Some(&x[1])], false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"rgb\": expected [B, 3, H, W]"), "{err}");
    let empty = Tensor::zeros([0, 3, 64, 64], (Kind::Float, Device::Cpu));
    let err = net
        .forward_route(&Route::Teacher, &[Some(&empty), Some(&x[1])], false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("B >= 1"), "{err}");
    let ints = Tensor::zeros([B, 1, 64, 64], (Kind::Int64, Device::Cpu));
    let err = net
        .forward_route(&Route::Teacher, &[Some(&x[0]), Some(&ints)], false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"ndsm\": expected float32"), "{err}");
    let err = net
        .forward_route(&Route::Teacher, &[Some(&x[0])], false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected 2 entries"), "{err}");
    let err = net
        .forward_route(
            &Route::Student(Scenario::new(vec![1], 2).unwrap()),
            &[None, Some(&x[1])],
            false,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"rgb\": required"), "{err}");
    let err = Route::of_given(&[false, false], 2).unwrap_err().to_string();
    assert!(err.contains("at least one modality available"), "{err}");

    let mut cfg = small_config(&ch, 5);
    cfg.scenarios = Some(vec![vec!["ndsm".into()]]);
    let vs = nn::VarStore::new(Device::Cpu);
    let only = Dis2Net::new(&vs.root(), &cfg).unwrap();
    let err = only
        .forward_route(
            &Route::Student(Scenario::new(vec![0], 2).unwrap()),
            &[None, Some(&x[1])],
            false,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no student for scenario [rgb]") && err.contains("[ndsm]"),
        "{err}"
    );

    for (crop, key) in [([72, 64], "crop"), ([64, 8], "crop")] {
        let mut cfg = small_config(&ch, 5);
        cfg.crop = crop;
        let vs = nn::VarStore::new(Device::Cpu);
        let err = Dis2Net::new(&vs.root(), &cfg).unwrap_err().to_string();
        assert!(err.starts_with(key), "{err}");
    }
}

#[test]
fn attention_maps_of_teacher_and_student_are_distributions_over_pixels() {
    let _serial = serial();
    let ch = [4, 1, 1];
    let (_vs, net) = build(&small_config(&ch, 5));
    let x = random_inputs(&ch, B, 64);
    let all: Vec<Option<&Tensor>> = x.iter().map(Some).collect();
    let teacher = net.attention_maps(None, &all).unwrap();
    // Level 4 of a 64 x 64 crop is 4 x 4; one map per class.
    assert_eq!(teacher.size(), [B, 5, 4, 4]);
    let scenario = Scenario::new(vec![1], 3).unwrap();
    // The student never reads the missing DSM.
    let given = [Some(&x[0]), None, Some(&x[2])];
    let student = net.attention_maps(Some(&scenario), &given).unwrap();
    assert_eq!(student.size(), [B, 5, 4, 4]);
    for maps in [&teacher, &student] {
        let sums = maps.sum_dim_intlist([2i64, 3].as_slice(), false, Kind::Float);
        assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-5);
    }
    assert!(
        (&teacher - &student).abs().max().double_value(&[]) > 0.0,
        "the student's CFLM is its own"
    );
    // The teacher needs every modality.
    let err = net.attention_maps(None, &given).unwrap_err().to_string();
    assert!(err.contains("not given"), "{err}");
}

/// The joint backward pass with the teacher's and the student's branches as separate graphs on
/// two threads gives the gradients of one backward pass over the whole graph (to float rounding),
/// and the same bits every time.
#[test]
fn split_branch_backward_equals_the_whole_graph() {
    let _serial = serial();
    let ch = [4, 1, 1];
    let (x, target) = inputs_and_target(&ch);
    let all: Vec<Option<&Tensor>> = x.iter().map(Some).collect();
    let s = Scenario::new(vec![1], 3).unwrap();
    let grads = |split: bool| -> Vec<(String, Tensor)> {
        let (vs, net) = build(&small_config(&ch, 5));
        // Inference-mode layers (no dropout): tests running alongside draw from the same
        // random generator, so two training-mode forwards would not see the same masks.
        let strategy = match split {
            true => JointBackward::SideBySide,
            false => JointBackward::Whole,
        };
        let step = forward_joint(&net, &s, &all, false, strategy).unwrap();
        assert_eq!(step.is_split(), split);
        objective(&net, &step, &target).backward(1.0).unwrap();
        let mut g: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.grad().defined())
            .map(|(n, t)| (n, t.grad().copy()))
            .collect();
        g.sort_by(|a, b| a.0.cmp(&b.0));
        g
    };
    let whole = grads(false);
    let split = grads(true);
    let again = grads(true);
    assert_eq!(
        whole.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        split.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "the same parameters get gradients"
    );
    assert!(whole.iter().any(|(n, _)| n.starts_with("encoders.")));
    for ((name, w), (_, g)) in whole.iter().zip(&split) {
        // Some gradients are 0 in exact arithmetic (biases in front of a BatchNorm, the score
        // bias of an attention pool, which the softmax ignores): float noise around 0.
        let scale = w.abs().max().double_value(&[]).max(1e-4);
        let d = (w - g).abs().max().double_value(&[]);
        assert!(
            d <= 1e-4 * scale,
            "{name}: gradients differ by {d} (scale {scale})"
        );
    }
    for ((name, a), (_, b)) in split.iter().zip(&again) {
        assert!(a.equal(b), "{name}: two split runs differ");
    }
}
