//! Learning-rate schedules as pure functions of the optimiser step, so a resumed run gets the
//! same rates without saving any scheduler state.

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// A schedule with an optional linear warm-up before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Steps of linear warm-up from 0 to `lr` before the schedule starts.
    #[serde(default)]
    pub warmup_steps: u64,
    /// The shape after warm-up.
    #[serde(default)]
    pub shape: ScheduleShape,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleShape {
    /// The same rate throughout.
    #[default]
    Constant,
    /// Cosine annealing with warm restarts (`CosineAnnealingWarmRestarts`; the reference uses
    /// `t0 = 15` optimiser steps): cycles of `t0`, `t0 * t_mult`, ... steps.
    CosineRestarts {
        t0: u64,
        #[serde(default = "one")]
        t_mult: u64,
        #[serde(default)]
        min_lr: f64,
    },
    /// Polynomial decay to zero over `total_steps` (default: the whole run):
    /// `lr * (1 - step / total) ^ power`.
    Poly {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total_steps: Option<u64>,
        #[serde(default = "default_power")]
        power: f64,
    },
}

fn one() -> u64 {
    1
}
fn default_power() -> f64 {
    0.9
}

impl ScheduleConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.lr > 0.0 && self.lr.is_finite(),
            "lr must be positive, found {}",
            self.lr
        );
        match self.shape {
            ScheduleShape::Constant => {}
            ScheduleShape::CosineRestarts { t0, t_mult, min_lr } => {
                ensure!(t0 >= 1, "t0 must be at least 1");
                ensure!(t_mult >= 1, "t_mult must be at least 1");
                ensure!(
                    (0.0..=self.lr).contains(&min_lr),
                    "min_lr must lie in [0, lr]"
                );
            }
            ScheduleShape::Poly { total_steps, power } => {
                ensure!(total_steps != Some(0), "total_steps must be at least 1");
                ensure!(power > 0.0, "power must be positive");
            }
        }
        Ok(())
    }

    /// The learning rate of optimiser step `step` (0-based) of a run of `run_steps` steps.
    pub(crate) fn lr_at(&self, step: u64, run_steps: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let step = step - self.warmup_steps;
        match self.shape {
            ScheduleShape::Constant => self.lr,
            ScheduleShape::CosineRestarts { t0, t_mult, min_lr } => {
                let (t_cur, t_i) = restart_position(step, t0, t_mult);
                min_lr + (self.lr - min_lr) * (1.0 + (PI * t_cur as f64 / t_i as f64).cos()) / 2.0
            }
            ScheduleShape::Poly { total_steps, power } => {
                let total_steps = total_steps
                    .unwrap_or(run_steps.saturating_sub(self.warmup_steps))
                    .max(1);
                let left = 1.0 - (step.min(total_steps) as f64 / total_steps as f64);
                self.lr * left.powf(power)
            }
        }
    }
}

/// Where `step` falls in cycles of length t0, t0*t_mult, ...: (steps into the cycle, its length).
fn restart_position(step: u64, t0: u64, t_mult: u64) -> (u64, u64) {
    let (mut start, mut len) = (0u64, t0);
    while step >= start + len {
        start += len;
        len = len.saturating_mul(t_mult);
    }
    (step - start, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(t0: u64, t_mult: u64) -> ScheduleConfig {
        ScheduleConfig {
            lr: 0.1,
            warmup_steps: 0,
            shape: ScheduleShape::CosineRestarts {
                t0,
                t_mult,
                min_lr: 0.0,
            },
        }
    }

    #[test]
    fn cosine_restarts_follow_pytorch() {
        let s = cosine(15, 1);
        assert!((s.lr_at(0, 0) - 0.1).abs() < 1e-12);
        // PyTorch: eta_min + (base - eta_min) * (1 + cos(pi * 7 / 15)) / 2
        assert!((s.lr_at(7, 0) - 0.1 * (1.0 + (PI * 7.0 / 15.0).cos()) / 2.0).abs() < 1e-12);
        assert!(
            (s.lr_at(15, 0) - 0.1).abs() < 1e-12,
            "restarts after t0 steps"
        );
        let s = cosine(2, 2); // cycles [0,2) [2,6) [6,14)
        assert_eq!(restart_position(5, 2, 2), (3, 4));
        assert_eq!(restart_position(6, 2, 2), (0, 8));
        assert!((s.lr_at(6, 0) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn poly_and_warmup() {
        let s = ScheduleConfig {
            lr: 1.0,
            warmup_steps: 4,
            shape: ScheduleShape::Poly {
                total_steps: Some(10),
                power: 1.0,
            },
        };
        assert_eq!(s.lr_at(0, 0), 0.25);
        assert_eq!(s.lr_at(3, 0), 1.0);
        assert_eq!(s.lr_at(4, 0), 1.0);
        assert!((s.lr_at(9, 0) - 0.5).abs() < 1e-12);
        assert_eq!(s.lr_at(100, 0), 0.0);
        // Without total_steps the decay spans the run after warm-up.
        let run = ScheduleConfig {
            lr: 1.0,
            warmup_steps: 0,
            shape: ScheduleShape::Poly {
                total_steps: None,
                power: 1.0,
            },
        };
        assert!((run.lr_at(5, 20) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn reads_from_yaml_and_refuses_nonsense() {
        let s: ScheduleConfig =
            serde_yaml::from_str("lr: 0.01\nshape: {kind: cosine_restarts, t0: 15}\n").unwrap();
        assert_eq!(
            s.shape,
            ScheduleShape::CosineRestarts {
                t0: 15,
                t_mult: 1,
                min_lr: 0.0
            }
        );
        let typo =
            serde_yaml::from_str::<ScheduleConfig>("lr: 0.1\nshape: {kind: poly, total_step: 3}");
        assert!(typo
            .unwrap_err()
            .to_string()
            .contains("unknown field `total_step`"));
        let bad = ScheduleConfig {
            lr: -1.0,
            warmup_steps: 0,
            shape: ScheduleShape::Constant,
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("lr must be positive"));
    }
}
