//! Where the time of a model call goes, op by op (libtorch's profiler): the ops with the most self
//! time, their calls and their GFLOP/s, for an inference batch (the model as `dis2 predict`
//! prepares it) or a joint training step (as `make bench-step` times it), in fp32 and bf16.
//!
//! Usage: `cargo run --release --example profile_model -- [infer|train] [WIDTH SIZE BATCH]
//! [TOP]` (defaults: infer, 32 128 8, 25 ops). Modalities 3 + 1 bands, 5 classes; the model is
//! freshly initialised. Each precision runs two calls to warm up, then one under the profiler.

use anyhow::{bail, Context, Result};
use std::time::Instant;

use dis2::model::config::{ModalitySpec, ModelConfig};
use dis2::model::{Dis2Net, Route, Scenario};
use dis2::native::{profile, OpTotals};
use dis2::precision::Precision;
use dis2::train::dlkd::KdWeights;
use dis2::train::joint_backward::{forward_joint, JointBackward};
use dis2::train::objective::{joint_objective, masked_target};
use tch::{nn, Device, Kind, Tensor};

fn config(width: i64, size: i64) -> ModelConfig {
    ModelConfig {
        base_width: width,
        num_classes: 5,
        crop: [size, size],
        heads: 8,
        ffn_dim: 256,
        depth: 2,
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

/// One call of the chosen kind: an inference batch or a joint training step (forward, objective,
/// backward; no optimiser step).
fn call(net: &Dis2Net, train: bool, x: &[Tensor], labels: &Tensor) -> Result<()> {
    let given: Vec<Option<&Tensor>> = x.iter().map(Some).collect();
    if !train {
        let _probs = tch::no_grad(|| net.forward_route(&Route::Teacher, &given, false))?;
        return Ok(());
    }
    let target = masked_target(labels, 255, 5, None)?;
    let scenario = Scenario::new(vec![1], 2)?;
    let b = x[0].size()[0];
    let strategy = JointBackward::choose(Device::Cpu, net.config(), b);
    let step = forward_joint(net, &scenario, &given, true, strategy)?;
    let names = ["rgb".to_string(), "ndsm".to_string()];
    joint_objective(&step, &names, &target, KdWeights::both(5.0), 1.0).backward(1.0)
}

fn print_top(ops: &mut [OpTotals], seconds: f64, top: usize) {
    ops.sort_by_key(|o| std::cmp::Reverse(o.self_ns));
    let total_self: u64 = ops.iter().map(|o| o.self_ns).sum();
    let flops: u64 = ops.iter().map(|o| o.flops).sum();
    println!(
        "  {:.1} ms in the call, {:.1} ms self time in ops, {:.1} GFLOP counted by libtorch",
        seconds * 1e3,
        total_self as f64 / 1e6,
        flops as f64 / 1e9
    );
    println!(
        "  {:>9} {:>6} {:>7} {:>9}  op",
        "self ms", "share", "calls", "GFLOP/s"
    );
    for o in ops.iter().take(top) {
        let gflops = if o.flops > 0 {
            format!("{:.0}", o.flops as f64 / o.total_ns as f64)
        } else {
            String::new()
        };
        println!(
            "  {:>9.2} {:>5.1}% {:>7} {:>9}  {}",
            o.self_ns as f64 / 1e6,
            100.0 * o.self_ns as f64 / total_self.max(1) as f64,
            o.calls,
            gflops,
            o.name
        );
    }
}

fn main() -> Result<()> {
    dis2::alloc::tune_allocator();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let train = match args.first().map(String::as_str) {
        None | Some("infer") => false,
        Some("train") => true,
        Some(other) => bail!("expected infer or train, got {other:?}"),
    };
    let num = |i: usize, default: i64| -> Result<i64> {
        args.get(i)
            .map_or(Ok(default), |a| a.parse().with_context(|| format!("{a:?}")))
    };
    let (width, size, batch) = (num(1, 32)?, num(2, 128)?, num(3, 8)?);
    let top = num(4, 25)? as usize;
    let cfg = config(width, size);
    let opts = (Kind::Float, Device::Cpu);
    let x = vec![
        Tensor::randn([batch, 3, size, size], opts),
        Tensor::randn([batch, 1, size, size], opts),
    ];
    let labels = Tensor::randint(5, [batch, size, size], (Kind::Int64, Device::Cpu));
    for precision in [Precision::Fp32, Precision::Bf16] {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let mut net = Dis2Net::new(&vs.root(), &cfg)?;
        if train {
            net.set_precision(precision);
        } else {
            net.prepare_inference(precision);
        }
        for _ in 0..2 {
            call(&net, train, &x, &labels)?;
        }
        let started = Instant::now();
        let (result, mut ops) = profile(|| call(&net, train, &x, &labels))?;
        result?;
        let kind = if train {
            "training step"
        } else {
            "inference batch"
        };
        println!(
            "{precision} {kind}, width {width}, {size}x{size}, batch {batch}, {} threads:",
            tch::get_num_threads()
        );
        print_top(&mut ops, started.elapsed().as_secs_f64(), top);
    }
    Ok(())
}
