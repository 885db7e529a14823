//! `--precision` and `train.precision` end to end: bf16 mixed-precision training (float32
//! gradients, the same numbers for the same seed, through the API and the binary), bf16
//! prediction against fp32 (class agreement on a small model), and the options' errors.
//! Agreement, never time. libtorch's random generator is process-wide: the tests here that draw
//! from it take turns (`common::serial`).

use std::path::PathBuf;

use dis2::data::synth;
use dis2::model::{Dis2Net, Scenario};
use dis2::precision::Precision;
use dis2::train::dlkd::KdWeights;
use dis2::train::joint_backward::{forward_joint, JointBackward};
use dis2::train::objective::{joint_objective, masked_target};
use tch::{nn, Device, Kind, Tensor};

mod common;
use common::{
    dis2, metrics_text, ok, read_all, serial, small_config, synthetic_experiment, tiny_benchmark,
    untrained_checkpoint,
};

/// One joint training step (the objective `dis2 distill --joint` runs) of a fresh 3 + 1 band
/// model in `precision`, dropout seeded with `seed`: the loss and every parameter's gradient.
fn training_step(precision: Precision, seed: i64) -> (f64, Vec<Tensor>) {
    let channels = [3i64, 1];
    tch::manual_seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut net = Dis2Net::new(&vs.root(), &small_config(&channels, 5)).unwrap();
    net.set_precision(precision);
    let opts = (Kind::Float, Device::Cpu);
    let x: Vec<Tensor> = channels
        .iter()
        .map(|&c| Tensor::randn([2, c, 64, 64], opts))
        .collect();
    let given: Vec<Option<&Tensor>> = x.iter().map(Some).collect();
    let labels = Tensor::randint(5, [2, 64, 64], (Kind::Int64, Device::Cpu));
    let target = masked_target(&labels, 255, 5, None).unwrap();
    let scenario = Scenario::new(vec![1], 2).unwrap();
    let strategy = JointBackward::choose(Device::Cpu, net.config(), 2);
    tch::manual_seed(seed);
    let step = forward_joint(&net, &scenario, &given, true, strategy).unwrap();
    let names = ["rgb".to_string(), "ndsm".to_string()];
    let objective = joint_objective(&step, &names, &target, KdWeights::both(5.0), 1.0);
    objective.backward(1.0).unwrap();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let grads = vars
        .iter()
        .filter(|(_, v)| v.grad().defined())
        .map(|(_, v)| v.grad().copy())
        .collect();
    (objective.total.double_value(&[]), grads)
}

#[test]
fn bf16_training_keeps_float32_gradients_and_repeats_exactly() {
    let _turn = serial();
    let (loss, grads) = training_step(Precision::Bf16, 21);
    let (again, grads_again) = training_step(Precision::Bf16, 21);
    let (reference, reference_grads) = training_step(Precision::Fp32, 21);
    assert_eq!(loss.to_bits(), again.to_bits(), "same seed, another loss");
    assert_eq!(grads.len(), grads_again.len());
    for (a, b) in grads.iter().zip(&grads_again) {
        assert!(a.equal(b), "same seed, other gradients");
    }
    assert_eq!(
        grads.len(),
        reference_grads.len(),
        "other parameters reached"
    );
    assert!(
        grads.iter().all(|g| g.kind() == Kind::Float),
        "gradients (of the float32 master weights) are float32"
    );
    let rel = (loss - reference).abs() / reference.abs();
    assert!(rel < 0.02, "bf16 loss {loss} vs fp32 {reference}");
    // The gradients point the same way as fp32's.
    let flat =
        |g: &[Tensor]| Tensor::cat(&g.iter().map(|t| t.flatten(0, -1)).collect::<Vec<_>>(), 0);
    let (a, b) = (flat(&grads), flat(&reference_grads));
    let cosine = (&a * &b).sum(Kind::Double).double_value(&[])
        / (a.norm().double_value(&[]) * b.norm().double_value(&[]));
    assert!(cosine > 0.95, "gradient cosine with fp32: {cosine}");
}

/// `train-teacher` args for a two-step run of the tiny benchmark.
fn train_args<'a>(config: &'a str, out: &'a str, precision: &'a str) -> Vec<&'a str> {
    vec![
        "--threads",
        "2",
        "train-teacher",
        "--config",
        config,
        "--out",
        out,
        "--precision",
        precision,
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
        "train.image_every=0",
    ]
}

#[test]
fn bf16_training_runs_repeat_and_the_precision_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_benchmark(dir.path(), 3);
    let config = config.to_str().unwrap();
    let runs: Vec<PathBuf> = ["a", "b"].iter().map(|n| dir.path().join(n)).collect();
    for run in &runs {
        let out = dis2(&train_args(config, run.to_str().unwrap(), "bf16"));
        ok(&out);
        let banner = String::from_utf8_lossy(&out.stderr);
        assert!(banner.contains("in bf16"), "{banner}");
    }
    assert_eq!(
        metrics_text(&runs[0]),
        metrics_text(&runs[1]),
        "same seed, other losses"
    );
    let effective = std::fs::read_to_string(runs[0].join("config.yaml")).unwrap();
    assert!(effective.contains("precision: bf16"), "{effective}");
    // A resumed run keeps its precision.
    let out = dis2(&[
        "train-teacher",
        "--resume",
        runs[0].to_str().unwrap(),
        "--precision",
        "fp32",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("keeps the precision"),
        "{stderr}"
    );
}

#[test]
fn bf16_prediction_agrees_with_fp32() {
    let dir = tempfile::tempdir().unwrap();
    // A freshly initialised model of experiments/synthetic.yaml (seed 12).
    let ck = {
        let exp = synthetic_experiment();
        let _turn = serial();
        untrained_checkpoint(dir.path(), "model", &exp.model, &exp.data, 12)
    };
    let scene = synth::generate_scene(8, 0, 192);
    let files = synth::write_scene(dir.path(), "scene", &scene).unwrap();
    let predict = |precision: &str| {
        let out = dir.path().join(format!("{precision}.tif"));
        let stdout = ok(&dis2(&[
            "predict",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--optical",
            files[0].to_str().unwrap(),
            "--dsm",
            files[1].to_str().unwrap(),
            "--sar",
            files[2].to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--precision",
            precision,
            "--device",
            "cpu",
        ]));
        assert!(stdout.contains(&format!(", {precision}, ")), "{stdout}");
        read_all(&out).data
    };
    let (fp32, bf16) = (predict("fp32"), predict("bf16"));
    let same = fp32.iter().zip(&bf16).filter(|(a, b)| a == b).count();
    let agreement = same as f64 / fp32.len() as f64;
    println!("bf16 vs fp32 class agreement: {agreement:.4}");
    // A freshly initialised model has many near-ties; the trained demo teacher's figure is in
    // docs/model.md.
    assert!(agreement > 0.98, "classes agree on {agreement}");
}

#[test]
fn precision_options_name_the_values() {
    for command in [
        vec!["predict", "--precision", "fp16"],
        vec!["eval", "--checkpoint", "x", "--precision", "fp16"],
        vec!["sweep", "--config", "x", "--precision", "fp16"],
        vec!["train-teacher", "--config", "x", "--precision", "fp16"],
    ] {
        let out = dis2(&command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("fp32, bf16 or auto"),
            "{command:?}: {stderr}"
        );
    }
    let info = ok(&dis2(&["info", "--device", "cpu"]));
    assert!(
        info.contains("CPU bf16")
            && info.contains("AVX-512 BF16")
            && info.contains("precision auto"),
        "{info}"
    );
}
