//! The backward pass of a joint training step (teacher and student together, as the reference
//! trains and `dis2 distill --joint` does) with the two branches on two threads.
//!
//! [`super::Dis2Net::forward_train`] gives each branch its own leaf copies of the encoder
//! features ([`BranchInputs`]), so the teacher's loss and the student's loss hang off two separate
//! graphs. [`backward_joint`] runs their backward passes at the same time, one thread each with
//! one intra-op thread, then runs the encoders' backward once with the two branches' gradients
//! summed. On two cores the small operations of a narrow model leave the second core mostly
//! idle within one op; two independent streams of ops keep both busy. Wide models keep the cores
//! busy within each op, and there one stream is faster: [`branch_threads_pay`] decides.
//!
//! The parameter gradients equal those of one backward pass over the whole graph up to the order
//! of floating-point additions at the encoder features (teacher + student, always in that order,
//! so the same inputs give the same numbers). The forward pass is unchanged and runs on the
//! calling thread, so random draws (dropout) keep their order.

use anyhow::{anyhow, Result};
use tch::Tensor;

use super::config::ModelConfig;
use super::encoder::Features;

/// Above this many `base_width² · crop pixels · batch`, one branch at a time with every core on
/// each op is faster than the two branches side by side (measured on 2 cores: width 8 at 64²,
/// batch 8, is 2.1 M and gains about 5%; width 32 at 128², batch 4, is 67 M and loses 2-8%).
const SMALL_STEP: i64 = 1 << 23;

/// Whether running the teacher's and the student's backward passes side by side pays for this
/// model and batch size (small convolutions leave cores idle within an op; large ones do not).
pub fn branch_threads_pay(cfg: &ModelConfig, batch: i64) -> bool {
    let [h, w] = cfg.crop;
    cfg.base_width * cfg.base_width * h * w * batch <= SMALL_STEP
}

/// The encoder features of a joint training forward and what each branch read of them.
#[derive(Debug)]
pub struct BranchInputs {
    /// The encoders' outputs, with their graph (`None` for an absent modality).
    pub(super) encoder: Vec<Option<Features>>,
    /// What the teacher branch read.
    pub(super) teacher: Vec<Option<Features>>,
    /// What the student branch (its slots and the orthogonality loss) read.
    pub(super) student: Vec<Option<Features>>,
    /// Whether `teacher` and `student` are leaf copies (separate graphs) or the encoder outputs
    /// themselves (one graph).
    split: bool,
}

/// Leaf copies (sharing storage) of `features`, each requiring its own gradient.
pub(super) fn leaf_copies(features: &[Option<Features>]) -> Vec<Option<Features>> {
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

impl BranchInputs {
    /// `split`: give each branch its own leaf copies; otherwise both read the encoder outputs.
    pub(super) fn new(encoder: Vec<Option<Features>>, split: bool) -> Self {
        let (teacher, student) = if split {
            (leaf_copies(&encoder), leaf_copies(&encoder))
        } else {
            (shallow_copies(&encoder), shallow_copies(&encoder))
        };
        BranchInputs {
            teacher,
            student,
            encoder,
            split,
        }
    }

    /// Another handle to the same tensors (the leaf copies keep their gradients).
    pub fn shallow_clone(&self) -> Self {
        BranchInputs {
            encoder: shallow_copies(&self.encoder),
            teacher: shallow_copies(&self.teacher),
            student: shallow_copies(&self.student),
            split: self.split,
        }
    }

    /// Whether the branches' backward passes are separate graphs.
    pub fn is_split(&self) -> bool {
        self.split
    }
}

/// The joint objective in three parts, each with its graph: the encoders' own (auxiliary)
/// losses, the teacher branch's and the student branch's.
#[derive(Debug)]
pub struct JointLoss {
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

    /// The backward pass of `scale` times the objective, given the branch inputs the forward pass
    /// returned (`None` where it returned none): on two threads when the branches are separate
    /// graphs, otherwise one backward pass over the whole graph.
    pub fn backward(&self, inputs: Option<&BranchInputs>, scale: f64) -> Result<()> {
        match inputs {
            Some(inputs) if inputs.split => {
                backward_joint(inputs, &self.encoder, &self.teacher, &self.student, scale)
            }
            _ => Ok((self.total_with_graph() * scale).f_backward()?),
        }
    }
}

/// Runs the backward pass of `encoder_loss + teacher_loss + student_loss` (each scaled by
/// `scale`) for split `inputs`: the teacher's and the student's losses on two threads, then the
/// encoders' part. `teacher_loss` may only depend on the encoders through `inputs.teacher`,
/// `student_loss` through `inputs.student`, and `encoder_loss` (the auxiliary decoders) on no
/// branch.
fn backward_joint(
    inputs: &BranchInputs,
    encoder_loss: &Tensor,
    teacher_loss: &Tensor,
    student_loss: &Tensor,
    scale: f64,
) -> Result<()> {
    let (teacher, student) = (teacher_loss * scale, student_loss * scale);
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
    s?;

    // The encoders: their own (auxiliary) loss, and each feature with the sum of the gradients
    // the two branches sent to their copies of it.
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
