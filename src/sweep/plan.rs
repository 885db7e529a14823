//! The sweep's matrix: methods x columns (the full set and each missing scenario), the training
//! runs ("units") the cells need, the evaluations that fill them, and how a `--shard i/n` shares
//! them out.
//!
//! Several cells can share one evaluation (every DIS2 variant that keeps the reference network
//! reports the same teacher in the `full` column) and several evaluations one run (the teacher
//! is scored with every modality filled in turn), so both are planned once. Every run is
//! planned once per seed (`--seeds`); a shard's share is a set of (method, scenario, seed) runs.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::data::config::GenericConfig;
use crate::data::layouts::Split;
use crate::model::config::{ModalitySpec, ModelConfig};
use crate::model::scenario::{join_names, Scenario};

/// A row of the results table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    /// The full-modality teacher, the missing input filled with the training mean.
    TeacherFill,
    /// A model trained on the available modalities only (one per scenario).
    Unimodal,
    /// The teacher network trained with random modality dropout, missing input filled.
    ModalityDropout,
    /// The distilled student (HF + CFLM + DLKD + orthogonality): the paper's method.
    Dis2,
    /// DIS2 without the DLKD loss (`train.lambda_kd = 0`).
    Dis2NoKd,
    /// DIS2 without the orthogonality (disentanglement) loss (`train.orth_weight = 0`).
    Dis2NoOrth,
    /// DIS2 with a plain decoder instead of the CFLM (`model.decoder: plain`).
    Dis2NoCflm,
    /// DIS2 with fusion only at level 4 instead of HF (`model.fusion: level4`).
    Dis2NoHf,
    /// DIS2 trained the authors' way (`dis2 distill --joint`): per seed one run trains the
    /// teacher and the students of every sweep scenario together, a scenario drawn per batch
    /// (`train.joint_probabilities`, see [`Matrix::joint_probabilities`]). Scored like `dis2`:
    /// its students per scenario, its own teacher in the `full` column.
    Dis2Joint,
}

impl Method {
    pub(crate) const ALL: [Method; 9] = [
        Method::TeacherFill,
        Method::Unimodal,
        Method::ModalityDropout,
        Method::Dis2,
        Method::Dis2NoKd,
        Method::Dis2NoOrth,
        Method::Dis2NoCflm,
        Method::Dis2NoHf,
        Method::Dis2Joint,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::TeacherFill => "teacher-fill",
            Method::Unimodal => "unimodal",
            Method::ModalityDropout => "modality-dropout",
            Method::Dis2 => "dis2",
            Method::Dis2NoKd => "dis2-no-kd",
            Method::Dis2NoOrth => "dis2-no-orth",
            Method::Dis2NoCflm => "dis2-no-cflm",
            Method::Dis2NoHf => "dis2-no-hf",
            Method::Dis2Joint => "dis2-joint",
        }
    }

    /// The configuration overrides of the network variant this method's models use.
    fn architecture(self) -> Architecture {
        match self {
            Method::Dis2NoCflm => Architecture::PlainDecoder,
            Method::Dis2NoHf => Architecture::Level4Fusion,
            _ => Architecture::Reference,
        }
    }

    /// Overrides of the distillation run besides the architecture.
    fn loss_overrides(self) -> &'static [&'static str] {
        match self {
            Method::Dis2NoKd => &["train.lambda_kd=0"],
            Method::Dis2NoOrth => &["train.orth_weight=0"],
            _ => &[],
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .with_context(|| {
                let names: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
                format!("unknown method {s:?}; the methods are {}", names.join(", "))
            })
    }
}

/// The network a teacher is built as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Architecture {
    Reference,
    PlainDecoder,
    Level4Fusion,
}

impl Architecture {
    /// The teacher run of this architecture.
    fn teacher(self) -> &'static str {
        match self {
            Architecture::Reference => "teacher",
            Architecture::PlainDecoder => "teacher-no-cflm",
            Architecture::Level4Fusion => "teacher-no-hf",
        }
    }

    fn overrides(self) -> &'static [&'static str] {
        match self {
            Architecture::Reference => &[],
            Architecture::PlainDecoder => &["model.decoder=plain"],
            Architecture::Level4Fusion => &["model.fusion=level4"],
        }
    }
}

/// A column of the table: every modality present (`missing` empty) or one scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub missing: Vec<String>,
}

impl Column {
    pub fn full() -> Self {
        Column {
            missing: Vec::new(),
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.missing.is_empty()
    }

    /// `dsm+sar`, or `full`: used in file names and in `--scenarios`.
    pub fn key(&self) -> String {
        if self.is_full() {
            "full".to_string()
        } else {
            join_names(&self.missing)
        }
    }

    /// The table header: `full` or `-dsm+sar` (what is missing).
    pub fn header(&self) -> String {
        if self.is_full() {
            "full".to_string()
        } else {
            format!("-{}", self.key())
        }
    }
}

/// The scenarios of `--scenarios` (`dsm,sar,dsm+sar`), or every scenario of the model when
/// `list` is empty; checked against the model's modalities.
pub fn parse_scenarios(list: &[String], model: &ModelConfig) -> Result<Vec<Column>> {
    let mut out: Vec<Column> = Vec::new();
    if list.is_empty() {
        for s in Scenario::all(model.modalities.len()) {
            out.push(Column {
                missing: s.names(model),
            });
        }
        return Ok(out);
    }
    for item in list.iter().flat_map(|l| l.split(',')) {
        let scenario =
            Scenario::parse(item, model).with_context(|| format!("--scenarios {item:?}"))?;
        let column = Column {
            missing: scenario.names(model),
        };
        if out.contains(&column) {
            bail!("--scenarios: {item:?} is given twice");
        }
        out.push(column);
    }
    if out.is_empty() {
        bail!("--scenarios: no scenario given");
    }
    Ok(out)
}

/// A row of the tables: a method, or a named variant of `dis2` (`dis2@kd0.5`: its students
/// train with the variant's overrides, from the same teacher).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub method: Method,
    /// The variant's name; `None` for the method itself.
    pub variant: Option<String>,
}

impl Row {
    pub fn of(method: Method) -> Self {
        Row {
            method,
            variant: None,
        }
    }

    /// `dis2`, or `dis2@kd0.5` for a variant.
    pub fn name(&self) -> String {
        match &self.variant {
            None => self.method.name().to_string(),
            Some(v) => format!("{}@{v}", self.method.name()),
        }
    }

    /// Whether this row is `dis2` or one of its variants.
    pub(crate) fn is_dis2(&self) -> bool {
        self.method == Method::Dis2
    }
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// `--variant NAME:KEY=VALUE` (repeatable; the same name again adds an override): a `dis2` row
/// whose students train with these `--set` overrides on top of the sweep's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    pub name: String,
    pub overrides: Vec<String>,
}

/// The variants of `--variant` items, in order of first appearance.
///
/// # Errors
/// An item without `:` or without `=` after it, a name outside `[A-Za-z0-9._-]`.
pub fn parse_variants(items: &[String]) -> Result<Vec<Variant>> {
    let mut out: Vec<Variant> = Vec::new();
    for item in items {
        let Some((name, set)) = item.split_once(':') else {
            bail!(
                "--variant {item:?}: expected NAME:KEY.PATH=VALUE, e.g. kd0.5:train.lambda_kd=0.5"
            );
        };
        let allowed = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
        if name.is_empty() || !name.chars().all(allowed) {
            bail!("--variant {item:?}: the name {name:?} must be letters, digits, '.', '_' or '-'");
        }
        if !set.contains('=') {
            bail!("--variant {item:?}: expected KEY.PATH=VALUE after the name");
        }
        match out.iter_mut().find(|v| v.name == name) {
            Some(v) => v.overrides.push(set.to_string()),
            None => out.push(Variant {
                name: name.to_string(),
                overrides: vec![set.to_string()],
            }),
        }
    }
    Ok(out)
}

/// The seeds of `--seeds`: `N` is N seeds from `base` (the experiment's seed) up, `a,b,c` those
/// seeds; absent: `base` alone.
///
/// # Errors
/// Not a count or a list of integers, a count of 0, a seed given twice.
pub fn parse_seeds(text: Option<&str>, base: u64) -> Result<Vec<u64>> {
    let Some(text) = text else {
        return Ok(vec![base]);
    };
    let bad = || format!("--seeds {text:?}: expected a count (3) or a list of seeds (1,2,3)");
    if !text.contains(',') {
        let n: u64 = text.trim().parse().with_context(bad)?;
        if n == 0 {
            bail!("--seeds 0: at least one seed is needed");
        }
        return Ok((0..n).map(|i| base + i).collect());
    }
    let seeds: Vec<u64> = text
        .split(',')
        .map(|s| s.trim().parse::<u64>())
        .collect::<std::result::Result<_, _>>()
        .with_context(bad)?;
    for (i, s) in seeds.iter().enumerate() {
        if seeds[..i].contains(s) {
            bail!("--seeds {text:?}: seed {s} is given twice");
        }
    }
    Ok(seeds)
}

/// What a training run is.
#[derive(Debug, Clone, PartialEq)]
pub enum UnitKind {
    /// `dis2 train-teacher` (with modality dropout when positive).
    Teacher { modality_dropout: f64 },
    /// `dis2 distill --teacher <teacher unit> --missing <missing>`.
    Student {
        teacher: String,
        missing: Vec<String>,
    },
    /// `dis2 distill --joint --missing <each of scenarios>`: teacher and students together.
    Joint { scenarios: Vec<Vec<String>> },
}

/// One training run of the sweep, in `runs/<name>`; names are `s<seed>/<run>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub name: String,
    pub seed: u64,
    pub kind: UnitKind,
    /// `--set` overrides on top of the sweep's own (the seed's among them).
    pub overrides: Vec<String>,
}

/// One evaluation, in `evals/<name>`: a unit's best checkpoint with some modalities dropped,
/// scored on one split; names are `<split>/s<seed>/<run>--<full|drop-...>`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalJob {
    pub name: String,
    pub unit: String,
    pub drop: Vec<String>,
    pub split: Split,
}

/// One table cell of one seed and split, and the evaluation that fills it (`None`: not
/// applicable, as `unimodal` with every modality present).
#[derive(Debug, Clone)]
pub struct Cell {
    pub row: Row,
    pub column: Column,
    pub seed: u64,
    pub split: Split,
    pub eval: Option<String>,
}

/// What a sweep covers, its methods x scenarios matrix: rows (methods and variants), columns
/// (the full set and each missing scenario), seeds and splits.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub methods: Vec<Method>,
    /// Extra `dis2` rows.
    pub variants: Vec<Variant>,
    /// The missing scenarios (the `full` column is always there).
    pub scenarios: Vec<Column>,
    /// At least one.
    pub seeds: Vec<u64>,
    /// The split the tables report, then any split scored for choosing settings (`val`).
    pub splits: Vec<Split>,
    pub modality_dropout: f64,
    /// `--set` overrides of the DIS2 teachers only (a stronger teacher); not of `dis2-joint`,
    /// whose teacher trains in the same run as its students.
    pub teacher_set: Vec<String>,
    /// The experiment's `train.joint_probabilities` (keys as [`Column::key`]): the `dis2-joint`
    /// runs' scenario draw, restricted to the sweep's scenarios; empty: uniform over them.
    pub joint_probabilities: BTreeMap<String, f64>,
    /// The dataset when it is a generic one, whose modalities are named per split and must
    /// match the model's: a unimodal model's runs name only its own.
    pub generic: Option<GenericConfig>,
}

impl Matrix {
    /// The rows in table order: the methods, `dis2`'s variants right after it.
    pub fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for &m in &self.methods {
            rows.push(Row::of(m));
            if m == Method::Dis2 {
                rows.extend(self.variant_rows());
            }
        }
        if !self.methods.contains(&Method::Dis2) {
            rows.extend(self.variant_rows());
        }
        rows
    }

    fn variant_rows(&self) -> impl Iterator<Item = Row> + '_ {
        self.variants.iter().map(|v| Row {
            method: Method::Dis2,
            variant: Some(v.name.clone()),
        })
    }

    /// The columns: `full`, then the scenarios.
    pub fn columns(&self) -> Vec<Column> {
        std::iter::once(Column::full())
            .chain(self.scenarios.iter().cloned())
            .collect()
    }
}

/// Everything a sweep does, in the order it is done: seed by seed, teachers before students.
#[derive(Debug, Clone)]
pub struct Plan {
    pub matrix: Matrix,
    pub units: Vec<Unit>,
    pub evals: Vec<EvalJob>,
    pub cells: Vec<Cell>,
}

impl Plan {
    /// The plan of `matrix` for `model` (the sweep's base network).
    pub fn new(matrix: &Matrix, model: &ModelConfig) -> Result<Self> {
        if matrix.seeds.is_empty() || matrix.splits.is_empty() {
            bail!("a sweep needs at least one seed and one split");
        }
        let mut plan = Plan {
            matrix: matrix.clone(),
            units: Vec::new(),
            evals: Vec::new(),
            cells: Vec::new(),
        };
        for &seed in &matrix.seeds {
            for &split in &matrix.splits {
                for row in matrix.rows() {
                    for column in matrix.columns() {
                        let eval = plan.cell_eval(&row, &column, seed, split, model)?;
                        plan.cells.push(Cell {
                            row: row.clone(),
                            column,
                            seed,
                            split,
                            eval,
                        });
                    }
                }
            }
        }
        // Seed by seed, so that a partial sweep has whole grids; within a seed, teachers first:
        // students wait for them, and a shard trains its teachers before it waits for another's.
        let order = |u: &Unit| {
            let seed = matrix.seeds.iter().position(|s| *s == u.seed);
            (seed, matches!(u.kind, UnitKind::Student { .. }))
        };
        plan.units.sort_by_key(order);
        Ok(plan)
    }

    /// Adds what the cell needs; returns the evaluation's name.
    fn cell_eval(
        &mut self,
        row: &Row,
        column: &Column,
        seed: u64,
        split: Split,
        model: &ModelConfig,
    ) -> Result<Option<String>> {
        let method = row.method;
        let arch = method.architecture();
        let p = self.matrix.modality_dropout;
        let (unit, drop) = match method {
            Method::TeacherFill => (self.teacher(arch, 0.0, seed), column.missing.clone()),
            Method::ModalityDropout => (self.teacher(arch, p, seed), column.missing.clone()),
            Method::Unimodal if column.is_full() => return Ok(None),
            Method::Unimodal => (self.unimodal(column, model, seed)?, Vec::new()),
            // One joint run holds its own teacher and every scenario's student.
            Method::Dis2Joint => (self.joint(seed)?, column.missing.clone()),
            // Every DIS2 variant's full-modality branch is its teacher.
            _ if column.is_full() => (self.teacher(arch, 0.0, seed), Vec::new()),
            _ => (self.student(row, column, seed), column.missing.clone()),
        };
        let name = format!(
            "{}/{unit}--{}",
            split.as_str(),
            if drop.is_empty() {
                "full".to_string()
            } else {
                format!("drop-{}", join_names(&drop))
            }
        );
        if !self.evals.iter().any(|e| e.name == name) {
            self.evals.push(EvalJob {
                name: name.clone(),
                unit,
                drop,
                split,
            });
        }
        Ok(Some(name))
    }

    /// Adds the run `name` of `seed` (once); returns its unit name `s<seed>/<name>`.
    fn add(&mut self, name: &str, seed: u64, kind: UnitKind, overrides: Vec<String>) -> String {
        let unit = format!("s{seed}/{name}");
        if !self.units.iter().any(|u| u.name == unit) {
            let mut overrides = overrides;
            overrides.push(format!("seed={seed}"));
            self.units.push(Unit {
                name: unit.clone(),
                seed,
                kind,
                overrides,
            });
        }
        unit
    }

    fn teacher(&mut self, arch: Architecture, modality_dropout: f64, seed: u64) -> String {
        let mut overrides: Vec<String> = arch.overrides().iter().map(|s| s.to_string()).collect();
        let name = if modality_dropout > 0.0 {
            "modality-dropout"
        } else {
            overrides.extend(self.matrix.teacher_set.iter().cloned());
            arch.teacher()
        };
        self.add(
            name,
            seed,
            UnitKind::Teacher { modality_dropout },
            overrides,
        )
    }

    fn unimodal(&mut self, column: &Column, model: &ModelConfig, seed: u64) -> Result<String> {
        let available: Vec<&ModalitySpec> = model
            .modalities
            .iter()
            .filter(|m| !column.missing.contains(&m.name))
            .collect();
        // JSON is YAML: the list goes through `--set` like any other value.
        let modalities = serde_json::to_string(&available)?;
        let names: Vec<&str> = available.iter().map(|m| m.name.as_str()).collect();
        let overrides = vec![
            format!("model.modalities={modalities}"),
            "model.scenarios=[]".to_string(),
        ];
        let kind = UnitKind::Teacher {
            modality_dropout: 0.0,
        };
        let mut overrides = overrides;
        overrides.extend(self.generic_modalities(&names)?);
        let name = format!("unimodal-{}", join_names(&names));
        Ok(self.add(&name, seed, kind, overrides))
    }

    /// For a generic dataset, overrides that keep only the modalities `names` in every split.
    fn generic_modalities(&self, names: &[&str]) -> Result<Vec<String>> {
        let Some(g) = &self.matrix.generic else {
            return Ok(Vec::new());
        };
        let splits = [
            ("train", Some(&g.train)),
            ("val", g.val.as_ref()),
            ("test", g.test.as_ref()),
        ];
        let mut out = Vec::new();
        for (split, files) in splits {
            let Some(files) = files else { continue };
            let kept: std::collections::BTreeMap<&String, &String> = files
                .modalities
                .iter()
                .filter(|(m, _)| names.contains(&m.as_str()))
                .collect();
            let value = serde_json::to_string(&kept)?;
            out.push(format!("data.dataset.generic.{split}.modalities={value}"));
        }
        Ok(out)
    }

    fn student(&mut self, row: &Row, column: &Column, seed: u64) -> String {
        let arch = row.method.architecture();
        let teacher = self.teacher(arch, 0.0, seed);
        let variant = row
            .variant
            .as_ref()
            .and_then(|name| self.matrix.variants.iter().find(|v| &v.name == name));
        let overrides = arch
            .overrides()
            .iter()
            .chain(row.method.loss_overrides())
            .map(|s| s.to_string())
            .chain(variant.iter().flat_map(|v| v.overrides.iter().cloned()))
            .collect();
        let kind = UnitKind::Student {
            teacher,
            missing: column.missing.clone(),
        };
        let name = format!("{}-{}", row.name(), column.key());
        self.add(&name, seed, kind, overrides)
    }

    /// The `dis2-joint` run of `seed`: one `distill --joint` over every scenario of the sweep.
    fn joint(&mut self, seed: u64) -> Result<String> {
        let scenarios = self.matrix.scenarios.iter().map(|c| c.missing.clone());
        let kind = UnitKind::Joint {
            scenarios: scenarios.collect(),
        };
        let draw = serde_json::to_string(&joint_draw(&self.matrix)?)?;
        let overrides = vec![format!("train.joint_probabilities={draw}")];
        Ok(self.add(Method::Dis2Joint.name(), seed, kind, overrides))
    }

    /// The units shard `index` of `count` trains: every `count`-th, teachers first.
    pub(crate) fn shard_units(&self, shard: Shard) -> Vec<&Unit> {
        self.units
            .iter()
            .enumerate()
            .filter(|(i, _)| i % shard.count == shard.index)
            .map(|(_, u)| u)
            .collect()
    }

    /// The evaluations of the units a shard trains.
    pub(crate) fn shard_evals(&self, shard: Shard) -> Vec<&EvalJob> {
        let mine: Vec<&str> = self
            .shard_units(shard)
            .iter()
            .map(|u| u.name.as_str())
            .collect();
        self.evals
            .iter()
            .filter(|e| mine.contains(&e.unit.as_str()))
            .collect()
    }

    /// The unit named `name`.
    #[cfg(test)]
    pub(crate) fn unit(&self, name: &str) -> Option<&Unit> {
        self.units.iter().find(|u| u.name == name)
    }
}

/// The scenario draw of the `dis2-joint` runs, written into each run's config: the experiment's
/// `train.joint_probabilities` of the sweep's scenarios (those of other scenarios left out; the
/// draw normalises the rest), or 1 for each when it names none of them: uniform. The teacher's
/// terms are in every batch's objective either way, as in the authors' script.
///
/// # Errors
/// `train.joint_probabilities` names some of the sweep's scenarios but gives another none (or
/// 0): that student would never train.
fn joint_draw(matrix: &Matrix) -> Result<BTreeMap<String, f64>> {
    let keys: Vec<String> = matrix.scenarios.iter().map(Column::key).collect();
    let configured: BTreeMap<String, f64> = keys
        .iter()
        .filter_map(|k| Some((k.clone(), *matrix.joint_probabilities.get(k)?)))
        .collect();
    if configured.is_empty() {
        return Ok(keys.into_iter().map(|k| (k, 1.0)).collect());
    }
    if let Some(k) = keys
        .iter()
        .find(|k| configured.get(*k).is_none_or(|p| *p <= 0.0))
    {
        bail!(
            "train.joint_probabilities: the sweep's scenario {k:?} has {}, so dis2-joint would \
             never train its student; give every --scenarios entry a positive probability, or \
             none of them (uniform draw)",
            match configured.get(k) {
                Some(p) => format!("probability {p}"),
                None => "no probability".to_string(),
            }
        );
    }
    Ok(configured)
}

/// `--shard i/n`: the share `index` (0-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub fn whole() -> Self {
        Shard { index: 0, count: 1 }
    }
}

impl FromStr for Shard {
    type Err = anyhow::Error;
    /// `i/n` with `0 <= i < n` (a Slurm array's `$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`).
    fn from_str(s: &str) -> Result<Self> {
        let parsed = s
            .split_once('/')
            .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, count)) if count >= 1 && index < count => Ok(Shard { index, count }),
            _ => bail!("--shard {s:?}: expected i/n with 0 <= i < n, e.g. 0/4"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelConfig {
        crate::config::from_yaml_str(
            "num_classes: 3\ncrop: [32, 32]\nbase_width: 8\nmodalities:\n  - {name: optical, channels: 4}\n  - {name: dsm, channels: 1}\n  - {name: sar, channels: 1}\n",
        )
        .unwrap()
    }

    fn matrix(methods: &[Method], scenarios: Vec<Column>, seeds: &[u64]) -> Matrix {
        Matrix {
            methods: methods.to_vec(),
            variants: Vec::new(),
            scenarios,
            seeds: seeds.to_vec(),
            splits: vec![Split::Test],
            modality_dropout: 0.3,
            teacher_set: Vec::new(),
            joint_probabilities: Default::default(),
            generic: None,
        }
    }

    #[test]
    fn full_grid_shares_teachers_and_evaluations() {
        let m = model();
        let cols = parse_scenarios(&["dsm,sar".into()], &m).unwrap();
        // The two-stage methods: dis2-joint's own run is the next test's.
        let methods: Vec<Method> = Method::ALL
            .into_iter()
            .filter(|&m| m != Method::Dis2Joint)
            .collect();
        let plan = Plan::new(&matrix(&methods, cols, &[7]), &m).unwrap();
        let units: Vec<&str> = plan.units.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(
            &units[..6],
            [
                "s7/teacher",
                "s7/unimodal-optical+sar",
                "s7/unimodal-optical+dsm",
                "s7/modality-dropout",
                "s7/teacher-no-cflm",
                "s7/teacher-no-hf"
            ]
        );
        // 3 teachers + modality dropout + 2 unimodal + 5 student methods x 2 scenarios.
        assert_eq!(plan.units.len(), 4 + 2 + 10);
        assert!(plan.units[6..]
            .iter()
            .all(|u| matches!(u.kind, UnitKind::Student { .. })));
        // dis2, dis2-no-kd, dis2-no-orth and teacher-fill share the teacher's full evaluation.
        let full: Vec<&Cell> = plan.cells.iter().filter(|c| c.column.is_full()).collect();
        let teacher_full = full
            .iter()
            .filter(|c| c.eval.as_deref() == Some("test/s7/teacher--full"))
            .count();
        assert_eq!(teacher_full, 4);
        assert!(full
            .iter()
            .any(|c| c.row.method == Method::Unimodal && c.eval.is_none()));
        let nocflm = plan.unit("s7/dis2-no-cflm-dsm").unwrap();
        assert_eq!(nocflm.overrides, ["model.decoder=plain", "seed=7"]);
        assert_eq!(
            nocflm.kind,
            UnitKind::Student {
                teacher: "s7/teacher-no-cflm".into(),
                missing: vec!["dsm".into()]
            }
        );
        let nokd = plan.unit("s7/dis2-no-kd-sar").unwrap();
        assert_eq!(nokd.overrides, ["train.lambda_kd=0", "seed=7"]);
        let uni = plan.unit("s7/unimodal-optical+dsm").unwrap();
        assert!(uni.overrides[0].starts_with("model.modalities=[{\"name\":\"optical\""));
    }

    #[test]
    fn dis2_joint_is_one_run_per_seed_scored_like_dis2() {
        let m = model();
        let cols = parse_scenarios(&["dsm,sar".into()], &m).unwrap();
        let mut g = matrix(&[Method::Dis2, Method::Dis2Joint], cols, &[1, 2]);
        g.teacher_set = vec!["train.epochs=24".into()];
        let plan = Plan::new(&g, &m).unwrap();
        let units: Vec<&str> = plan.units.iter().map(|u| u.name.as_str()).collect();
        // It waits for no teacher, so it trains with the teachers, before the students.
        assert_eq!(
            &units[..4],
            ["s1/teacher", "s1/dis2-joint", "s1/dis2-dsm", "s1/dis2-sar"]
        );
        assert_eq!(plan.units.len(), 2 * 4);
        let joint = plan.unit("s2/dis2-joint").unwrap();
        assert_eq!(
            joint.kind,
            UnitKind::Joint {
                scenarios: vec![vec!["dsm".to_string()], vec!["sar".to_string()]]
            }
        );
        // Uniform over the sweep's scenarios; the stronger-teacher overrides are not its own.
        assert_eq!(
            joint.overrides,
            [
                r#"train.joint_probabilities={"dsm":1.0,"sar":1.0}"#,
                "seed=2"
            ]
        );
        // Its full column is its own teacher, each scenario its own student.
        let eval = |column: &str, seed: u64| {
            let cell = plan.cells.iter().find(|c| {
                c.row.method == Method::Dis2Joint && c.column.key() == column && c.seed == seed
            });
            cell.and_then(|c| c.eval.clone()).unwrap()
        };
        assert_eq!(eval("full", 2), "test/s2/dis2-joint--full");
        assert_eq!(eval("sar", 1), "test/s1/dis2-joint--drop-sar");
        let job = plan
            .evals
            .iter()
            .find(|e| e.name == eval("dsm", 2))
            .unwrap();
        assert_eq!(
            (job.unit.as_str(), &job.drop[..]),
            ("s2/dis2-joint", &["dsm".to_string()][..])
        );
        // Per seed: the teacher's full, 2 students, the joint run's full and 2 scenarios.
        assert_eq!(plan.evals.len(), 2 * 6);

        // The configured draw, restricted to the sweep's scenarios.
        g.joint_probabilities = [("sar", 0.6), ("dsm", 0.4), ("optical", 1.0)]
            .map(|(k, p)| (k.to_string(), p))
            .into();
        let plan = Plan::new(&g, &m).unwrap();
        assert_eq!(
            plan.unit("s1/dis2-joint").unwrap().overrides[0],
            r#"train.joint_probabilities={"dsm":0.4,"sar":0.6}"#
        );
        // A scenario the configured draw leaves out would never train its student.
        for p in [vec![("sar", 0.6)], vec![("sar", 0.6), ("dsm", 0.0)]] {
            g.joint_probabilities = p.into_iter().map(|(k, p)| (k.to_string(), p)).collect();
            let e = Plan::new(&g, &m).unwrap_err();
            assert!(
                format!("{e:#}")
                    .contains("train.joint_probabilities: the sweep's scenario \"dsm\""),
                "{e:#}"
            );
        }
    }

    #[test]
    fn seeds_variants_splits_and_teacher_overrides() {
        let m = model();
        let cols = parse_scenarios(&["dsm".into()], &m).unwrap();
        let mut g = matrix(&[Method::Unimodal, Method::Dis2], cols, &[1, 2]);
        g.variants = parse_variants(&[
            "kd0.5:train.lambda_kd=0.5".into(),
            "logits:train.kd_terms=[logits]".into(),
            "kd0.5:train.kd_warmup_epochs=0".into(),
        ])
        .unwrap();
        g.splits = vec![Split::Test, Split::Val];
        g.teacher_set = vec!["train.epochs=24".into()];
        let plan = Plan::new(&g, &m).unwrap();
        let rows: Vec<String> = g.rows().iter().map(Row::name).collect();
        assert_eq!(rows, ["unimodal", "dis2", "dis2@kd0.5", "dis2@logits"]);
        // Per seed: teacher, unimodal, 3 students; seed 1's runs first, teachers first.
        let units: Vec<&str> = plan.units.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(
            units,
            [
                "s1/unimodal-optical+sar",
                "s1/teacher",
                "s1/dis2-dsm",
                "s1/dis2@kd0.5-dsm",
                "s1/dis2@logits-dsm",
                "s2/unimodal-optical+sar",
                "s2/teacher",
                "s2/dis2-dsm",
                "s2/dis2@kd0.5-dsm",
                "s2/dis2@logits-dsm",
            ]
        );
        let v = plan.unit("s2/dis2@kd0.5-dsm").unwrap();
        assert_eq!(
            v.overrides,
            ["train.lambda_kd=0.5", "train.kd_warmup_epochs=0", "seed=2"]
        );
        assert_eq!(
            v.kind,
            UnitKind::Student {
                teacher: "s2/teacher".into(),
                missing: vec!["dsm".into()]
            }
        );
        // The teacher overrides reach the teacher only.
        assert_eq!(
            plan.unit("s1/teacher").unwrap().overrides,
            ["train.epochs=24", "seed=1"]
        );
        assert!(
            !plan.unit("s1/unimodal-optical+sar").unwrap().overrides[..2]
                .contains(&"train.epochs=24".to_string())
        );
        // Every evaluation on both splits: (teacher full, 3 students, unimodal) x 2 seeds x 2.
        assert_eq!(plan.evals.len(), 5 * 2 * 2);
        assert!(plan
            .evals
            .iter()
            .any(|e| e.name == "val/s2/dis2@logits-dsm--drop-dsm"
                && e.split == Split::Val
                && e.unit == "s2/dis2@logits-dsm"));
        // rows x columns x seeds x splits
        assert_eq!(plan.cells.len(), 4 * 2 * 2 * 2);
    }

    #[test]
    fn unimodal_runs_of_a_generic_dataset_name_only_their_modalities() {
        let m = model();
        let cols = parse_scenarios(&["dsm".into()], &m).unwrap();
        let mut g = matrix(&[Method::Unimodal], cols, &[1]);
        g.generic = Some(
            crate::config::from_yaml_str(
                "train: {modalities: {optical: a/o, dsm: a/d, sar: a/s}, labels: a/l}\n\
                 test: {modalities: {optical: b/o, dsm: b/d, sar: b/s}, labels: b/l}\n",
            )
            .unwrap(),
        );
        let plan = Plan::new(&g, &m).unwrap();
        let uni = plan.unit("s1/unimodal-optical+sar").unwrap();
        assert_eq!(
            uni.overrides[2..],
            [
                r#"data.dataset.generic.train.modalities={"optical":"a/o","sar":"a/s"}"#,
                r#"data.dataset.generic.test.modalities={"optical":"b/o","sar":"b/s"}"#,
                "seed=1",
            ]
        );
    }

    #[test]
    fn shards_cover_every_unit_once() {
        let m = model();
        let cols = parse_scenarios(&[], &m).unwrap();
        assert_eq!(cols.len(), 6);
        let plan = Plan::new(&matrix(&Method::ALL, cols, &[1, 2]), &m).unwrap();
        let mut seen: Vec<&str> = Vec::new();
        let mut evals = 0;
        for index in 0..3 {
            let shard = Shard { index, count: 3 };
            seen.extend(plan.shard_units(shard).iter().map(|u| u.name.as_str()));
            evals += plan.shard_evals(shard).len();
        }
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), plan.units.len());
        assert_eq!(evals, plan.evals.len());
    }

    #[test]
    fn bad_arguments_are_named() {
        let m = model();
        let e = parse_scenarios(&["lidar".into()], &m).unwrap_err();
        assert!(format!("{e:#}").contains("lidar"), "{e:#}");
        let e = parse_scenarios(&["optical+dsm+sar".into()], &m).unwrap_err();
        assert!(format!("{e:#}").contains("at least one"), "{e:#}");
        assert!(parse_scenarios(&["dsm,dsm".into()], &m).is_err());
        assert!("dis2-no-x".parse::<Method>().is_err());
        assert!("3/3".parse::<Shard>().is_err());
        assert!("1-3".parse::<Shard>().is_err());
        assert_eq!(
            "2/3".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 3 }
        );
        assert_eq!(parse_seeds(None, 42).unwrap(), [42]);
        assert_eq!(parse_seeds(Some("3"), 42).unwrap(), [42, 43, 44]);
        assert_eq!(parse_seeds(Some("7, 1,2"), 42).unwrap(), [7, 1, 2]);
        for bad in ["0", "x", "1,1", "1,-2"] {
            let e = parse_seeds(Some(bad), 42).unwrap_err();
            assert!(format!("{e:#}").contains("--seeds"), "{e:#}");
        }
        for bad in ["kd", "kd:x", "k d:a=1", ":a=1"] {
            let e = parse_variants(&[bad.to_string()]).unwrap_err();
            assert!(format!("{e:#}").contains("--variant"), "{e:#}");
        }
    }
}
