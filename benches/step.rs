//! `make bench-step`: milliseconds per training step on the CPU, in fp32 and in bf16, as the
//! reference `run_experiment_35.py` trains and `dis2 distill --joint` runs it: teacher and student
//! together (`train::joint_backward::forward_joint` with the backward strategy the trainer
//! chooses), the joint objective of `train::objective` (KD weight 5, orthogonality weight 1,
//! every pixel counted), backward, SGD (momentum 0.99, Nesterov) with the optimiser
//! `dis2 distill --joint` uses; bf16 is the trainer's `train.precision: bf16` (autocast-style,
//! float32 weights).
//!
//! Two settings: base width 32, 128x128, batch 4; and base width 8, 64x64, batch 8; 5 classes,
//! modalities 3 + 1 bands. The two precisions alternate in blocks of steps on one model, so that
//! their ratio comes from the same minutes of a shared machine. Besides the median step it prints
//! the mean time of each phase.
//!
//! GFLOP per step: 3 x the convolution and matrix-product operations of the training forward
//! (counted by libtorch's profiler on the fp32 forward; the backward pass costs about twice the
//! forward). GFLOP/s is then given as a share of the machine's peak measured in the same run: a
//! 2048 x 2048 matrix product in each precision, before and after the steps (the faster).
//! Threads: libtorch's default (all cores; `OMP_NUM_THREADS` sets another number).
//!
//! `make bench-step-profile` (`DIS2_BENCH_PROFILE=1`) times nothing: it profiles whole width-32
//! steps (forward, loss, backward, optimiser) in each precision with libtorch's profiler and
//! prints where each precision's step goes, by kind of op and by op (self times), side by side.

use std::time::Instant;

use anyhow::Result;
use dis2::model::config::{ModalitySpec, ModelConfig};
use dis2::model::{Dis2Net, Scenario};
use dis2::native::{gemm_gflops, matrix_flops, profile, OpTotals};
use dis2::precision::Precision;
use dis2::train::dlkd::KdWeights;
use dis2::train::joint_backward::{forward_joint, JointBackward};
use dis2::train::objective::{joint_objective, masked_target, Target};
use dis2::train::optim::{Optimizer, OptimizerConfig};
use tch::nn;
use tch::{Device, Kind, Tensor};

struct Setting {
    width: i64,
    size: i64,
    batch: i64,
    warmup: usize,
    /// Steps per block; blocks alternate fp32 and bf16.
    block: usize,
    blocks: usize,
    /// The targets in seconds per step: (fp32, bf16).
    target_s: Option<(f64, f64)>,
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

/// The peak of each precision: (fp32, bf16) GFLOP/s of a 2048 x 2048 matrix product.
fn peaks() -> (f64, f64) {
    (
        gemm_gflops(Kind::Float, 2048),
        gemm_gflops(Kind::BFloat16, 2048),
    )
}

/// One setting's model, optimiser and data.
struct Bench {
    /// Owns the variables the model and the optimiser share.
    _vs: nn::VarStore,
    net: Dis2Net,
    opt: Optimizer,
    inputs: [Tensor; 2],
    target: Target,
    scenarios: [Scenario; 2],
    strategy: JointBackward,
    names: Vec<String>,
}

impl Bench {
    fn new(s: &Setting) -> Result<Self> {
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
        let opts = (Kind::Float, Device::Cpu);
        let labels = Tensor::randint(5, [s.batch, s.size, s.size], (Kind::Int64, Device::Cpu));
        Ok(Bench {
            opt: Optimizer::new(sgd, params),
            inputs: [
                Tensor::randn([s.batch, 3, s.size, s.size], opts),
                Tensor::randn([s.batch, 1, s.size, s.size], opts),
            ],
            target: masked_target(&labels, 255, 5, None)?,
            scenarios: [Scenario::new(vec![0], 2)?, Scenario::new(vec![1], 2)?],
            strategy: JointBackward::choose(Device::Cpu, &cfg, s.batch),
            names: cfg.modalities.iter().map(|m| m.name.clone()).collect(),
            _vs: vs,
            net,
        })
    }

    /// GFLOP of a training step: 3 x the fp32 training forward's convolutions and matrix
    /// products as libtorch's profiler counts them.
    fn step_gflop(&mut self) -> Result<f64> {
        self.net.set_precision(Precision::Fp32);
        let inputs = [Some(&self.inputs[0]), Some(&self.inputs[1])];
        let (out, ops) = profile(|| {
            tch::no_grad(|| {
                forward_joint(&self.net, &self.scenarios[0], &inputs, true, self.strategy)
            })
        })?;
        out?;
        let flops = matrix_flops(&ops);
        Ok(3.0 * flops as f64 / 1e9)
    }

    /// One step in `precision`; adds the seconds of forward, loss, backward and optimiser to
    /// `phases` and returns the step's seconds and loss.
    fn step(
        &mut self,
        precision: Precision,
        i: usize,
        phases: &mut [f64; 4],
    ) -> Result<(f64, f64)> {
        self.net.set_precision(precision);
        let t0 = Instant::now();
        let inputs = [Some(&self.inputs[0]), Some(&self.inputs[1])];
        let out = forward_joint(
            &self.net,
            &self.scenarios[i % 2],
            &inputs,
            true,
            self.strategy,
        )?;
        let t1 = Instant::now();
        let loss = joint_objective(&out, &self.names, &self.target, KdWeights::both(5.0), 1.0);
        let t2 = Instant::now();
        self.opt.zero_grad();
        loss.backward(1.0)?;
        let t3 = Instant::now();
        self.opt.step(1e-3)?;
        let t4 = Instant::now();
        for (sum, (a, b)) in phases
            .iter_mut()
            .zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4)])
        {
            *sum += (b - a).as_secs_f64();
        }
        Ok(((t4 - t0).as_secs_f64(), loss.total.double_value(&[])))
    }
}

/// What one precision measured in a setting.
#[derive(Default)]
struct Measured {
    times: Vec<f64>,
    phases: [f64; 4],
    steps: usize,
    loss: f64,
}

impl Measured {
    fn median(&self) -> f64 {
        let mut t = self.times.clone();
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    }
}

/// One setting's result in one precision, for the summary.
struct Row {
    setting: String,
    precision: Precision,
    per_step: f64,
    gflop: f64,
    target_s: Option<f64>,
}

/// Times a setting in both precisions (blocks alternating), prints its figures and returns them.
fn run(s: &Setting) -> Result<Vec<Row>> {
    let mut bench = Bench::new(s)?;
    let gflop = bench.step_gflop()?;
    let precisions = [Precision::Fp32, Precision::Bf16];
    let mut measured: [Measured; 2] = Default::default();
    for (p, m) in precisions.iter().zip(measured.iter_mut()) {
        for i in 0..s.warmup {
            bench.step(*p, i, &mut [0.0; 4])?;
        }
        m.steps = 0;
    }
    for block in 0..s.blocks {
        for (j, (p, m)) in precisions.iter().zip(measured.iter_mut()).enumerate() {
            for i in 0..s.block {
                let (secs, loss) = bench.step(*p, block * s.block + i + j, &mut m.phases)?;
                m.times.push(secs);
                m.steps += 1;
                m.loss = loss;
            }
        }
    }
    let setting = format!(
        "width {}, {}x{}, batch {}",
        s.width, s.size, s.size, s.batch
    );
    println!(
        "{setting}: {gflop:.1} GFLOP per step (3 x the forward's counted), {} x {} alternating \
         steps per precision",
        s.blocks, s.block
    );
    let mut rows = Vec::new();
    for (i, (p, m)) in precisions.iter().zip(&measured).enumerate() {
        let per_step = m.median();
        let [fwd, loss, bwd, opt] = m.phases.map(|x| x / m.steps as f64 * 1e3);
        println!(
            "  {p}: {:7.1} ms/step (median, fastest {:.1}), {:6.2} samples/s, {:5.0} GFLOP/s  \
             [loss {:.3}]",
            per_step * 1e3,
            m.times.iter().copied().fold(f64::INFINITY, f64::min) * 1e3,
            s.batch as f64 / per_step,
            gflop / per_step,
            m.loss,
        );
        println!(
            "        phases: forward {fwd:.1} ms, loss {loss:.1} ms, backward {bwd:.1} ms, \
             optimiser {opt:.1} ms"
        );
        rows.push(Row {
            setting: setting.clone(),
            precision: *p,
            per_step,
            gflop,
            target_s: s.target_s.map(|(f, b)| if i == 0 { f } else { b }),
        });
    }
    println!(
        "  bf16 / fp32 speed: {:.2}x",
        measured[0].median() / measured[1].median()
    );
    Ok(rows)
}

/// The summary: each setting and precision against its GEMM peak (the faster of the two
/// measurements) and its target.
fn summary(rows: &[Row], peak: (f64, f64)) {
    println!("\nsummary (share of the GEMM peak of the same precision, measured in this run):");
    for r in rows {
        let peak = match r.precision {
            Precision::Fp32 => peak.0,
            Precision::Bf16 => peak.1,
        };
        let rate = r.gflop / r.per_step;
        let target = r.target_s.map_or(String::new(), |t| {
            let met = if r.per_step <= t { "met" } else { "missed" };
            format!(", target <= {:.0} ms: {met}", t * 1e3)
        });
        println!(
            "  {}, {}: {:.1} ms/step, {:.0} GFLOP/s = {:.1}% of {:.0} GFLOP/s{target}",
            r.setting,
            r.precision,
            r.per_step * 1e3,
            rate,
            100.0 * rate / peak,
            peak
        );
    }
}

/// The two settings timed: width 32 (the paper's width) and width 8 (the synthetic benchmark's).
const SETTINGS: [Setting; 2] = [
    Setting {
        width: 32,
        size: 128,
        batch: 4,
        warmup: 2,
        block: 3,
        blocks: 3,
        target_s: Some((0.6, 0.5)),
    },
    Setting {
        width: 8,
        size: 64,
        batch: 8,
        warmup: 3,
        block: 8,
        blocks: 4,
        target_s: None,
    },
];

/// Steps timed, then profiled, per precision by `make bench-step-profile` (after a warm-up).
const PROFILED_STEPS: usize = 4;

/// Kinds of op whose work is a matrix product (what the GEMM peak bounds).
const GEMM_KINDS: [&str; 3] = [
    "convolution forward",
    "convolution backward",
    "matrix products",
];

/// The kind of work an op of the profile does, for the per-kind table. Ops are told apart by
/// libtorch's names; self times are summed, so a wrapper (`aten::conv2d`) and the kernel it
/// calls (`aten::mkldnn_convolution`) are not counted twice.
fn op_kind(name: &str) -> &'static str {
    let n = name.to_ascii_lowercase();
    let is = |names: &[&str]| names.contains(&n.as_str());
    if n.contains("conv") && n.contains("backward") {
        "convolution backward"
    } else if n.contains("conv") {
        "convolution forward"
    } else if is(&[
        "aten::mm",
        "aten::addmm",
        "aten::bmm",
        "aten::baddbmm",
        "aten::matmul",
    ]) || n.contains("linear")
        || n.contains("scaled_dot_product")
    {
        "matrix products"
    } else if is(&["aten::to", "aten::_to_copy", "aten::copy_", "aten::clone"]) {
        "casts and copies"
    } else if n.contains("norm") {
        "normalisations"
    } else if n.starts_with("aten::") {
        "element-wise and other aten ops"
    } else {
        "autograd nodes and dis2's own ops"
    }
}

/// One precision's profile: each kind's self milliseconds per step, the median step without the
/// profiler and the ops' self milliseconds per step by name.
struct StepProfile {
    kinds: std::collections::BTreeMap<&'static str, f64>,
    step_ms: f64,
    ops: Vec<(String, f64)>,
}

impl StepProfile {
    /// Times `PROFILED_STEPS` steps in `precision`, then profiles as many.
    fn measure(bench: &mut Bench, precision: Precision) -> Result<Self> {
        let mut times = Measured::default();
        for i in 0..2 + PROFILED_STEPS {
            let (secs, _) = bench.step(precision, i, &mut [0.0; 4])?;
            if i >= 2 {
                times.times.push(secs);
            }
        }
        let (out, ops): (Result<()>, Vec<OpTotals>) = profile(|| {
            for i in 0..PROFILED_STEPS {
                bench.step(precision, i, &mut [0.0; 4])?;
            }
            Ok(())
        })?;
        out?;
        let per_step = |ns: u64| ns as f64 / 1e6 / PROFILED_STEPS as f64;
        let mut kinds = std::collections::BTreeMap::new();
        for o in &ops {
            *kinds.entry(op_kind(&o.name)).or_insert(0.0) += per_step(o.self_ns);
        }
        Ok(StepProfile {
            kinds,
            step_ms: times.median() * 1e3,
            ops: ops
                .iter()
                .map(|o| (o.name.clone(), per_step(o.self_ns)))
                .collect(),
        })
    }

    /// Milliseconds per step outside the matrix-product kernels: the unprofiled step minus the
    /// profiled GEMM-class self times (those kernels are long, so the profiler adds little to
    /// them; its overhead falls on the rest, which this leaves out).
    fn outside_gemm_ms(&self) -> f64 {
        self.step_ms
            - GEMM_KINDS
                .iter()
                .map(|k| self.kinds.get(k).unwrap_or(&0.0))
                .sum::<f64>()
    }
}

/// `make bench-step-profile`: width-32 steps in fp32 and in bf16, where each step's time goes
/// (by kind of op, then the slowest ops), and what share of the bf16 GEMM peak the step could
/// reach if its matrix products ran at that peak while the rest kept its measured time.
fn profile_report(peak: (f64, f64)) -> Result<()> {
    let s = &SETTINGS[0];
    let mut bench = Bench::new(s)?;
    let gflop = bench.step_gflop()?;
    let fp32 = StepProfile::measure(&mut bench, Precision::Fp32)?;
    let bf16 = StepProfile::measure(&mut bench, Precision::Bf16)?;
    println!(
        "width {}, {}x{}, batch {}: {gflop:.1} GFLOP per step; GEMM peak fp32 {:.0}, bf16 {:.0} \
         GFLOP/s; profiled steps' self times (ms per step, profiler on), the step unprofiled",
        s.width, s.size, s.size, s.batch, peak.0, peak.1
    );
    let mut kinds: Vec<(String, (f64, f64))> = fp32
        .kinds
        .keys()
        .chain(bf16.kinds.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|k| {
            (
                k.to_string(),
                (
                    fp32.kinds.get(k).copied().unwrap_or(0.0),
                    bf16.kinds.get(k).copied().unwrap_or(0.0),
                ),
            )
        })
        .collect();
    kinds.push((
        "*outside the matrix products (step minus them)*".into(),
        (fp32.outside_gemm_ms(), bf16.outside_gemm_ms()),
    ));
    print_rows(
        "kind of op",
        kinds.into_iter(),
        (fp32.step_ms, bf16.step_ms),
        usize::MAX,
    );
    let fp32_ops: std::collections::HashMap<_, _> = fp32.ops.iter().cloned().collect();
    let mut ops: Vec<(String, (f64, f64))> = bf16
        .ops
        .iter()
        .map(|(n, b)| (n.clone(), (fp32_ops.get(n).copied().unwrap_or(0.0), *b)))
        .collect();
    ops.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    print_rows(
        "op (the 20 slowest in bf16)",
        ops.into_iter(),
        (fp32.step_ms, bf16.step_ms),
        20,
    );
    print_bound(gflop, peak.0, Precision::Fp32, &fp32);
    print_bound(gflop, peak.1, Precision::Bf16, &bf16);
    Ok(())
}

/// A precision's step as a share of that precision's GEMM peak now, and at best: its matrix
/// products at the peak, everything else as measured.
fn print_bound(gflop: f64, peak: f64, precision: Precision, p: &StepProfile) {
    let gemm_ms = p.step_ms - p.outside_gemm_ms();
    let ideal_ms = 1e3 * gflop / peak + p.outside_gemm_ms();
    println!(
        "\n{precision}: step {:.0} ms = {:.0} % of the {precision} GEMM peak; its matrix products {:.0} ms \
         ({:.0} % of the peak inside them), the rest {:.0} ms.\nWith the matrix products at \
         the peak and the rest unchanged: {:.0} ms = {:.0} % of the peak at most; 70 % needs \
         the rest under {:.0} ms.",
        p.step_ms,
        100.0 * gflop / p.step_ms * 1e3 / peak,
        gemm_ms,
        100.0 * gflop / gemm_ms * 1e3 / peak,
        p.outside_gemm_ms(),
        ideal_ms,
        100.0 * gflop / ideal_ms * 1e3 / peak,
        1e3 * gflop / peak * (1.0 / 0.7 - 1.0),
    );
}

/// One table of the profile report: fp32 and bf16 milliseconds per step, their ratio and shares
/// of each step; the rows in the order given (the first `limit`), then the step.
fn print_rows(
    title: &str,
    rows: impl Iterator<Item = (String, (f64, f64))>,
    wall: (f64, f64),
    limit: usize,
) {
    println!("\n| {title} | fp32 ms | share | bf16 ms | share | bf16 / fp32 |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, (f, b)) in rows.take(limit) {
        let ratio = if f > 0.0 {
            format!("{:.2}", b / f)
        } else {
            "-".into()
        };
        println!(
            "| {name} | {f:.1} | {:.1} % | {b:.1} | {:.1} % | {ratio} |",
            100.0 * f / wall.0,
            100.0 * b / wall.1
        );
    }
    println!(
        "| **the step** | {:.1} | 100 % | {:.1} | 100 % | {:.2} |",
        wall.0,
        wall.1,
        wall.1 / wall.0
    );
}

fn main() -> Result<()> {
    dis2::alloc::tune_allocator();
    println!(
        "dis2 bench-step: CPU, {} threads; CPU bf16: {}",
        tch::get_num_threads(),
        dis2::precision::CpuBf16::detect().describe()
    );
    let before = peaks();
    println!(
        "GEMM 2048^2 peak: fp32 {:.0} GFLOP/s, bf16 {:.0} GFLOP/s (bf16 / fp32 {:.2}x)",
        before.0,
        before.1,
        before.1 / before.0
    );
    if std::env::var_os("DIS2_BENCH_PROFILE").is_some() {
        return profile_report(before);
    }
    let mut rows = Vec::new();
    for s in &SETTINGS {
        rows.extend(run(s)?);
    }
    let after = peaks();
    println!(
        "GEMM 2048^2 peak after the steps: fp32 {:.0} GFLOP/s, bf16 {:.0} GFLOP/s",
        after.0, after.1
    );
    summary(&rows, (before.0.max(after.0), before.1.max(after.1)));
    Ok(())
}
