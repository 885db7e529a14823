//! The precision and inference transformations of the model against the plain fp32 model:
//! BatchNorm folding (to 1e-5 in fp32), no autograd state, bfloat16 inference (class agreement
//! and probabilities), the layout and precision of the bf16 forward. Agreement, never time.
//! (bf16 training, whose repeatability needs libtorch's global generator to itself, is tested in
//! `tests/precision.rs`.)

use tch::{nn, Device, Kind, Tensor};

use super::config::{ModalitySpec, ModelConfig};
use super::encoder::Encoder;
use super::{Dis2Net, Route, Scenario};
use crate::precision::{with_precision, Precision};

/// Width 8, 32 x 32 crops, modalities 3 + 1 bands, 5 classes.
fn config() -> ModelConfig {
    ModelConfig {
        base_width: 8,
        num_classes: 5,
        crop: [32, 32],
        heads: 8,
        ffn_dim: 64,
        depth: 1,
        modalities: vec![
            ModalitySpec {
                name: "rgb".into(),
                channels: 3,
            },
            ModalitySpec {
                name: "ndsm".into(),
                channels: 1,
            },
        ],
        scenarios: None,
        decoder: Default::default(),
        fusion: Default::default(),
    }
}

/// Inputs `[B, C_i, 32, 32]` with some spatial structure (smooth blobs plus noise), so that the
/// model's class maps have regions rather than noise.
fn inputs(batch: i64, seed: i64) -> Vec<Tensor> {
    tch::manual_seed(seed);
    let opts = (Kind::Float, Device::Cpu);
    [3i64, 1]
        .iter()
        .map(|&c| {
            let coarse = Tensor::randn([batch, c, 4, 4], opts) * 2.0;
            coarse.upsample_bilinear2d([32, 32], false, None, None)
                + Tensor::randn([batch, c, 32, 32], opts) * 0.3
        })
        .collect()
}

/// A seeded model whose BatchNorm running statistics have moved away from 0 and 1 (a few
/// training-mode forwards), so that folding them is not trivially exact.
fn model(seed: i64) -> (nn::VarStore, Dis2Net) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Dis2Net::new(&vs.root(), &config()).unwrap();
    let scenario = Scenario::new(vec![1], 2).unwrap();
    tch::no_grad(|| {
        for i in 0..3 {
            let x = inputs(4, 100 + i);
            let shifted: Vec<Tensor> = x.iter().map(|t| t * 1.5 + 0.3).collect();
            let given: Vec<Option<&Tensor>> = shifted.iter().map(Some).collect();
            net.forward_train(&scenario, &given, true).unwrap();
        }
    });
    (vs, net)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Every branch's probabilities `[B, K, H, W]`: the teacher's, then each student's.
fn branches(net: &Dis2Net, x: &[Tensor]) -> Vec<Tensor> {
    let all: Vec<Option<&Tensor>> = x.iter().map(Some).collect();
    let mut out = vec![tch::no_grad(|| net.forward_route(&Route::Teacher, &all, false)).unwrap()];
    for s in net.scenarios().to_vec() {
        let student = Route::Student(s);
        out.push(tch::no_grad(|| net.forward_route(&student, &all, false)).unwrap());
    }
    out
}

#[test]
fn prepared_fp32_model_equals_the_model_as_built() {
    let (_vs, mut net) = model(1);
    let x = inputs(2, 7);
    let want = branches(&net, &x);
    let given: Vec<Option<&Tensor>> = x.iter().map(Some).collect();
    let want_attention = net.attention_maps(None, &given).unwrap();
    net.prepare_inference(Precision::Fp32);
    let got = branches(&net, &x);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let d = max_abs_diff(g, w);
        assert!(
            d < 1e-5,
            "branch {i}: probabilities differ by {d} after folding"
        );
        assert!(
            !g.requires_grad(),
            "branch {i}: the output has autograd state"
        );
    }
    let attention = net.attention_maps(None, &given).unwrap();
    let d = max_abs_diff(&attention, &want_attention);
    assert!(d < 1e-5, "attention maps differ by {d}");
}

#[test]
fn a_prepared_model_has_no_autograd_state_and_refuses_training() {
    let (_vs, mut net) = model(2);
    net.prepare_inference(Precision::Bf16);
    assert!(net.is_prepared_for_inference());
    assert_eq!(net.precision(), Precision::Bf16);
    let x = inputs(1, 8);
    let given: Vec<Option<&Tensor>> = x.iter().map(Some).collect();
    // Even with gradients enabled, nothing the prepared model computes needs a graph.
    let p = net.forward_route(&Route::Teacher, &given, false).unwrap();
    assert!(!p.requires_grad(), "a prepared model built a graph");
    let scenario = Scenario::new(vec![1], 2).unwrap();
    let err = net.forward_train(&scenario, &given, true).unwrap_err();
    assert!(
        format!("{err:#}").contains("prepared for inference"),
        "{err:#}"
    );
    assert!(net.forward_route(&Route::Teacher, &given, true).is_err());
}

/// Class agreement of two probability maps `[B, K, H, W]` over the pixels where `reference`
/// decides (top-1 ahead of top-2 by more than `margin`), and the share of such pixels.
fn agreement(got: &Tensor, reference: &Tensor, margin: f64) -> (f64, f64) {
    let top2 = reference.topk(2, 1, true, true).0;
    let decided = (top2.select(1, 0) - top2.select(1, 1)).gt(margin);
    let same = got.argmax(1, false).eq_tensor(&reference.argmax(1, false));
    let n = decided.sum(Kind::Float).double_value(&[]);
    let agree = same
        .logical_and(&decided)
        .sum(Kind::Float)
        .double_value(&[]);
    (agree / n.max(1.0), n / decided.numel() as f64)
}

#[test]
fn bf16_inference_agrees_with_fp32() {
    let (vs, mut fp32) = model(3);
    // The same weights (copied: tests running at once share libtorch's generator).
    let mut vs2 = nn::VarStore::new(Device::Cpu);
    let mut bf16 = Dis2Net::new(&vs2.root(), &config()).unwrap();
    vs2.copy(&vs).unwrap();
    fp32.prepare_inference(Precision::Fp32);
    bf16.prepare_inference(Precision::Bf16);
    let x = inputs(4, 9);
    for (i, (a, b)) in branches(&bf16, &x)
        .iter()
        .zip(&branches(&fp32, &x))
        .enumerate()
    {
        assert_eq!(a.kind(), Kind::Float, "probabilities are float32");
        let sums = a.sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
        assert!(max_abs_diff(&sums, &sums.ones_like()) < 1e-5);
        let mean = (a - b).abs().mean(Kind::Float).double_value(&[]);
        let (agree, decided) = agreement(a, b, 0.02);
        println!("branch {i}: mean |dp| {mean:.5}, agreement {agree:.5} on {decided:.3} of pixels");
        assert!(
            mean < 0.01,
            "branch {i}: probabilities differ by {mean} on average"
        );
        assert!(
            decided > 0.5,
            "branch {i}: the fp32 model decides only {decided}"
        );
        assert!(
            agree >= 0.99,
            "branch {i}: classes agree on {agree} of decided pixels"
        );
    }
}

/// Whether a 4-D tensor is stored channels-last (NHWC strides).
fn is_channels_last(t: &Tensor) -> bool {
    let s = t.size();
    let want = [s[1] * s[2] * s[3], 1, s[3] * s[1], s[1]];
    t.stride() == want
}

#[test]
fn bf16_forward_is_bfloat16_channels_last_with_float32_probabilities() {
    tch::manual_seed(4);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut enc = Encoder::new(&vs.root(), 3, 8, Some(5));
    enc.prepare_inference(Kind::BFloat16);
    let x = &inputs(2, 10)[0];
    let (features, aux) = with_precision(Device::Cpu, Precision::Bf16, || {
        let f = enc.features(x, false);
        let aux = enc.aux_prediction(&f, false).unwrap();
        (f, aux)
    });
    for (l, f) in features.iter().enumerate() {
        assert_eq!(f.kind(), Kind::BFloat16, "level {l}");
        assert!(is_channels_last(f), "level {l}: strides {:?}", f.stride());
    }
    assert_eq!(aux.kind(), Kind::Float, "softmax outputs are float32");
}
