//! `dis2 merge-students`: one checkpoint that holds the teacher shared by several student
//! checkpoints and every student among them, so that one checkpoint serves every
//! missing-modality pattern of a scene (docs/train.md, "One checkpoint for every pattern").
//!
//! With the two-stage protocol each `dis2 distill --teacher T --missing S` run writes a
//! checkpoint holding T's frozen encoders and teacher branch, bit for bit, and the student of S.
//! The merge keeps that shared part once (from the first input) and each student's own
//! variables ([`student_key`] splits the two) from the input that holds it. Inputs may hold
//! several students themselves (a `--joint` checkpoint, an earlier merge).
//!
//! Order: the merged `model.scenarios` are the inputs' scenarios in input order, each input's in
//! its own order, a scenario already taken left out. Provenance: the sidecar's `metadata` holds
//! `source: merge-students` and `merged_from`, the input checkpoints as given; the inputs' own
//! metadata (training step, metrics) is not carried over.
//!
//! Refused, naming the files and what differs, before anything is written: fewer than two
//! inputs; an input without students (a plain teacher adds nothing); inputs made for different
//! networks (any model key but `scenarios`), or with different `class_names`, `class_colours` or
//! `normalisation`; different teachers (the first differing tensor, its largest absolute
//! difference and how many differ); the same scenario in two inputs with different weights (with
//! identical weights one is kept, and the report says so).

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_yaml::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

use crate::checkpoint::{self, CheckpointInfo};
use crate::model::{student_key, Dis2Net, Route, Scenario};

/// The value of the merged sidecar's `metadata.source`.
pub const SOURCE: &str = "merge-students";

/// What a merge wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeReport {
    /// The merged checkpoint's students in their order, each with the input checkpoint its
    /// weights came from.
    pub students: Vec<(Scenario, PathBuf)>,
    /// Students found in more than one input with identical weights, kept once: one line each,
    /// `student[sar]: B holds the same weights as A; kept A's`.
    pub duplicates: Vec<String>,
}

/// A student of the merged checkpoint: its scenario and the index of the input whose weights it
/// takes.
type Sourced = (Scenario, usize);

/// One input checkpoint, read and checked against its own sidecar.
struct Input {
    /// The checkpoint as given.
    path: PathBuf,
    /// Its `.safetensors` and `.yaml` files, for messages.
    weights: PathBuf,
    sidecar: PathBuf,
    info: CheckpointInfo,
    scenarios: Vec<Scenario>,
    /// Every variable by name.
    tensors: BTreeMap<String, Tensor>,
}

/// Merges the students of `inputs` (checkpoint names or directories, as
/// [`checkpoint::load`] takes them) into the checkpoint `out`, written through temporary files
/// and renames (`checkpoint::save`). See the module documentation for the order, the provenance
/// and what is refused; nothing is written when anything is refused.
///
/// # Errors
/// Those of the module documentation, and an input that cannot be read or does not fit its own
/// sidecar ([`checkpoint::load`]).
pub fn merge_students(inputs: &[PathBuf], out: &Path) -> Result<MergeReport> {
    ensure!(
        inputs.len() >= 2,
        "merge-students: {} student checkpoint(s) given; a merge needs two or more",
        inputs.len()
    );
    let inputs = inputs
        .iter()
        .map(|path| read_input(path))
        .collect::<Result<Vec<_>>>()?;
    for input in &inputs[1..] {
        check_sidecars(&inputs[0], input)?;
        check_teachers(&inputs[0], input)?;
    }
    let (students, duplicates) = union_of_students(&inputs)?;
    let vs = assemble(&inputs, &students)?;
    let info = merged_info(&inputs, &students)?;
    checkpoint::save(out, &vs, &info)?;
    Ok(MergeReport {
        students: students
            .into_iter()
            .map(|(s, i)| (s, inputs[i].path.clone()))
            .collect(),
        duplicates,
    })
}

/// Reads one input: its sidecar (refused without students) and its weights, checked against
/// the model the sidecar describes.
fn read_input(path: &Path) -> Result<Input> {
    let (weights, sidecar) = checkpoint::checkpoint_files(path);
    let info = checkpoint::read_info(path)?;
    let scenarios = info
        .model
        .scenario_list()
        .with_context(|| format!("{}: key `model.scenarios`", sidecar.display()))?;
    if scenarios.is_empty() {
        bail!(
            "{}: holds a teacher without students (`scenarios: []`): it adds nothing to a merge \
             (every student checkpoint holds its teacher); give the checkpoints `dis2 distill` \
             wrote",
            sidecar.display()
        );
    }
    let loaded = checkpoint::load(path, Device::Cpu)?;
    Ok(Input {
        path: path.to_path_buf(),
        weights,
        sidecar,
        info,
        scenarios,
        tensors: loaded.vs.variables().into_iter().collect(),
    })
}

/// Refuses an input whose sidecar differs from the first input's in anything but its students
/// and metadata: the network, the class table, the normalisation.
fn check_sidecars(first: &Input, other: &Input) -> Result<()> {
    let (a, b) = (first.sidecar.display(), other.sidecar.display());
    let mut same_students = other.info.model.clone();
    same_students.scenarios = first.info.model.scenarios.clone();
    let mut diffs = checkpoint::labelled_differences([
        (a.to_string().as_str(), &first.info.model),
        (b.to_string().as_str(), &same_students),
    ])
    .into_iter()
    .map(|d| format!("model.{d}"))
    .collect::<Vec<_>>();
    let (x, y) = (&first.info, &other.info);
    let mut differ = |key: String, left: String, right: String| {
        if left != right {
            diffs.push(format!("{key}: {a} has {left}, {b} has {right}"));
        }
    };
    differ(
        "class_names".into(),
        listed(&x.class_names),
        listed(&y.class_names),
    );
    differ(
        "class_colours".into(),
        listed(&x.class_colours),
        listed(&y.class_colours),
    );
    let mut names: Vec<&String> = x
        .normalisation
        .keys()
        .chain(y.normalisation.keys())
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        let stats = |info: &CheckpointInfo| match info.normalisation.get(name) {
            Some(n) => format!("mean {:?} std {:?}", n.mean, n.std),
            None => "none".to_string(),
        };
        differ(format!("normalisation.{name}"), stats(x), stats(y));
    }
    if !diffs.is_empty() {
        bail!(
            "{b} and {a} were not made for one model and data:\n  {}",
            diffs.join("\n  ")
        );
    }
    Ok(())
}

/// A sidecar's optional list as text: `["road", "water"]`, or `none`.
fn listed<T: std::fmt::Debug>(list: &Option<Vec<T>>) -> String {
    match list {
        Some(items) => format!("{items:?}"),
        None => "none".to_string(),
    }
}

/// The tensors two variable maps hold under the names `select` keeps, compared bit for bit:
/// how many were compared, how many differ, and the first that differs (in name order) with its
/// largest absolute difference.
fn compare(
    a: &BTreeMap<String, Tensor>,
    b: &BTreeMap<String, Tensor>,
    select: impl Fn(&str) -> bool,
) -> (usize, usize, Option<(String, f64)>) {
    let (mut compared, mut differ, mut first) = (0, 0, None);
    for (name, x) in a.iter().filter(|(n, _)| select(n.as_str())) {
        compared += 1;
        let Some(y) = b.get(name) else { continue };
        if !bits_equal(x, y) {
            differ += 1;
            if first.is_none() {
                first = Some((name.clone(), max_abs_difference(x, y)));
            }
        }
    }
    (compared, differ, first)
}

/// Same shape, kind and bits (a NaN equals the same NaN; 0.0 and -0.0 differ).
fn bits_equal(a: &Tensor, b: &Tensor) -> bool {
    let bits = |t: &Tensor| match t.kind() {
        Kind::Float => t.view_dtype(Kind::Int),
        Kind::Double => t.view_dtype(Kind::Int64),
        Kind::Half | Kind::BFloat16 => t.view_dtype(Kind::Int16),
        _ => t.shallow_clone(),
    };
    a.size() == b.size() && a.kind() == b.kind() && bits(a).equal(&bits(b))
}

fn max_abs_difference(a: &Tensor, b: &Tensor) -> f64 {
    if a.size() != b.size() || a.numel() == 0 {
        return f64::NAN;
    }
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

/// Refuses an input whose teacher (encoders and teacher branch) is not the first input's bit
/// for bit.
fn check_teachers(first: &Input, other: &Input) -> Result<()> {
    let shared = |name: &str| student_key(name).is_none();
    let (compared, differ, first_diff) = compare(&first.tensors, &other.tensors, shared);
    if let Some((name, diff)) = first_diff {
        bail!(
            "{} and {} hold different teachers: {differ} of the {compared} tensors of the \
             encoders and the teacher branch differ, the first {name} by up to {diff:.3e}; merge \
             only students distilled from one teacher checkpoint (`dis2 distill --teacher`)",
            other.weights.display(),
            first.weights.display()
        );
    }
    Ok(())
}

/// The merged students in order, each with the index of the input that gives its weights, and
/// a line per student given again with identical weights.
fn union_of_students(inputs: &[Input]) -> Result<(Vec<Sourced>, Vec<String>)> {
    let model = &inputs[0].info.model;
    let mut students: Vec<Sourced> = Vec::new();
    let mut duplicates = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        for s in &input.scenarios {
            let Some(&(_, owner)) = students.iter().find(|(t, _)| t == s) else {
                students.push((s.clone(), i));
                continue;
            };
            let label = Route::Student(s.clone()).label(model);
            let key = s.key();
            let own = |name: &str| student_key(name) == Some(key.as_str());
            let kept = &inputs[owner];
            let (compared, differ, first_diff) = compare(&kept.tensors, &input.tensors, own);
            if let Some((name, diff)) = first_diff {
                bail!(
                    "{label} is in both {} and {} with different weights: {differ} of its \
                     {compared} tensors differ, the first {name} by up to {diff:.3e}; leave one of \
                     the two checkpoints out",
                    kept.weights.display(),
                    input.weights.display()
                );
            }
            duplicates.push(format!(
                "{label}: {} holds the same weights as {}; kept {}'s",
                input.path.display(),
                kept.path.display(),
                kept.path.display()
            ));
        }
    }
    Ok((students, duplicates))
}

/// A variable store of the merged model, every variable copied from the input that owns it:
/// the shared part from the first, each student's from its input.
fn assemble(inputs: &[Input], students: &[Sourced]) -> Result<nn::VarStore> {
    let mut model = inputs[0].info.model.clone();
    model.scenarios = Some(students.iter().map(|(s, _)| s.names(&model)).collect());
    let vs = nn::VarStore::new(Device::Cpu);
    Dis2Net::new(&vs.root(), &model)?;
    let owners: HashMap<String, usize> = students.iter().map(|(s, i)| (s.key(), *i)).collect();
    tch::no_grad(|| {
        for (name, var) in vs.variables() {
            let owner = match student_key(&name) {
                None => 0,
                Some(key) => owners[key],
            };
            let source = inputs[owner].tensors.get(&name).ok_or_else(|| {
                anyhow!(
                    "{}: no variable {name}, which the merged model needs",
                    inputs[owner].weights.display()
                )
            })?;
            var.shallow_clone().copy_(source);
        }
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(vs)
}

/// The merged sidecar: the first input's model with the merged scenarios, its class table and
/// normalisation (the same in every input), and the provenance.
fn merged_info(inputs: &[Input], students: &[Sourced]) -> Result<CheckpointInfo> {
    let first = &inputs[0].info;
    let mut model = first.model.clone();
    model.scenarios = Some(students.iter().map(|(s, _)| s.names(&model)).collect());
    let mut info = CheckpointInfo::new(&model)?;
    info.class_names = first.class_names.clone();
    info.class_colours = first.class_colours.clone();
    info.normalisation = first.normalisation.clone();
    info.metadata.insert("source".into(), Value::from(SOURCE));
    let from: Vec<Value> = inputs
        .iter()
        .map(|i| Value::from(i.path.display().to_string()))
        .collect();
    info.metadata
        .insert("merged_from".into(), Value::Sequence(from));
    Ok(info)
}
