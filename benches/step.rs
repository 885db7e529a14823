//! `make bench-step`: milliseconds per training step on the CPU, as the reference
//! `run_experiment_35.py` trains and `dis2 distill --joint` runs it: teacher and student together
//! (`train::joint_backward::forward_joint` with the backward strategy the trainer chooses), the
//! joint objective of `train::objective` (KD weight 5, orthogonality weight 1, every pixel
//! counted), backward, SGD (momentum 0.99, Nesterov) with the optimiser `dis2 distill --joint`
//! uses.
//! Two settings: base width 32, 128x128, batch 4; and base width 8, 64x64, batch 8; 5 classes,
//! modalities 3 + 1 bands. Besides the median step it prints the mean time of each phase.
//!
//! GFLOP/s uses the given figure of about 152 GFLOP per width-32 step (128x128, batch 4), scaled
//! for the other setting by width², pixels and batch (convolutions dominate), not a count.

use std::time::Instant;

use anyhow::Result;
use dis2::model::config::{ModalitySpec, ModelConfig};
use dis2::model::{Dis2Net, Scenario};
use dis2::train::joint_backward::{forward_joint, JointBackward};
use dis2::train::objective::{joint_objective, masked_target, KdWeights};
use dis2::train::optim::{Optimizer, OptimizerConfig};
use tch::nn;
use tch::{Device, Kind, Tensor};

/// GFLOP of one width-32, 128x128, batch-4 training step.
const GFLOP_W32: f64 = 152.0;

struct Setting {
    width: i64,
    size: i64,
    batch: i64,
    warmup: usize,
    steps: usize,
    /// Seconds per step of the reference PyTorch code on 2 cores (given).
    reference_s: f64,
}

/// The model of a setting: modalities 3 + 1 bands, 5 classes.
fn config(s: &Setting) -> ModelConfig {
    ModelConfig {
        base_width: s.width,
        num_classes: 5,
        crop: [s.size, s.size],
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

/// Times the warm-up and measured steps of a setting and prints its figures.
fn run(s: &Setting) -> Result<()> {
    tch::manual_seed(0);
    let cfg = config(s);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Dis2Net::new(&vs.root(), &cfg)?;
    let params = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    let sgd = OptimizerConfig::Sgd {
        momentum: 0.99,
        nesterov: true,
        weight_decay: 0.0,
    };
    let mut opt = Optimizer::new(sgd, params);
    let opts = (Kind::Float, Device::Cpu);
    let rgb = Tensor::randn([s.batch, 3, s.size, s.size], opts);
    let ndsm = Tensor::randn([s.batch, 1, s.size, s.size], opts);
    let labels = Tensor::randint(5, [s.batch, s.size, s.size], (Kind::Int64, Device::Cpu));
    let target = masked_target(&labels, 255, 5, None)?;
    let scenarios = [Scenario::new(vec![0], 2)?, Scenario::new(vec![1], 2)?];
    let names: Vec<String> = cfg.modalities.iter().map(|m| m.name.clone()).collect();
    let strategy = JointBackward::choose(Device::Cpu, &cfg, s.batch);

    // Seconds spent in forward, loss, backward and optimiser step.
    let mut phases = [0.0f64; 4];
    let mut step = |i: usize| -> Result<f64> {
        let t0 = Instant::now();
        let inputs = [Some(&rgb), Some(&ndsm)];
        let out = forward_joint(&net, &scenarios[i % 2], &inputs, true, strategy)?;
        let t1 = Instant::now();
        let loss = joint_objective(&out, &names, &target, KdWeights::both(5.0), 1.0);
        let t2 = Instant::now();
        opt.zero_grad();
        loss.backward(1.0)?;
        let t3 = Instant::now();
        opt.step(1e-3)?;
        let t4 = Instant::now();
        for (sum, (a, b)) in phases
            .iter_mut()
            .zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4)])
        {
            *sum += (b - a).as_secs_f64();
        }
        Ok(loss.total.double_value(&[]))
    };
    for i in 0..s.warmup {
        step(i)?;
    }
    let mut times = Vec::with_capacity(s.steps);
    let mut last = 0.0;
    for i in 0..s.steps {
        let start = Instant::now();
        last = step(i)?;
        times.push(start.elapsed().as_secs_f64());
    }
    let steps_run = (s.warmup + s.steps) as f64;
    print_figures(s, times, phases.map(|p| p / steps_run * 1e3), last);
    Ok(())
}

/// The median and fastest of the measured step `times` (seconds), throughput, and the mean
/// `phases` (forward, loss, backward, optimiser; milliseconds).
fn print_figures(s: &Setting, mut times: Vec<f64>, phases: [f64; 4], last: f64) {
    let [fwd, loss_ms, bwd, opt_ms] = phases;
    times.sort_by(f64::total_cmp);
    // The median step: robust to a neighbour's burst on a shared machine.
    let per_step = times[times.len() / 2];
    let fastest = times[0];
    let scale = (s.width as f64 / 32.0).powi(2) * (s.size * s.size) as f64 / (128.0 * 128.0)
        * s.batch as f64
        / 4.0;
    let gflop = GFLOP_W32 * scale;
    println!(
        "width {:2}, {}x{}, batch {}: {:7.1} ms/step (median of {}, fastest {:.1}), {:6.2} samples/s, \
         {:5.1} GFLOP/s ({:.1} GFLOP/step, scaled figure); reference {:.0} ms/step -> {:.2}x its \
         throughput  [loss {last:.3}]",
        s.width,
        s.size,
        s.size,
        s.batch,
        per_step * 1e3,
        s.steps,
        fastest * 1e3,
        s.batch as f64 / per_step,
        gflop / per_step,
        gflop,
        s.reference_s * 1e3,
        s.reference_s / per_step,
    );
    println!(
        "          mean phases: forward {fwd:.1} ms, loss {loss_ms:.1} ms, backward {bwd:.1} ms, \
         optimiser {opt_ms:.1} ms"
    );
}

fn main() -> Result<()> {
    dis2::alloc::tune_allocator();
    println!("dis2 bench-step: CPU, {} threads, libtorch training step (forward, full loss, backward, SGD)", tch::get_num_threads());
    let settings = [
        Setting {
            width: 32,
            size: 128,
            batch: 4,
            warmup: 2,
            steps: 9,
            reference_s: 1.89,
        },
        Setting {
            width: 8,
            size: 64,
            batch: 8,
            warmup: 3,
            steps: 31,
            reference_s: 0.31,
        },
    ];
    for s in &settings {
        run(s)?;
    }
    Ok(())
}
