//! The `train:` section of an experiment.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::optim::OptimizerConfig;
use super::schedule::{ScheduleConfig, ScheduleShape};
use crate::precision::PrecisionChoice;

/// How long and how to train. Steps are optimiser steps; an epoch is
/// `data.sampling.samples_per_epoch / batch_size` batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Training epochs.
    #[serde(default = "default_epochs")]
    pub epochs: u64,
    /// Stop after this many optimiser steps even if epochs remain (for quick runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u64>,
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    #[serde(default = "default_schedule")]
    pub schedule: ScheduleConfig,
    /// Batches whose gradients are summed before one optimiser step (the reference uses 2).
    #[serde(default = "one")]
    pub accumulate: u64,
    /// Clip the global gradient norm to this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_grad_norm: Option<f64>,
    /// Validate (and write `best`/`last`) every this many optimiser steps, and at the end.
    #[serde(default = "default_val_every")]
    pub val_every: u64,
    /// Validation windows at most (the grid over the validation split, in order); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_batches: Option<usize>,
    /// Weight of the DLKD loss once it is on (reference: 5).
    #[serde(default = "default_lambda_kd")]
    pub lambda_kd: f64,
    /// Epochs before the DLKD loss is switched on (reference: 5).
    #[serde(default = "default_kd_warmup")]
    pub kd_warmup_epochs: u64,
    /// The DLKD terms used (reference: both): `features` (L2 between normalised fused features
    /// and penultimate maps) and/or `logits` (T² KL of the softened predictions).
    #[serde(default = "default_kd_terms")]
    pub kd_terms: Vec<KdTerm>,
    /// Weight of the orthogonality (disentanglement) loss.
    #[serde(default = "one_f")]
    pub orth_weight: f64,
    /// Log an input / label / prediction image to TensorBoard every this many steps (0: never).
    #[serde(default = "default_image_every")]
    pub image_every: u64,
    /// `--joint`: probability of each student scenario per batch, keyed by the missing
    /// modalities joined with `+` (e.g. `sar: 0.6`, `dsm+sar: 0.4`); default: uniform.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub joint_probabilities: BTreeMap<String, f64>,
    /// `fp32`, `bf16` (autocast-style mixed precision: bfloat16 convolutions and matrix
    /// products, float32 parameters, losses and reductions; CPU and CUDA) or `auto` (bf16 where
    /// the device computes it in hardware). `--precision` of the training commands overrides it.
    #[serde(default, skip_serializing_if = "is_fp32")]
    pub precision: PrecisionChoice,
}

fn is_fp32(p: &PrecisionChoice) -> bool {
    *p == PrecisionChoice::Fp32
}

fn default_epochs() -> u64 {
    20
}
fn default_val_every() -> u64 {
    50
}
fn default_lambda_kd() -> f64 {
    5.0
}
fn default_kd_warmup() -> u64 {
    5
}
fn default_kd_terms() -> Vec<KdTerm> {
    vec![KdTerm::Features, KdTerm::Logits]
}
fn default_image_every() -> u64 {
    100
}
fn one() -> u64 {
    1
}
fn one_f() -> f64 {
    1.0
}
fn default_schedule() -> ScheduleConfig {
    ScheduleConfig {
        lr: 0.01,
        warmup_steps: 0,
        shape: ScheduleShape::CosineRestarts {
            t0: 15,
            t_mult: 1,
            min_lr: 0.0,
        },
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: default_epochs(),
            max_steps: None,
            optimizer: OptimizerConfig::default(),
            schedule: default_schedule(),
            accumulate: 1,
            clip_grad_norm: None,
            val_every: default_val_every(),
            val_batches: None,
            lambda_kd: default_lambda_kd(),
            kd_warmup_epochs: default_kd_warmup(),
            kd_terms: default_kd_terms(),
            orth_weight: 1.0,
            image_every: default_image_every(),
            joint_probabilities: BTreeMap::new(),
            precision: PrecisionChoice::Fp32,
        }
    }
}

/// A part of the DLKD loss (`train.kd_terms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KdTerm {
    /// L2 between L2-normalised fused features (pooled levels 1-3, the level-4 token) and
    /// penultimate maps of student and teacher.
    Features,
    /// T² KL divergence between the softened predictions (T = 2).
    Logits,
}

impl TrainConfig {
    /// The weights of the DLKD feature and logit terms once DLKD is on: `lambda_kd` for the
    /// terms of `kd_terms`, 0 for the others. Returns `(features, logits)`.
    pub(crate) fn kd_weights(&self) -> (f64, f64) {
        let on = |t: KdTerm| {
            if self.kd_terms.contains(&t) {
                self.lambda_kd
            } else {
                0.0
            }
        };
        (on(KdTerm::Features), on(KdTerm::Logits))
    }

    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            bail!("epochs: must be at least 1");
        }
        if self.max_steps == Some(0) {
            bail!("max_steps: must be at least 1");
        }
        if self.accumulate == 0 || self.val_every == 0 {
            bail!("accumulate and val_every must be at least 1");
        }
        if let Some(c) = self.clip_grad_norm {
            if !(c > 0.0 && c.is_finite()) {
                bail!("clip_grad_norm: must be positive, found {c}");
            }
        }
        if !(self.lambda_kd >= 0.0 && self.orth_weight >= 0.0) {
            bail!("lambda_kd and orth_weight must not be negative");
        }
        if self.kd_terms.is_empty() {
            bail!(
                "kd_terms: name at least one of features, logits (lambda_kd: 0 switches DLKD off)"
            );
        }
        for (k, p) in &self.joint_probabilities {
            if !(*p >= 0.0 && p.is_finite()) {
                bail!("joint_probabilities.{k}: must be a non-negative number, found {p}");
            }
        }
        self.schedule.validate().context("schedule")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kd_terms_switch_the_dlkd_parts() {
        let c = TrainConfig::default();
        assert_eq!(c.kd_weights(), (5.0, 5.0), "the reference: both parts");
        let c: TrainConfig =
            crate::config::from_yaml_str("lambda_kd: 2\nkd_terms: [logits]\n").unwrap();
        assert_eq!(c.kd_weights(), (0.0, 2.0));
        let c: TrainConfig = crate::config::from_yaml_str("kd_terms: [features]\n").unwrap();
        assert_eq!(c.kd_weights(), (5.0, 0.0));
        let c: TrainConfig = crate::config::from_yaml_str("kd_terms: []\n").unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("kd_terms"), "{e}");
        assert!(crate::config::from_yaml_str::<TrainConfig>("kd_terms: [attention]\n").is_err());
    }
}
