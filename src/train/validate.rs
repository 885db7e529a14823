//! Validation during training: one confusion matrix over the validation windows for each branch
//! being trained.

use anyhow::Result;
use tch::{Device, Tensor};

use crate::config::Experiment;
use crate::data::layouts::Split;
use crate::data::loader::Loader;
use crate::metrics::{ConfusionMatrix, Scores};
use crate::model::{Dis2Net, Scenario};

/// What a branch sees: every modality (the teacher), a student's scenario, or the teacher with
/// the scenario's modalities filled with zeros (the training mean, after normalisation).
#[derive(Debug, Clone, PartialEq)]
pub enum Branch {
    Teacher,
    Student(Scenario),
    TeacherFilled(Scenario),
}

impl Branch {
    /// A short name for logs and tables: `teacher`, `student[sar]`, `teacher-fill[sar]`.
    pub fn label(&self, net: &Dis2Net) -> String {
        match self {
            Branch::Teacher => "teacher".into(),
            Branch::Student(s) => format!("student[{}]", s.names(net.config()).join("+")),
            Branch::TeacherFilled(s) => {
                format!("teacher-fill[{}]", s.names(net.config()).join("+"))
            }
        }
    }
}

/// Runs `branch` over the validation grid (at most `max_batches` batches) and scores it.
pub fn validate(
    net: &Dis2Net,
    exp: &Experiment,
    branches: &[Branch],
    device: Device,
    max_batches: Option<usize>,
) -> Result<Vec<Scores>> {
    let k = exp.model.num_classes as usize;
    let mut matrices = vec![ConfusionMatrix::new(k); branches.len()];
    let loader = Loader::grid(&exp.data, &exp.model, Split::Val)?;
    for (i, batch) in loader.enumerate() {
        if max_batches.is_some_and(|m| i >= m) {
            break;
        }
        let batch = batch?;
        let inputs: Vec<Tensor> = batch.inputs.iter().map(|t| t.to_device(device)).collect();
        for (branch, cm) in branches.iter().zip(matrices.iter_mut()) {
            let probs = tch::no_grad(|| -> Result<Tensor> {
                match branch {
                    Branch::Teacher => {
                        let given: Vec<Option<&Tensor>> = inputs.iter().map(Some).collect();
                        net.forward_teacher(&given, false)
                    }
                    Branch::Student(s) => {
                        let given: Vec<Option<&Tensor>> = inputs
                            .iter()
                            .enumerate()
                            .map(|(m, t)| (!s.is_missing(m)).then_some(t))
                            .collect();
                        net.forward_student(s, &given, false)
                    }
                    Branch::TeacherFilled(s) => {
                        let filled: Vec<Tensor> = inputs
                            .iter()
                            .enumerate()
                            .map(|(m, t)| {
                                if s.is_missing(m) {
                                    t.zeros_like()
                                } else {
                                    t.shallow_clone()
                                }
                            })
                            .collect();
                        let given: Vec<Option<&Tensor>> = filled.iter().map(Some).collect();
                        net.forward_teacher(&given, false)
                    }
                }
            })?;
            let pred = probs.argmax(1, false);
            cm.add_tensors(&batch.labels, &pred, exp.data.ignore_index)?;
        }
    }
    Ok(matrices.iter().map(|cm| cm.scores(&[])).collect())
}
