//! The DIS2 network for M >= 2 modalities: a teacher (full-modality) branch plus one student
//! branch per missing-modality scenario. With M = 1 (and `scenarios: []`) it is the teacher
//! alone: the single-modality baseline.
//!
//! ```text
//!  x_1 ... x_M                      (one tensor per modality, [B, C_i, H, W])
//!   |       |
//!  Enc_1 .. Enc_M  --aux decoders--> single-modality predictions (training only)
//!   |       |
//!   +---+---+--------------------------------+  teacher: all M slots from Enc_i
//!       |                                    |
//!       |   scenario S (missing set):        |
//!       |   slot i = Enc_i(x_i)      if i available
//!       |   slot i = Comp_{S,i}(concat of available x)   if i missing
//!       v                                    v
//!   HF_S (levels 1-3 conv, level 4 transformer)   HF_T
//!   CFLM_S (class-wise attention + decoder)       CFLM_T
//!       |                                    |
//!   student prediction  <--- DLKD (pooled levels 1-3, fusion token,
//!                                  penultimate map, T² KL on logits) --- teacher prediction
//! ```
//!
//! With two modalities this is exactly the reference `DLKD_ver4` (modality 0 is its "rgb",
//! modality 1 its "ndsm").
//!
//! API (inputs are one tensor per modality, `&[Option<&Tensor>]` of length M, in
//! `ModelConfig::modalities` order; a missing modality may be `None` and is never read):
//! - [`Dis2Net::new`]`(&vs.root(), &cfg)` builds the model for `cfg.scenario_list()`.
//! - [`Dis2Net::forward_route`]`(&route, &inputs, train)`, the one inference forward: softmax
//!   probabilities `[B, K, H, W]` of the branch a [`Route`] names (the teacher, a student, or the
//!   teacher with the missing inputs filled).
//! - [`Dis2Net::attention_maps`]`(scenario, &inputs)` gives a branch's CFLM class-wise spatial
//!   attention `[B, K, H/16, W/16]` (the paper's qualitative figure, `dis2 eval --attention-maps`).
//! - The training forwards, one per kind of run, each building one graph over the parts that
//!   kind trains: [`Dis2Net::forward_train_teacher`] (`train-teacher`), [`Dis2Net::forward_distill`]
//!   (`distill`) and [`Dis2Net::forward_train`] (`distill --joint`: teacher and student together,
//!   as the reference trains). The last two return [`TrainOutputs`]: both branches' outputs and
//!   the features DLKD and the orthogonality loss compare ([`DistillFeatures`]); the losses
//!   themselves are assembled in `dis2::train::dlkd`. [`Dis2Net::forward_train`] is two stages,
//!   [`Dis2Net::forward_train_encoders`] and [`Dis2Net::forward_train_branches`], which a trainer
//!   may call apart to give each branch its own copies of the encoder features (the side-by-side
//!   backward pass of `dis2::train::joint_backward`).
//!
//! Inference outputs are contiguous; the training outputs may be stored channels-last (the
//! network computes in that layout), so reshape them rather than `view`.
//!
//! Precision: every forward computes in [`Dis2Net::precision`], fp32 unless
//! [`Dis2Net::set_precision`] (training, autocast-style) or [`Dis2Net::prepare_inference`]
//! (BatchNorm folded, bfloat16 weights, no autograd state) chose bf16. Probabilities, the pooled
//! features of [`DistillFeatures`] and the fusion token are float32 in either.
//!
//! Variable names: `encoders.{i}`, `teacher.{fuse,attention,decoder,fuse_pool}`,
//! `students.{key}.{comp.{i},comp_pool.{i},dist_pool.{a},fuse,attention,decoder,fuse_pool}` with
//! `key` from [`Scenario::key`].
//!
//! Ablations (`model.fusion`, `model.decoder`; the defaults are the reference network): `level4`
//! fusion drops HF's levels 1-3 ([`HierarchicalFusion`]); the `plain` decoder replaces the CFLM
//! ([`PlainDecoder`]) and the branch has no `attention`.

use anyhow::{bail, ensure, Context, Result};
use tch::{nn, Kind, Tensor};

use super::cflm::ClassWiseAttention;
use super::config::{DecoderKind, ModelConfig};
use super::decoder::{ClassWiseDecoder, DecoderOutputs};
use super::encoder::{Encoder, Features};
use super::fusion::{Fused, HierarchicalFusion};
use super::plain_decoder::PlainDecoder;
use super::pool::LevelPools;
use super::route::Route;
use super::scenario::Scenario;
use crate::precision::{with_precision, Precision};

/// What follows HF in a branch: the CFLM, or the plain decoder of its ablation.
// One per branch, built once: the variants' sizes (a few kB of handles) do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Head {
    /// CFLM: class-wise spatial attention and the class-wise decoder (`model.decoder:
    /// classwise`).
    ClassWise {
        attention: ClassWiseAttention,
        decoder: ClassWiseDecoder,
    },
    /// The "no CFLM" ablation (`model.decoder: plain`).
    Plain(PlainDecoder),
}

impl Head {
    fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        let (w, k) = (cfg.base_width, cfg.num_classes);
        match cfg.decoder {
            DecoderKind::ClassWise => Head::ClassWise {
                attention: ClassWiseAttention::new(&(p / "attention"), 8 * w, k),
                decoder: ClassWiseDecoder::new(&(p / "decoder"), w, k, cfg.crop),
            },
            DecoderKind::Plain => Head::Plain(PlainDecoder::new(&(p / "decoder"), w, k, cfg.crop)),
        }
    }

    /// The decoder outputs and, for the CFLM, the class-wise features `[B, K, 8w, h, w]`.
    fn forward(&self, fused: &Fused, scales: bool) -> (DecoderOutputs, Option<Tensor>) {
        match self {
            Head::ClassWise { attention, decoder } => {
                let classwise = attention.forward(&fused.levels[3]);
                let out = decoder.forward(&fused.levels, &classwise, scales);
                (out, Some(classwise))
            }
            Head::Plain(decoder) => (decoder.forward(&fused.levels, scales), None),
        }
    }

    fn prepare_inference(&mut self, kind: Kind) {
        match self {
            Head::ClassWise { attention, decoder } => {
                attention.prepare_inference();
                decoder.prepare_inference(kind);
            }
            Head::Plain(decoder) => decoder.prepare_inference(kind),
        }
    }
}

/// HF + CFLM of one branch (or their ablations, after `model.fusion` and `model.decoder`).
#[derive(Debug)]
struct Branch {
    fuse: HierarchicalFusion,
    head: Head,
    /// Attention pools of the fused levels 1..3 for DLKD.
    fuse_pool: LevelPools,
}

impl Branch {
    fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        Branch {
            fuse: HierarchicalFusion::new(&(p / "fuse"), cfg),
            head: Head::new(p, cfg),
            fuse_pool: LevelPools::new(&(p / "fuse_pool"), cfg.base_width),
        }
    }

    fn forward(&self, slots: &[&Features], train: bool, scales: bool) -> (Fused, DecoderOutputs) {
        let fused = self.fuse.forward_t(slots, train);
        let (out, _) = self.head.forward(&fused, scales);
        (fused, out)
    }

    fn prepare_inference(&mut self, kind: Kind) {
        self.fuse.prepare_inference(kind);
        self.head.prepare_inference(kind);
        self.fuse_pool.prepare_inference(kind);
    }
}

/// The student of one scenario.
#[derive(Debug)]
struct Student {
    scenario: Scenario,
    /// One compensation encoder per missing modality (order of `scenario.missing()`), reading
    /// the available modalities concatenated along channels.
    comps: Vec<Encoder>,
    /// Pools of the compensation features (orthogonality loss), same order.
    comp_pools: Vec<LevelPools>,
    /// Pools of the available modalities' encoder features (orthogonality loss), in the order of
    /// `scenario.available(M)`.
    dist_pools: Vec<LevelPools>,
    branch: Branch,
}

impl Student {
    fn prepare_inference(&mut self, kind: Kind) {
        self.comps
            .iter_mut()
            .for_each(|c| c.prepare_inference(kind));
        for pools in self.comp_pools.iter_mut().chain(&mut self.dist_pools) {
            pools.prepare_inference(kind);
        }
        self.branch.prepare_inference(kind);
    }
}

/// What a branch reads at inference: see [`Dis2Net::branch_features`].
struct BranchFeatures<'n> {
    /// `None` for the teacher.
    student: Option<&'n Student>,
    /// The modalities the branch reads, in model order.
    avail: Vec<usize>,
    /// Encoder features per modality; `None` where the branch does not read it.
    enc: Vec<Option<Features>>,
    /// Compensation features, in the order of the scenario's missing modalities.
    comp: Vec<Features>,
}

/// One branch's outputs in the training forward: its decoder's outputs (prediction,
/// deep-supervision maps, logits, penultimate features).
pub type BranchOutputs = DecoderOutputs;

/// Everything the training objectives need from a forward of teacher and student (reference
/// `dict_results`); the DLKD and orthogonality losses are made from it in `dis2::train::dlkd`.
#[derive(Debug)]
pub struct TrainOutputs {
    /// Auxiliary single-modality predictions, one per modality (softmax).
    pub aux_preds: Vec<Tensor>,
    /// Teacher (full-modality) branch; its penultimate map and logits are DLKD's targets.
    pub teacher: BranchOutputs,
    /// Student branch of the scenario.
    pub student: BranchOutputs,
    /// The fused and pooled features DLKD and the orthogonality loss compare.
    pub distill: DistillFeatures,
}

/// A branch's fused features as DLKD compares them: HF's outputs (reference
/// `HiererchicalFusion`) and their attention pools (reference `HierarchicalAttnPool`).
#[derive(Debug)]
pub struct FusedTokens {
    /// HF's output fusion token `[B, 8w]`, float32.
    pub global: Tensor,
    /// The fused levels 1-3 pooled by the branch's `fuse_pool`: `[B, w·2^l]` for l = 0, 1, 2,
    /// float32.
    pub pooled: Vec<Tensor>,
}

/// The features of a training forward that DLKD (teacher against student) and the
/// orthogonality loss (compensation against available features) compare, pooled by the
/// student's attention pools (`fuse_pool`, `comp_pool`, `dist_pool`); every pooled feature is
/// `[B, w·2^l]` for levels l = 0, 1, 2, float32.
#[derive(Debug)]
pub struct DistillFeatures {
    /// The teacher's, pooled without a graph: they are DLKD's targets, which nothing trains.
    pub teacher: FusedTokens,
    /// The student's, with their graph.
    pub student: FusedTokens,
    /// Per missing modality (in the order of [`Scenario::missing`]), its compensation features
    /// pooled at levels 1-3.
    pub compensation: Vec<Vec<Tensor>>,
    /// Per available modality (in the order of [`Scenario::available`]), its encoder features as
    /// the student read them, pooled at levels 1-3.
    pub available: Vec<Vec<Tensor>>,
}

/// The encoders' part of a training forward ([`Dis2Net::forward_train_encoders`]).
#[derive(Debug)]
pub struct EncoderOutputs {
    /// Each modality's features `[B, w·2^l, H/2^(l+1), W/2^(l+1)]`, l = 0..3, with their graph,
    /// in model order (every entry `Some`: a training forward needs every input).
    pub features: Vec<Option<Features>>,
    /// Auxiliary single-modality predictions (softmax `[B, K, H, W]`), one per modality.
    pub aux_preds: Vec<Tensor>,
}

/// The variable-store folder of the students: `students.{key}.…` (see [`student_key`]).
const STUDENTS: &str = "students";

/// The scenario key ([`Scenario::key`]) of the student a variable of [`Dis2Net`] belongs to:
/// `Some("m2")` for `students.m2.fuse.…`, `None` for the shared part (the encoders and the
/// teacher branch), which distillation freezes and every student of one teacher holds bit for
/// bit. The one rule that splits a model's variables into teacher and students.
pub fn student_key(variable: &str) -> Option<&str> {
    let rest = variable.strip_prefix(STUDENTS)?.strip_prefix('.')?;
    Some(rest.split('.').next().unwrap_or(rest))
}

/// The DIS2 network. See the module documentation.
#[derive(Debug)]
pub struct Dis2Net {
    cfg: ModelConfig,
    device: tch::Device,
    scenarios: Vec<Scenario>,
    encoders: Vec<Encoder>,
    teacher: Branch,
    students: Vec<Student>,
    /// What every forward computes in.
    precision: Precision,
    /// Prepared for inference ([`Dis2Net::prepare_inference`]): no training forwards.
    inference: bool,
}

impl Dis2Net {
    /// Builds the model for `cfg` (validated here) with a student for every scenario of
    /// `cfg.scenario_list()`.
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Result<Self> {
        cfg.validate()?;
        let scenarios = cfg.scenario_list()?;
        let w = cfg.base_width;
        let k = cfg.num_classes;
        let m = cfg.modalities.len();
        let encoders = cfg
            .modalities
            .iter()
            .enumerate()
            .map(|(i, spec)| Encoder::new(&(p / "encoders" / i), spec.channels, w, Some(k)))
            .collect();
        let teacher = Branch::new(&(p / "teacher"), cfg);
        let students = scenarios
            .iter()
            .map(|s| {
                let sp = p / STUDENTS / s.key();
                let avail = s.available(m);
                let c_in: i64 = avail.iter().map(|&a| cfg.modalities[a].channels).sum();
                Student {
                    scenario: s.clone(),
                    comps: s
                        .missing()
                        .iter()
                        .map(|&i| Encoder::new(&(&sp / "comp" / i), c_in, w, None))
                        .collect(),
                    comp_pools: s
                        .missing()
                        .iter()
                        .map(|&i| LevelPools::new(&(&sp / "comp_pool" / i), w))
                        .collect(),
                    dist_pools: avail
                        .iter()
                        .map(|&a| LevelPools::new(&(&sp / "dist_pool" / a), w))
                        .collect(),
                    branch: Branch::new(&sp, cfg),
                }
            })
            .collect();
        Ok(Dis2Net {
            cfg: cfg.clone(),
            device: p.device(),
            scenarios,
            encoders,
            teacher,
            students,
            precision: Precision::Fp32,
            inference: false,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The precision every forward computes in (fp32 unless set).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Sets the precision of every forward. bf16 is autocast-style mixed precision for training:
    /// convolutions and matrix products run in bfloat16 (libtorch's autocast, accumulating in
    /// float32) while the parameters, and so their gradients and the optimiser state, stay
    /// float32; normalisations, softmaxes, attention scores, the transformer's residual stream and
    /// the losses' inputs are float32. For inference, [`Self::prepare_inference`] does more.
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    /// Prepares the model for inference in `precision`: every BatchNorm folded into the
    /// convolution before it (its running statistics, as in eval mode), the convolution and
    /// projection weights stored in the computing precision (bfloat16 for bf16, so that no weight
    /// is cast per call), every tensor the model holds detached (no autograd state), and
    /// [`Self::precision`] set. Eval-mode predictions equal the unprepared model's up to float
    /// rounding (1e-5 in fp32, `tests/precision.rs`). The variable store is left as it was;
    /// training forwards refuse a prepared model.
    pub fn prepare_inference(&mut self, precision: Precision) {
        let kind = match precision {
            Precision::Fp32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
        };
        self.encoders
            .iter_mut()
            .for_each(|e| e.prepare_inference(kind));
        self.teacher.prepare_inference(kind);
        self.students
            .iter_mut()
            .for_each(|s| s.prepare_inference(kind));
        self.precision = precision;
        self.inference = true;
    }

    /// Whether [`Self::prepare_inference`] ran.
    #[cfg(test)]
    pub(crate) fn is_prepared_for_inference(&self) -> bool {
        self.inference
    }

    /// Runs `f` in the model's precision on its device.
    fn compute<T>(&self, f: impl FnOnce() -> T) -> T {
        with_precision(self.device, self.precision, f)
    }

    /// Training forwards need the model as built (BatchNorm not folded, weights with gradients).
    fn ensure_trainable(&self) -> Result<()> {
        ensure!(
            !self.inference,
            "this model was prepared for inference (BatchNorm folded, weights frozen): a training \
             forward needs the model as loaded"
        );
        Ok(())
    }

    /// The scenarios this model has students for.
    pub fn scenarios(&self) -> &[Scenario] {
        &self.scenarios
    }

    /// Splits a stacked input `[B, ΣC_i, H, W]` into one tensor per modality.
    pub fn split_input(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let total: i64 = self.cfg.modalities.iter().map(|m| m.channels).sum();
        let s = x.size();
        if s.len() != 4 || s[1] != total {
            bail!("input: expected [B, {total}, H, W] (all modalities stacked), got {s:?}");
        }
        let sizes: Vec<i64> = self.cfg.modalities.iter().map(|m| m.channels).collect();
        Ok(x.split_with_sizes(sizes.as_slice(), 1))
    }

    /// Checks that the modalities in `need` are given with the right shapes; returns nothing on
    /// success. Errors name the modality, the expected and the given shape.
    fn check_inputs(&self, inputs: &[Option<&Tensor>], need: &[usize]) -> Result<()> {
        let m = self.cfg.modalities.len();
        if inputs.len() != m {
            bail!(
                "inputs: expected {m} entries (one per modality), got {}",
                inputs.len()
            );
        }
        let [h, w] = self.cfg.crop;
        let mut batch = None;
        for &i in need {
            let spec = &self.cfg.modalities[i];
            let Some(x) = inputs[i] else {
                bail!(
                    "input {:?}: required in this scenario but not given",
                    spec.name
                );
            };
            let s = x.size();
            if s.len() != 4 || s[1] != spec.channels || s[0] < 1 {
                bail!(
                    "input {:?}: expected [B, {}, H, W] with B >= 1, got {s:?}",
                    spec.name,
                    spec.channels
                );
            }
            if s[2] != h || s[3] != w {
                bail!(
                    "input {:?}: expected size {h}x{w} (the crop the model's positional \
                     embeddings were made for), got {}x{}",
                    spec.name,
                    s[2],
                    s[3]
                );
            }
            if x.kind() != Kind::Float {
                bail!(
                    "input {:?}: expected float32, got {:?}",
                    spec.name,
                    x.kind()
                );
            }
            if x.device() != self.device {
                bail!(
                    "input {:?}: on {:?}, the model is on {:?}",
                    spec.name,
                    x.device(),
                    self.device
                );
            }
            match batch {
                None => batch = Some(s[0]),
                Some(b) if b != s[0] => {
                    bail!("input {:?}: batch {} differs from {b}", spec.name, s[0])
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn student(&self, scenario: &Scenario) -> Result<&Student> {
        self.students
            .iter()
            .find(|s| &s.scenario == scenario)
            .with_context(|| {
                let have: Vec<String> = self
                    .scenarios
                    .iter()
                    .map(|s| format!("[{}]", s.names(&self.cfg).join(", ")))
                    .collect();
                let have = if have.is_empty() {
                    "none (a teacher alone)".to_string()
                } else {
                    have.join(", ")
                };
                format!(
                    "this model has no student for scenario [{}]; it has {have}",
                    scenario.names(&self.cfg).join(", "),
                )
            })
    }

    /// Features of the compensation encoders of a student (reading the available inputs).
    fn compensation(&self, st: &Student, inputs: &[Option<&Tensor>], train: bool) -> Vec<Features> {
        let avail: Vec<Tensor> = st
            .scenario
            .available(self.cfg.modalities.len())
            .iter()
            .filter_map(|&a| inputs[a].map(|t| t.shallow_clone()))
            .collect();
        let x = if avail.len() == 1 {
            avail[0].shallow_clone()
        } else {
            Tensor::cat(&avail, 1)
        };
        st.comps.iter().map(|c| c.features(&x, train)).collect()
    }

    /// The M slot features of a student: encoder features where available, compensation
    /// features where missing.
    fn slots<'a>(
        &self,
        st: &Student,
        enc: &'a [Option<Features>],
        comp: &'a [Features],
    ) -> Result<Vec<&'a Features>> {
        (0..self.cfg.modalities.len())
            .map(
                |i| match st.scenario.missing().iter().position(|&j| j == i) {
                    Some(c) => Ok(&comp[c]),
                    None => enc[i].as_ref().with_context(|| {
                        format!("input {:?}: not given", self.cfg.modalities[i].name)
                    }),
                },
            )
            .collect()
    }

    /// Checks the inputs a branch reads and runs its encoders: the teacher's (`scenario` `None`,
    /// every modality) or the student's of `scenario` (the available modalities' encoders and
    /// the compensation encoders of the missing ones). The one place the inference path of a
    /// branch is assembled, shared by the forwards, [`Self::trace`] and
    /// [`Self::attention_maps`].
    fn branch_features(
        &self,
        scenario: Option<&Scenario>,
        inputs: &[Option<&Tensor>],
        train: bool,
    ) -> Result<BranchFeatures<'_>> {
        let m = self.cfg.modalities.len();
        let student = scenario.map(|s| self.student(s)).transpose()?;
        let avail = scenario
            .map(|s| s.available(m))
            .unwrap_or_else(|| (0..m).collect());
        self.check_inputs(inputs, &avail)?;
        let mut enc: Vec<Option<Features>> = (0..m).map(|_| None).collect();
        for &i in &avail {
            enc[i] = inputs[i].map(|x| self.encoders[i].features(x, train));
        }
        let comp = match student {
            Some(st) => self.compensation(st, inputs, train),
            None => Vec::new(),
        };
        Ok(BranchFeatures {
            student,
            avail,
            enc,
            comp,
        })
    }

    /// The branch of `f` and its M slot features.
    fn branch_slots<'a>(
        &'a self,
        f: &'a BranchFeatures,
    ) -> Result<(&'a Branch, Vec<&'a Features>)> {
        Ok(match f.student {
            None => (&self.teacher, f.enc.iter().flatten().collect()),
            Some(st) => (&st.branch, self.slots(st, &f.enc, &f.comp)?),
        })
    }

    /// The prediction of the teacher (`scenario` `None`) or of that student: see
    /// [`Self::forward_route`].
    fn forward_branch(
        &self,
        scenario: Option<&Scenario>,
        inputs: &[Option<&Tensor>],
        train: bool,
    ) -> Result<Tensor> {
        if train {
            self.ensure_trainable()?;
        }
        self.compute(|| {
            let f = self.branch_features(scenario, inputs, train)?;
            let (branch, slots) = self.branch_slots(&f)?;
            Ok(branch.forward(&slots, train, false).1.pred.contiguous())
        })
    }

    /// The CFLM class-wise spatial attention of a branch (inference mode, no graph): the
    /// teacher's when `scenario` is `None`, else that student's. `[B, K, h, w]` at the level-4
    /// resolution (crop / 16); each class's map sums to 1 over its pixels. Inputs and errors as
    /// for [`Self::forward_route`].
    pub fn attention_maps(
        &self,
        scenario: Option<&Scenario>,
        inputs: &[Option<&Tensor>],
    ) -> Result<Tensor> {
        tch::no_grad(|| {
            self.compute(|| {
                let f = self.branch_features(scenario, inputs, false)?;
                let (branch, slots) = self.branch_slots(&f)?;
                let Head::ClassWise { attention, .. } = &branch.head else {
                    bail!(
                        "this model has no class-wise attention (CFLM): it was built with \
                     `model.decoder: plain`"
                    );
                };
                let fused = branch.fuse.forward_t(&slots, false);
                Ok(attention.weights(&fused.levels[3]).contiguous())
            })
        })
    }

    /// Intermediate activations of the inference path (module in inference mode, no graph), for
    /// comparing a port layer by layer: the teacher's when `scenario` is `None`, else that
    /// student's. Names: `encoders.{i}.e{1..4}`, `encoders.{i}.aux` (auxiliary prediction),
    /// `{branch}.comp.{i}.e{1..4}`, `{branch}.fuse.e{1..4}` (e4 unified), `{branch}.fuse.global`,
    /// `{branch}.attention` (`[B, K, C, h, w]`, CFLM only), `{branch}.decoder.penultimate`,
    /// `{branch}.decoder.logits`, `{branch}.pred`, where `{branch}` is `teacher` or
    /// `students.{key}`.
    pub fn trace(
        &self,
        scenario: Option<&Scenario>,
        inputs: &[Option<&Tensor>],
    ) -> Result<Vec<(String, Tensor)>> {
        tch::no_grad(|| {
            self.compute(|| {
                let f = self.branch_features(scenario, inputs, false)?;
                let mut out = Vec::new();
                let push_levels = |prefix: &str, f: &Features, out: &mut Vec<(String, Tensor)>| {
                    for (l, t) in f.iter().enumerate() {
                        out.push((format!("{prefix}.e{}", l + 1), t.contiguous()));
                    }
                };
                for &i in &f.avail {
                    if let Some(feats) = &f.enc[i] {
                        push_levels(&format!("encoders.{i}"), feats, &mut out);
                        if let Some(p) = self.encoders[i].aux_prediction(feats, false) {
                            out.push((format!("encoders.{i}.aux"), p.contiguous()));
                        }
                    }
                }
                let prefix = match f.student {
                    None => "teacher".to_string(),
                    Some(st) => {
                        let prefix = format!("students.{}", st.scenario.key());
                        for (&i, c) in st.scenario.missing().iter().zip(&f.comp) {
                            push_levels(&format!("{prefix}.comp.{i}"), c, &mut out);
                        }
                        prefix
                    }
                };
                let (branch, slots) = self.branch_slots(&f)?;
                let fused = branch.fuse.forward_t(&slots, false);
                push_levels(&format!("{prefix}.fuse"), &fused.levels, &mut out);
                out.push((format!("{prefix}.fuse.global"), fused.global.contiguous()));
                let (dec, classwise) = branch.head.forward(&fused, false);
                if let Some(classwise) = classwise {
                    out.push((format!("{prefix}.attention"), classwise));
                }
                out.push((
                    format!("{prefix}.decoder.penultimate"),
                    dec.penultimate.contiguous(),
                ));
                out.push((format!("{prefix}.decoder.logits"), dec.logits.contiguous()));
                out.push((format!("{prefix}.pred"), dec.pred.contiguous()));
                Ok(out)
            })
        })
    }

    /// The inference forward, the one way to run a branch: the softmax probabilities
    /// `[B, K, H, W]` (float32, contiguous) of the branch `route` names, from one input
    /// `[B, C_i, H, W]` (float32, `H x W` the model's crop) per modality in
    /// `ModelConfig::modalities` order, `None` where not given.
    ///
    /// - [`Route::Teacher`]: the full-modality branch, every input needed.
    /// - [`Route::Student`]: the student of that missing set (reference `DLKD_ver4` with
    ///   `is_training = False` and the scenario's mask): its compensation encoders read the
    ///   available inputs concatenated; the missing inputs are never read and may be `None`.
    /// - [`Route::TeacherFill`]: the teacher with the missing inputs filled with zeros, the
    ///   training mean (paper section 4, "teacher with missing input filled"; [`Route::inputs`]).
    ///
    /// [`Route::choose`] picks the route for the inputs a user has (with or without filling),
    /// [`Route::of_given`] the one the `None` entries ask for. `train` switches BatchNorm batch
    /// statistics and dropout; the graph is kept unless the caller runs in `tch::no_grad`.
    ///
    /// # Errors
    /// A wrong number of inputs; a needed input missing, or not `[B, C_i, H, W]` float32 on the
    /// model's device with the crop's size and one batch size; a student the model does not have
    /// (the message lists those it has); a filled teacher without any input given; `train` on a
    /// model prepared for inference.
    pub fn forward_route(
        &self,
        route: &Route,
        inputs: &[Option<&Tensor>],
        train: bool,
    ) -> Result<Tensor> {
        let inputs = route.inputs(inputs, &self.cfg.modalities)?;
        let inputs: Vec<Option<&Tensor>> = inputs.iter().map(Option::as_ref).collect();
        self.forward_branch(route.student(), &inputs, train)
    }

    /// The training forward of the reference (`DLKD_ver4` with `is_training = True`), of
    /// `dis2 distill --joint`: every encoder with its auxiliary decoder, the teacher, the student
    /// of `scenario` (both with their deep-supervision maps) and the features DLKD and the
    /// orthogonality loss compare, as one graph, so that one backward pass trains the encoders
    /// through both branches. Needs every input (`[B, C_i, H, W]` float32 at the crop's size).
    /// `train` switches BatchNorm batch statistics and dropout. The same as
    /// [`Self::forward_train_encoders`] followed by [`Self::forward_train_branches`] with both
    /// branches reading the encoders' outputs.
    ///
    /// # Errors
    /// An input missing or of the wrong shape, kind or device; a scenario the model has no
    /// student for; a model prepared for inference.
    pub fn forward_train(
        &self,
        scenario: &Scenario,
        inputs: &[Option<&Tensor>],
        train: bool,
    ) -> Result<TrainOutputs> {
        let enc = self.forward_train_encoders(inputs, train)?;
        self.forward_train_branches(
            scenario,
            inputs,
            enc.aux_preds,
            &enc.features,
            &enc.features,
            train,
        )
    }

    /// The first stage of a training forward: every encoder's features (with their graph) and
    /// auxiliary prediction. Needs every input; errors name the input that is missing or of the
    /// wrong shape.
    pub(crate) fn forward_train_encoders(
        &self,
        inputs: &[Option<&Tensor>],
        train: bool,
    ) -> Result<EncoderOutputs> {
        self.ensure_trainable()?;
        let all: Vec<usize> = (0..self.cfg.modalities.len()).collect();
        self.check_inputs(inputs, &all)?;
        Ok(self.compute(|| {
            let features: Vec<Option<Features>> = self
                .encoders
                .iter()
                .zip(inputs)
                .map(|(e, x)| x.map(|x| e.features(x, train)))
                .collect();
            let aux_preds: Vec<Tensor> = self
                .encoders
                .iter()
                .zip(&features)
                .filter_map(|(e, f)| f.as_ref().and_then(|f| e.aux_prediction(f, train)))
                .collect();
            EncoderOutputs {
                features,
                aux_preds,
            }
        }))
    }

    /// The second stage of [`Self::forward_train`]: the teacher, the student of `scenario` and
    /// their [`DistillFeatures`], given what each branch reads of the encoder features
    /// (one entry per modality, from [`Self::forward_train_encoders`]): the encoders' outputs
    /// themselves, or copies of them when a trainer runs the branches' backward passes apart.
    /// `aux_preds` are passed through to the outputs. Errors for a scenario without a student and
    /// for inputs or features missing.
    pub(crate) fn forward_train_branches(
        &self,
        scenario: &Scenario,
        inputs: &[Option<&Tensor>],
        aux_preds: Vec<Tensor>,
        teacher_reads: &[Option<Features>],
        student_reads: &[Option<Features>],
        train: bool,
    ) -> Result<TrainOutputs> {
        self.ensure_trainable()?;
        let st = self.student(scenario)?;
        let all: Vec<usize> = (0..self.cfg.modalities.len()).collect();
        self.check_inputs(inputs, &all)?;
        let teacher_slots = self.every_modality(teacher_reads)?;
        self.compute(|| {
            let (t_fused, t_out) = self.teacher.forward(&teacher_slots, train, true);

            let comp = self.compensation(st, inputs, train);
            let slots = self.slots(st, student_reads, &comp)?;
            let (s_fused, s_out) = st.branch.forward(&slots, train, true);

            let teacher = self.teacher_tokens(t_fused);
            let distill = self.distill_features(st, teacher, s_fused, student_reads, &comp);
            Ok(TrainOutputs {
                aux_preds,
                teacher: t_out,
                student: s_out,
                distill,
            })
        })
    }

    /// The features of every modality, in model order; an error names the first one missing.
    fn every_modality<'a>(&self, features: &'a [Option<Features>]) -> Result<Vec<&'a Features>> {
        let m = self.cfg.modalities.len();
        if features.len() != m {
            bail!(
                "features: expected {m} entries (one per modality), got {}",
                features.len()
            );
        }
        features
            .iter()
            .zip(&self.cfg.modalities)
            .map(|(f, spec)| {
                f.as_ref()
                    .with_context(|| format!("features of input {:?}: not given", spec.name))
            })
            .collect()
    }
}

/// The teacher's training outputs: the full-modality branch and the auxiliary predictions.
#[derive(Debug)]
pub struct TeacherOutputs {
    /// Auxiliary single-modality predictions, one per modality (softmax).
    pub aux_preds: Vec<Tensor>,
    pub teacher: BranchOutputs,
}

impl Dis2Net {
    /// Training forward of the teacher alone (`dis2 train-teacher`): every encoder with its
    /// auxiliary decoder and the full-modality branch with its deep-supervision maps, one graph.
    /// Inputs and errors as for [`Self::forward_train`] (less the scenario).
    pub fn forward_train_teacher(
        &self,
        inputs: &[Option<&Tensor>],
        train: bool,
    ) -> Result<TeacherOutputs> {
        let enc = self.forward_train_encoders(inputs, train)?;
        let slots = self.every_modality(&enc.features)?;
        let (_, out) = self.compute(|| self.teacher.forward(&slots, train, true));
        Ok(TeacherOutputs {
            aux_preds: enc.aux_preds,
            teacher: out,
        })
    }

    /// Training forward of a student against a frozen teacher (`dis2 distill`): the encoders and
    /// the teacher run in inference mode without a graph and provide the DLKD targets and the
    /// available modalities' features; only the student's parts (compensation encoders, its HF,
    /// CFLM, decoder and pools) see `train` and receive gradients. `aux_preds` is empty; the
    /// teacher's outputs have no graph. Inputs and errors as for [`Self::forward_train`].
    pub fn forward_distill(
        &self,
        scenario: &Scenario,
        inputs: &[Option<&Tensor>],
        train: bool,
    ) -> Result<TrainOutputs> {
        self.ensure_trainable()?;
        let st = self.student(scenario)?;
        let m = self.cfg.modalities.len();
        let all: Vec<usize> = (0..m).collect();
        self.check_inputs(inputs, &all)?;
        self.compute(|| self.distill_branches(st, inputs, train))
    }

    /// [`Self::forward_distill`] once its inputs are checked: the frozen part without a graph,
    /// then the student.
    fn distill_branches(
        &self,
        st: &Student,
        inputs: &[Option<&Tensor>],
        train: bool,
    ) -> Result<TrainOutputs> {
        let (enc, teacher, t_out) = tch::no_grad(|| {
            let enc: Vec<Option<Features>> = self
                .encoders
                .iter()
                .zip(inputs)
                .map(|(e, x)| x.map(|x| e.features(x, false)))
                .collect();
            let teacher_slots: Vec<&Features> = enc.iter().flatten().collect();
            let (t_fused, t_out) = self.teacher.forward(&teacher_slots, false, false);
            (enc, self.teacher_tokens(t_fused), t_out)
        });
        let comp = self.compensation(st, inputs, train);
        let slots = self.slots(st, &enc, &comp)?;
        let (s_fused, s_out) = st.branch.forward(&slots, train, true);
        Ok(TrainOutputs {
            aux_preds: Vec::new(),
            teacher: t_out,
            student: s_out,
            distill: self.distill_features(st, teacher, s_fused, &enc, &comp),
        })
    }

    /// The teacher's side of [`DistillFeatures`], without a graph: DLKD's targets.
    fn teacher_tokens(&self, fused: Fused) -> FusedTokens {
        tch::no_grad(|| FusedTokens {
            pooled: self.teacher.fuse_pool.forward(&fused.levels),
            global: fused.global.detach(),
        })
    }

    /// The [`DistillFeatures`] of student `st`: `teacher`'s tokens, then the student's fused
    /// levels pooled, its pools of the available modalities' features (`enc`, as the student
    /// read them) and of its compensation features `comp`.
    fn distill_features(
        &self,
        st: &Student,
        teacher: FusedTokens,
        s_fused: Fused,
        enc: &[Option<Features>],
        comp: &[Features],
    ) -> DistillFeatures {
        let student = FusedTokens {
            pooled: st.branch.fuse_pool.forward(&s_fused.levels),
            global: s_fused.global,
        };
        let avail = st.scenario.available(self.cfg.modalities.len());
        let available = st
            .dist_pools
            .iter()
            .zip(&avail)
            .filter_map(|(pool, &a)| enc[a].as_ref().map(|f| pool.forward(f)))
            .collect();
        let compensation = st
            .comp_pools
            .iter()
            .zip(comp)
            .map(|(pool, f)| pool.forward(f))
            .collect();
        DistillFeatures {
            teacher,
            student,
            compensation,
            available,
        }
    }
}
