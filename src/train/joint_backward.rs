//! How the backward pass of a joint training step runs (teacher and student together, as the
//! reference trains and `dis2 distill --joint` does): a choice of the trainer, not of the model.
//!
//! - [`JointBackward::Whole`]: one backward pass over the whole graph.
//! - [`JointBackward::SideBySide`]: each branch reads its own leaf copies of the encoder features
//!   (`SplitInputs`), so the teacher's loss and the student's loss hang off two separate graphs.
//!   Their backward passes run at the same time, one thread each with one intra-op thread, then
//!   the encoders' backward runs once with the two branches' gradients summed. On two cores the
//!   small operations of a narrow model leave the second core mostly idle within one op; two
//!   independent streams of ops keep both busy. Wide models keep the cores busy within each op,
//!   and there one stream is faster: [`JointBackward::choose`] decides.
//!
//! The parameter gradients of both equal each other up to the order of floating-point additions
//! at the encoder features (teacher + student, always in that order, so the same inputs give the
//! same numbers). The forward pass is the same and runs on the calling thread, so random draws
//! (dropout) keep their order.

use anyhow::{anyhow, Result};
use tch::{Device, Tensor};

use crate::model::config::ModelConfig;
use crate::model::encoder::Features;
use crate::model::{Dis2Net, Scenario, TrainOutputs};

/// Above this many `base_width² · crop pixels · batch`, one branch at a time with every core on
/// each op is faster than the two branches side by side (figures in docs/model.md, "What makes
/// it fast").
const SMALL_STEP: i64 = 1 << 23;

/// How the backward pass of a joint training step runs; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JointBackward {
    /// One backward pass over the whole graph.
    Whole,
    /// The teacher's and the student's backward passes on two threads, then the encoders'.
    SideBySide,
}

impl JointBackward {
    /// The trainer's choice for `cfg` trained on `device` with batches of `batch`: side by side
    /// for small models on the CPU (small convolutions leave cores idle within an op; large ones
    /// do not), otherwise whole.
    pub fn choose(device: Device, cfg: &ModelConfig, batch: i64) -> Self {
        let [h, w] = cfg.crop;
        let small = cfg.base_width * cfg.base_width * h * w * batch <= SMALL_STEP;
        if device == Device::Cpu && small {
            JointBackward::SideBySide
        } else {
            JointBackward::Whole
        }
    }
}

/// The outputs of a joint training forward, prepared for the backward strategy it ran with.
#[derive(Debug)]
pub struct JointForward {
    /// What the model returned.
    pub outputs: TrainOutputs,
    /// For [`JointBackward::SideBySide`]: the encoder features and each branch's copies of them.
    split: Option<SplitInputs>,
}

impl JointForward {
    /// Whether the branches' graphs are separate ([`JointBackward::SideBySide`]).
    pub fn is_split(&self) -> bool {
        self.split.is_some()
    }

    /// Another handle to the split inputs (the leaf copies keep their gradients).
    pub(crate) fn split_inputs(&self) -> Option<SplitInputs> {
        self.split.as_ref().map(SplitInputs::shallow_clone)
    }
}

/// [`Dis2Net::forward_train`] for `strategy`: for [`JointBackward::SideBySide`] the branches read
/// their own leaf copies of the encoder features. Errors are the model's (inputs, scenario).
pub fn forward_joint(
    net: &Dis2Net,
    scenario: &Scenario,
    inputs: &[Option<&Tensor>],
    train: bool,
    strategy: JointBackward,
) -> Result<JointForward> {
    match strategy {
        JointBackward::Whole => Ok(JointForward {
            outputs: net.forward_train(scenario, inputs, train)?,
            split: None,
        }),
        JointBackward::SideBySide => {
            let enc = net.forward_train_encoders(inputs, train)?;
            let split = SplitInputs::new(enc.features);
            let outputs = net.forward_train_branches(
                scenario,
                inputs,
                enc.aux_preds,
                &split.teacher,
                &split.student,
                train,
            )?;
            Ok(JointForward {
                outputs,
                split: Some(split),
            })
        }
    }
}

/// The encoder features of a side-by-side joint forward and each branch's leaf copies of them.
#[derive(Debug)]
pub(crate) struct SplitInputs {
    /// The encoders' outputs, with their graph (`None` for an absent modality).
    encoder: Vec<Option<Features>>,
    /// What the teacher branch read.
    teacher: Vec<Option<Features>>,
    /// What the student branch (its slots and the orthogonality loss) read.
    student: Vec<Option<Features>>,
}

/// Leaf copies (sharing storage) of `features`, each requiring its own gradient.
fn leaf_copies(features: &[Option<Features>]) -> Vec<Option<Features>> {
    features
        .iter()
        .map(|f| {
            f.as_ref().map(|levels| {
                levels
                    .each_ref()
                    .map(|t| t.detach().set_requires_grad(true))
            })
        })
        .collect()
}

/// Other handles to the same tensors.
fn shallow_copies(features: &[Option<Features>]) -> Vec<Option<Features>> {
    features
        .iter()
        .map(|l| l.as_ref().map(|l| l.each_ref().map(|t| t.shallow_clone())))
        .collect()
}

impl SplitInputs {
    fn new(encoder: Vec<Option<Features>>) -> Self {
        SplitInputs {
            teacher: leaf_copies(&encoder),
            student: leaf_copies(&encoder),
            encoder,
        }
    }

    /// The encoders' outputs (with their graph), every level of every present modality.
    pub(crate) fn encoder_features(&self) -> impl Iterator<Item = &Tensor> {
        self.encoder
            .iter()
            .flatten()
            .flat_map(|levels| levels.iter())
    }

    fn shallow_clone(&self) -> Self {
        SplitInputs {
            encoder: shallow_copies(&self.encoder),
            teacher: shallow_copies(&self.teacher),
            student: shallow_copies(&self.student),
        }
    }
}

/// The joint objective in three parts, each with its graph: the encoders' own (auxiliary)
/// losses, the teacher branch's and the student branch's.
#[derive(Debug)]
pub(crate) struct JointLoss {
    pub encoder: Tensor,
    pub teacher: Tensor,
    pub student: Tensor,
}

impl JointLoss {
    /// The value of the whole objective (no graph).
    pub fn total(&self) -> Tensor {
        self.total_with_graph().detach()
    }

    /// The whole objective as one tensor with its graph; its backward pass reaches the encoders
    /// only if the branches read them directly (inputs not split).
    fn total_with_graph(&self) -> Tensor {
        &self.encoder + &self.teacher + &self.student
    }

    /// The backward pass of `scale` times the objective, given the split inputs of the forward
    /// pass (`None` for [`JointBackward::Whole`]): on two threads when the branches are separate
    /// graphs, otherwise one backward pass over the whole graph.
    pub fn backward(&self, split: Option<&SplitInputs>, scale: f64) -> Result<()> {
        match split {
            Some(inputs) => {
                backward_side_by_side(inputs, &self.encoder, &self.teacher, &self.student, scale)
            }
            None => Ok((self.total_with_graph() * scale).f_backward()?),
        }
    }
}

/// Runs the backward pass of `encoder_loss + teacher_loss + student_loss` (each scaled by
/// `scale`) for split `inputs`: the teacher's and the student's losses on two threads, then the
/// encoders' part. `teacher_loss` may only depend on the encoders through `inputs.teacher`,
/// `student_loss` through `inputs.student`, and `encoder_loss` (the auxiliary decoders) on no
/// branch.
fn backward_side_by_side(
    inputs: &SplitInputs,
    encoder_loss: &Tensor,
    teacher_loss: &Tensor,
    student_loss: &Tensor,
    scale: f64,
) -> Result<()> {
    backward_branches(teacher_loss * scale, student_loss * scale)?;
    backward_encoders(inputs, encoder_loss, scale)
}

/// The backward passes of the teacher's and the student's losses, one thread each.
fn backward_branches(teacher: Tensor, student: Tensor) -> Result<()> {
    // One intra-op thread per branch, set for these two threads only: the process-wide default
    // (which threads starting meanwhile would pick up) stays as it is.
    let branch = move |loss: Tensor| -> Result<()> {
        let previous = crate::native::set_thread_local_threads(1);
        let done = if loss.requires_grad() {
            loss.f_backward().map_err(anyhow::Error::from)
        } else {
            Ok(())
        };
        crate::native::set_thread_local_threads(previous);
        done
    };
    let (t, s) = std::thread::scope(|scope| {
        let t = scope.spawn(move || branch(teacher));
        let s = branch(student);
        (t.join(), s)
    });
    t.map_err(|_| anyhow!("the teacher's backward thread panicked"))??;
    s
}

/// The encoders' backward pass: their own (auxiliary) loss, and each feature with the sum of the
/// gradients the two branches sent to their copies of it.
fn backward_encoders(inputs: &SplitInputs, encoder_loss: &Tensor, scale: f64) -> Result<()> {
    let mut roots = Vec::new();
    let mut grads = Vec::new();
    if encoder_loss.requires_grad() {
        roots.push(encoder_loss * scale);
        grads.push(Tensor::ones(
            [],
            (encoder_loss.kind(), encoder_loss.device()),
        ));
    }
    let levels = |f: &[Option<Features>]| -> Vec<Option<Tensor>> {
        f.iter()
            .flat_map(|l| match l {
                Some(levels) => levels.each_ref().map(|t| Some(t.shallow_clone())),
                None => [None, None, None, None],
            })
            .collect()
    };
    for ((feature, t), s) in levels(&inputs.encoder)
        .into_iter()
        .zip(levels(&inputs.teacher))
        .zip(levels(&inputs.student))
    {
        let (Some(feature), Some(t), Some(s)) = (feature, t, s) else {
            continue;
        };
        let grad = match (t.grad(), s.grad()) {
            (a, b) if a.defined() && b.defined() => a + b,
            (a, _) if a.defined() => a,
            (_, b) if b.defined() => b,
            _ => continue,
        };
        if feature.requires_grad() {
            roots.push(feature);
            grads.push(grad);
        }
    }
    if roots.is_empty() {
        return Ok(());
    }
    let roots: Vec<&Tensor> = roots.iter().collect();
    let grads: Vec<&Tensor> = grads.iter().collect();
    crate::native::backward(&roots, &grads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::ModalitySpec;

    fn config(width: i64, crop: i64) -> ModelConfig {
        ModelConfig {
            base_width: width,
            num_classes: 5,
            crop: [crop, crop],
            heads: 8,
            ffn_dim: 256,
            depth: 2,
            modalities: vec![ModalitySpec {
                name: "rgb".into(),
                channels: 3,
            }],
            scenarios: None,
            decoder: Default::default(),
            fusion: Default::default(),
        }
    }

    /// The settings of `make bench-step`: width 8 at 64², batch 8 side by side; width 32 at
    /// 128², batch 4 whole; never side by side off the CPU.
    #[test]
    fn side_by_side_only_for_small_models_on_the_cpu() {
        use JointBackward::*;
        assert_eq!(
            JointBackward::choose(Device::Cpu, &config(8, 64), 8),
            SideBySide
        );
        assert_eq!(
            JointBackward::choose(Device::Cpu, &config(32, 128), 4),
            Whole
        );
        assert_eq!(
            JointBackward::choose(Device::Cuda(0), &config(8, 64), 8),
            Whole
        );
    }
}
