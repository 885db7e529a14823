//! Optimisers whose whole state lives in named tensors, so a checkpoint can hold it and a resumed
//! run continues exactly (libtorch's optimisers behind `tch::nn::Optimizer` keep their momentum
//! buffers out of reach).
//!
//! The update rules are PyTorch's `torch.optim.SGD` (with Nesterov momentum, as the reference
//! training script uses, momentum 0.99) and `torch.optim.AdamW`.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::Tensor;

use crate::native;

/// Which optimiser, with its hyper-parameters (the learning rate comes from the schedule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// SGD with (Nesterov) momentum.
    Sgd {
        #[serde(default = "default_momentum")]
        momentum: f64,
        #[serde(default = "default_true")]
        nesterov: bool,
        #[serde(default)]
        weight_decay: f64,
    },
    /// Adam with decoupled weight decay.
    Adamw {
        #[serde(default = "default_beta1")]
        beta1: f64,
        #[serde(default = "default_beta2")]
        beta2: f64,
        #[serde(default = "default_eps")]
        eps: f64,
        #[serde(default = "default_adamw_decay")]
        weight_decay: f64,
    },
}

fn default_momentum() -> f64 {
    0.99
}
fn default_true() -> bool {
    true
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}
fn default_adamw_decay() -> f64 {
    0.01
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self::Sgd {
            momentum: default_momentum(),
            nesterov: true,
            weight_decay: 0.0,
        }
    }
}

/// An optimiser over named parameters. Parameters without a gradient in a step are left alone
/// (a scenario's student does not touch the other scenarios' weights).
pub struct Optimizer {
    config: OptimizerConfig,
    params: Vec<(String, Tensor)>,
    /// Per-parameter state, keyed `"{param}.{slot}"` (slots: `momentum`; `exp_avg`, `exp_avg_sq`).
    state: BTreeMap<String, Tensor>,
    /// Updates done per parameter (AdamW's bias correction counts a parameter's own steps).
    steps: BTreeMap<String, i64>,
}

fn refs(ts: &[Tensor]) -> Vec<&Tensor> {
    ts.iter().collect()
}

impl Optimizer {
    /// `params`: the trainable tensors with stable names (for instance from `VarStore::variables`
    /// filtered on `requires_grad`).
    pub fn new(config: OptimizerConfig, params: Vec<(String, Tensor)>) -> Self {
        Self {
            config,
            params,
            state: BTreeMap::new(),
            steps: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Drops every gradient, as PyTorch's `zero_grad()` does by default (`set_to_none`): a
    /// parameter that the next step does not use (another scenario's student) then has no
    /// gradient, and [`Optimizer::step`] leaves it and its momentum alone, as the reference's
    /// optimiser does.
    pub fn zero_grad(&mut self) {
        let params: Vec<&Tensor> = self.params.iter().map(|(_, p)| p).collect();
        // Only fails for a tensor that is not a leaf, which `new`'s parameters always are.
        native::clear_grads(&params).unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Scales the gradients so that their global L2 norm is at most `max_norm`; returns the norm
    /// before clipping (as `torch.nn.utils.clip_grad_norm_`).
    pub(crate) fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .map(|(_, p)| p.grad())
            .filter(|g| g.defined())
            .collect();
        if grads.is_empty() {
            return 0.0;
        }
        let norms: Vec<Tensor> = grads
            .iter()
            .map(|g| g.norm().to_kind(tch::Kind::Double))
            .collect();
        let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
        let scale = max_norm / (total + 1e-6);
        if scale < 1.0 {
            tch::no_grad(|| {
                for mut g in grads {
                    let _ = g.g_mul_scalar_(scale);
                }
            });
        }
        total
    }

    /// One update with learning rate `lr`, over every parameter that has a gradient, in one
    /// call to PyTorch's fused optimiser kernel (see [`crate::native::sgd_step`]).
    pub fn step(&mut self, lr: f64) -> Result<()> {
        let mut params = Vec::new();
        let mut grads = Vec::new();
        let mut names = Vec::new();
        for (name, param) in &self.params {
            let grad = param.grad();
            if grad.defined() {
                params.push(param.shallow_clone());
                grads.push(grad);
                names.push(name.as_str());
            }
        }
        if params.is_empty() {
            return Ok(());
        }
        // State slots start at zero: for SGD, momentum·0 + g = g is PyTorch's first-step rule.
        let mut slot = |name: &str, suffix: &str, like: &Tensor| {
            self.state
                .entry(format!("{name}.{suffix}"))
                .or_insert_with(|| like.zeros_like())
                .shallow_clone()
        };
        let counts: Vec<i64> = names
            .iter()
            .map(|name| {
                let count = self.steps.entry(name.to_string()).or_insert(0);
                *count += 1;
                *count
            })
            .collect();
        tch::no_grad(|| match self.config {
            OptimizerConfig::Sgd {
                momentum,
                nesterov,
                weight_decay,
            } => {
                let bufs: Vec<Tensor> = if momentum != 0.0 {
                    names
                        .iter()
                        .zip(&params)
                        .map(|(n, p)| slot(n, "momentum", p))
                        .collect()
                } else {
                    Vec::new()
                };
                native::sgd_step(
                    &refs(&params),
                    &refs(&grads),
                    &refs(&bufs),
                    lr,
                    momentum,
                    weight_decay,
                    nesterov,
                )
            }
            OptimizerConfig::Adamw {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let m: Vec<Tensor> = names
                    .iter()
                    .zip(&params)
                    .map(|(n, p)| slot(n, "exp_avg", p))
                    .collect();
                let v: Vec<Tensor> = names
                    .iter()
                    .zip(&params)
                    .map(|(n, p)| slot(n, "exp_avg_sq", p))
                    .collect();
                let h = native::AdamW {
                    lr,
                    beta1,
                    beta2,
                    weight_decay,
                    eps,
                };
                native::adamw_step(
                    &refs(&params),
                    &refs(&grads),
                    &refs(&m),
                    &refs(&v),
                    &counts,
                    h,
                )
            }
        })
    }

    /// The state as named tensors (for a checkpoint), step counts included.
    pub(crate) fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .state
            .iter()
            .map(|(k, v)| (k.clone(), v.shallow_clone()))
            .collect();
        for (name, count) in &self.steps {
            out.push((format!("{name}.steps"), Tensor::from(*count)));
        }
        out
    }

    /// Restores what `state_tensors` returned; every entry must belong to a known parameter
    /// with the right shape.
    pub(crate) fn load_state_tensors(&mut self, tensors: Vec<(String, Tensor)>) -> Result<()> {
        let shapes: BTreeMap<&str, Vec<i64>> = self
            .params
            .iter()
            .map(|(n, p)| (n.as_str(), p.size()))
            .collect();
        let mut state = BTreeMap::new();
        let mut steps = BTreeMap::new();
        for (key, tensor) in tensors {
            let (param, slot) = key
                .rsplit_once('.')
                .with_context(|| format!("optimiser state {key:?}: expected PARAM.SLOT"))?;
            let Some(shape) = shapes.get(param) else {
                bail!("optimiser state {key:?} belongs to no parameter of this model");
            };
            match slot {
                "steps" => {
                    steps.insert(param.to_string(), tensor.int64_value(&[]));
                }
                "momentum" | "exp_avg" | "exp_avg_sq" => {
                    if &tensor.size() != shape {
                        bail!(
                            "optimiser state {key:?} has shape {:?}, the parameter {:?}",
                            tensor.size(),
                            shape
                        );
                    }
                    // On the parameter's device and in its memory layout (conv weights are channels-last): the
                    // fused step walks parameter, gradient and state element by element.
                    let like = self
                        .params
                        .iter()
                        .find(|(n, _)| n == param)
                        .map(|(_, p)| p.zeros_like());
                    let slot = match like {
                        Some(mut slot) => {
                            tch::no_grad(|| slot.copy_(&tensor));
                            slot
                        }
                        None => tensor,
                    };
                    state.insert(key.clone(), slot);
                }
                other => bail!("optimiser state {key:?}: unknown slot {other:?}"),
            }
        }
        self.state = state;
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    /// Minimises sum((p - target)^2) by hand-written PyTorch rules and compares with our steps.
    fn quadratic_grad(p: &Tensor, target: &Tensor) -> Tensor {
        (p - target) * 2.0
    }

    fn param(values: &[f32]) -> Tensor {
        Tensor::from_slice(values).set_requires_grad(true)
    }

    fn run(config: OptimizerConfig, steps: usize, lr: f64) -> (Vec<f32>, Optimizer) {
        let p = param(&[1.0, -2.0, 0.5]);
        let target = Tensor::from_slice(&[0.0f32, 1.0, 2.0]);
        let mut opt = Optimizer::new(config, vec![("w".into(), p.shallow_clone())]);
        for _ in 0..steps {
            opt.zero_grad();
            let loss = (&p - &target).square().sum(Kind::Float);
            loss.backward();
            opt.step(lr).unwrap();
        }
        (Vec::<f32>::try_from(p.detach()).unwrap(), opt)
    }

    #[test]
    fn sgd_nesterov_matches_the_pytorch_rule() {
        let lr = 0.01;
        let mu = 0.9;
        let (got, _) = run(
            OptimizerConfig::Sgd {
                momentum: mu,
                nesterov: true,
                weight_decay: 0.0,
            },
            3,
            lr,
        );
        // The PyTorch rule written out with plain tensors.
        let mut p = Tensor::from_slice(&[1.0f32, -2.0, 0.5]);
        let target = Tensor::from_slice(&[0.0f32, 1.0, 2.0]);
        let mut buf: Option<Tensor> = None;
        for _ in 0..3 {
            let g = quadratic_grad(&p, &target);
            let b = match buf {
                Some(b) => b * mu + &g,
                None => g.copy(),
            };
            let d = &g + &b * mu;
            buf = Some(b);
            p -= d * lr;
        }
        let want = Vec::<f32>::try_from(p).unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn plain_sgd_with_decay_and_untouched_parameters() {
        // Momentum 0 (no buffers), weight decay, and a second parameter that gets no gradient.
        let cfg = OptimizerConfig::Sgd {
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.1,
        };
        let p = param(&[1.0, -2.0]);
        let idle = param(&[3.0]);
        let mut opt = Optimizer::new(
            cfg,
            vec![
                ("p".into(), p.shallow_clone()),
                ("idle".into(), idle.shallow_clone()),
            ],
        );
        opt.zero_grad();
        p.square().sum(Kind::Float).backward();
        opt.step(0.5).unwrap();
        // p - lr·(2p + 0.1·p) = p·(1 - 0.5·2.1)
        let got = Vec::<f32>::try_from(p.detach()).unwrap();
        assert!(
            (got[0] - (-0.05)).abs() < 1e-6 && (got[1] - 0.1).abs() < 1e-6,
            "{got:?}"
        );
        assert_eq!(Vec::<f32>::try_from(idle.detach()).unwrap(), [3.0]);
        assert!(opt.state_tensors().iter().all(|(k, _)| k.starts_with("p.")));
    }

    #[test]
    fn a_parameter_left_out_of_a_step_keeps_its_value() {
        // As with PyTorch's zero_grad(set_to_none=True): after a step that used both parameters,
        // a step whose loss ignores `other` leaves it (and its momentum) alone.
        let p = param(&[1.0]);
        let other = param(&[2.0]);
        let mut opt = Optimizer::new(
            OptimizerConfig::default(),
            vec![
                ("p".into(), p.shallow_clone()),
                ("other".into(), other.shallow_clone()),
            ],
        );
        opt.zero_grad();
        (&p * &other).sum(Kind::Float).backward();
        opt.step(0.1).unwrap();
        let after_first = Vec::<f32>::try_from(other.detach()).unwrap();
        opt.zero_grad();
        assert!(!other.grad().defined());
        p.square().sum(Kind::Float).backward();
        opt.step(0.1).unwrap();
        assert_eq!(Vec::<f32>::try_from(other.detach()).unwrap(), after_first);
    }

    #[test]
    fn adamw_matches_the_pytorch_rule() {
        let (lr, b1, b2, eps, wd) = (0.1, 0.9, 0.999, 1e-8, 0.01);
        let cfg = OptimizerConfig::Adamw {
            beta1: b1,
            beta2: b2,
            eps,
            weight_decay: wd,
        };
        let (got, _) = run(cfg, 4, lr);
        let mut p = Tensor::from_slice(&[1.0f64, -2.0, 0.5]);
        let target = Tensor::from_slice(&[0.0f64, 1.0, 2.0]);
        let (mut m, mut v) = (p.zeros_like(), p.zeros_like());
        for t in 1..=4 {
            let g = quadratic_grad(&p, &target);
            p = &p * (1.0 - lr * wd);
            m = m * b1 + &g * (1.0 - b1);
            v = v * b2 + g.square() * (1.0 - b2);
            let mhat = &m / (1.0 - b1.powi(t));
            let vhat = &v / (1.0 - b2.powi(t));
            p -= mhat / (vhat.sqrt() + eps) * lr;
        }
        let want = Vec::<f64>::try_from(p).unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn state_round_trip_resumes_exactly() {
        for cfg in [
            OptimizerConfig::default(),
            OptimizerConfig::Adamw {
                beta1: 0.9,
                beta2: 0.99,
                eps: 1e-8,
                weight_decay: 0.1,
            },
        ] {
            let (straight, _) = run(cfg.clone(), 6, 0.05);
            // Three steps, save, rebuild from the saved state, three more.
            let p = param(&[1.0, -2.0, 0.5]);
            let target = Tensor::from_slice(&[0.0f32, 1.0, 2.0]);
            let mut opt = Optimizer::new(cfg.clone(), vec![("w".into(), p.shallow_clone())]);
            let train = |opt: &mut Optimizer| {
                opt.zero_grad();
                (&p - &target).square().sum(Kind::Float).backward();
                opt.step(0.05).unwrap();
            };
            for _ in 0..3 {
                train(&mut opt);
            }
            let saved: Vec<(String, Tensor)> = opt
                .state_tensors()
                .into_iter()
                .map(|(k, t)| (k, t.copy()))
                .collect();
            let mut resumed = Optimizer::new(cfg, vec![("w".into(), p.shallow_clone())]);
            resumed.load_state_tensors(saved).unwrap();
            for _ in 0..3 {
                train(&mut resumed);
            }
            assert_eq!(Vec::<f32>::try_from(p.detach()).unwrap(), straight);
        }
    }

    #[test]
    fn foreign_state_is_refused() {
        let p = param(&[1.0, 2.0]);
        let mut opt = Optimizer::new(OptimizerConfig::default(), vec![("w".into(), p)]);
        let err = opt.load_state_tensors(vec![(
            "v.momentum".into(),
            Tensor::zeros([2], (Kind::Float, tch::Device::Cpu)),
        )]);
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("belongs to no parameter"));
        let err = opt.load_state_tensors(vec![(
            "w.momentum".into(),
            Tensor::zeros([3], (Kind::Float, tch::Device::Cpu)),
        )]);
        assert!(err.unwrap_err().to_string().contains("shape"));
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let p = param(&[3.0, 4.0]);
        let mut opt = Optimizer::new(
            OptimizerConfig::default(),
            vec![("w".into(), p.shallow_clone())],
        );
        (&p * &p).sum(Kind::Float).backward(); // grad = (6, 8), norm 10
        let before = opt.clip_grad_norm(1.0);
        assert!((before - 10.0).abs() < 1e-5);
        let after = p.grad().norm().double_value(&[]);
        assert!((after - 1.0).abs() < 1e-4, "{after}");
    }
}
