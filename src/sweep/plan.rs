//! The sweep's grid: methods x columns (the full set and each missing scenario), the training
//! runs ("units") the cells need, the evaluations that fill them, and how a `--shard i/n` shares
//! them out.
//!
//! Several cells can share one evaluation (every DIS2 variant that keeps the reference network
//! reports the same teacher in the `full` column) and several evaluations one run (the teacher
//! is scored with every modality filled in turn), so both are planned once.

use anyhow::{bail, Context, Result};
use std::fmt;
use std::str::FromStr;

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
}

impl Method {
    pub const ALL: [Method; 8] = [
        Method::TeacherFill,
        Method::Unimodal,
        Method::ModalityDropout,
        Method::Dis2,
        Method::Dis2NoKd,
        Method::Dis2NoOrth,
        Method::Dis2NoCflm,
        Method::Dis2NoHf,
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

    pub fn is_full(&self) -> bool {
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
}

/// One training run of the sweep, in `runs/<name>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub name: String,
    pub kind: UnitKind,
    /// `--set` overrides on top of the sweep's own.
    pub overrides: Vec<String>,
}

/// One evaluation, in `evals/<name>`: a unit's best checkpoint with some modalities dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalJob {
    pub name: String,
    pub unit: String,
    pub drop: Vec<String>,
}

/// One table cell and the evaluation that fills it (`None`: not applicable, as `unimodal` with
/// every modality present).
#[derive(Debug, Clone)]
pub struct Cell {
    pub method: Method,
    pub column: Column,
    pub eval: Option<String>,
}

/// Everything a sweep does, in the order it is done (teachers before students).
#[derive(Debug, Clone)]
pub struct Plan {
    pub units: Vec<Unit>,
    pub evals: Vec<EvalJob>,
    pub cells: Vec<Cell>,
}

impl Plan {
    /// The plan of `methods` x (`full` + `scenarios`) for `model` (the sweep's base network).
    pub fn new(
        methods: &[Method],
        scenarios: &[Column],
        model: &ModelConfig,
        modality_dropout: f64,
    ) -> Result<Self> {
        let mut plan = Plan {
            units: Vec::new(),
            evals: Vec::new(),
            cells: Vec::new(),
        };
        let columns: Vec<Column> = std::iter::once(Column::full())
            .chain(scenarios.iter().cloned())
            .collect();
        for &method in methods {
            for column in &columns {
                let eval = plan.cell_eval(method, column, model, modality_dropout)?;
                plan.cells.push(Cell {
                    method,
                    column: column.clone(),
                    eval,
                });
            }
        }
        // Teachers first: students wait for them, and a shard trains its teachers before it
        // waits for another shard's.
        plan.units
            .sort_by_key(|u| matches!(u.kind, UnitKind::Student { .. }));
        Ok(plan)
    }

    /// Adds what the cell needs; returns the evaluation's name.
    fn cell_eval(
        &mut self,
        method: Method,
        column: &Column,
        model: &ModelConfig,
        modality_dropout: f64,
    ) -> Result<Option<String>> {
        let arch = method.architecture();
        let (unit, drop) = match method {
            Method::TeacherFill => (self.teacher(arch, 0.0), column.missing.clone()),
            Method::ModalityDropout => {
                (self.teacher(arch, modality_dropout), column.missing.clone())
            }
            Method::Unimodal if column.is_full() => return Ok(None),
            Method::Unimodal => (self.unimodal(column, model)?, Vec::new()),
            // Every DIS2 variant's full-modality branch is its teacher.
            _ if column.is_full() => (self.teacher(arch, 0.0), Vec::new()),
            _ => (self.student(method, column), column.missing.clone()),
        };
        let name = format!(
            "{unit}--{}",
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
            });
        }
        Ok(Some(name))
    }

    fn add(&mut self, unit: Unit) -> String {
        let name = unit.name.clone();
        if !self.units.iter().any(|u| u.name == name) {
            self.units.push(unit);
        }
        name
    }

    fn teacher(&mut self, arch: Architecture, modality_dropout: f64) -> String {
        let name = if modality_dropout > 0.0 {
            "modality-dropout".to_string()
        } else {
            arch.teacher().to_string()
        };
        self.add(Unit {
            name,
            kind: UnitKind::Teacher { modality_dropout },
            overrides: arch.overrides().iter().map(|s| s.to_string()).collect(),
        })
    }

    fn unimodal(&mut self, column: &Column, model: &ModelConfig) -> Result<String> {
        let available: Vec<&ModalitySpec> = model
            .modalities
            .iter()
            .filter(|m| !column.missing.contains(&m.name))
            .collect();
        // JSON is YAML: the list goes through `--set` like any other value.
        let modalities = serde_json::to_string(&available)?;
        let names: Vec<&str> = available.iter().map(|m| m.name.as_str()).collect();
        Ok(self.add(Unit {
            name: format!("unimodal-{}", join_names(&names)),
            kind: UnitKind::Teacher {
                modality_dropout: 0.0,
            },
            overrides: vec![
                format!("model.modalities={modalities}"),
                "model.scenarios=[]".to_string(),
            ],
        }))
    }

    fn student(&mut self, method: Method, column: &Column) -> String {
        let arch = method.architecture();
        let teacher = self.teacher(arch, 0.0);
        let overrides = arch
            .overrides()
            .iter()
            .chain(method.loss_overrides())
            .map(|s| s.to_string())
            .collect();
        self.add(Unit {
            name: format!("{}-{}", method.name(), column.key()),
            kind: UnitKind::Student {
                teacher,
                missing: column.missing.clone(),
            },
            overrides,
        })
    }

    /// The units shard `index` of `count` trains: every `count`-th, teachers first.
    pub fn shard_units(&self, shard: Shard) -> Vec<&Unit> {
        self.units
            .iter()
            .enumerate()
            .filter(|(i, _)| i % shard.count == shard.index)
            .map(|(_, u)| u)
            .collect()
    }

    /// The evaluations of the units a shard trains.
    pub fn shard_evals(&self, shard: Shard) -> Vec<&EvalJob> {
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

    pub fn unit(&self, name: &str) -> Option<&Unit> {
        self.units.iter().find(|u| u.name == name)
    }
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

    #[test]
    fn full_grid_shares_teachers_and_evaluations() {
        let m = model();
        let cols = parse_scenarios(&["dsm,sar".into()], &m).unwrap();
        let plan = Plan::new(&Method::ALL, &cols, &m, 0.3).unwrap();
        let units: Vec<&str> = plan.units.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(
            &units[..6],
            [
                "teacher",
                "unimodal-optical+sar",
                "unimodal-optical+dsm",
                "modality-dropout",
                "teacher-no-cflm",
                "teacher-no-hf"
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
            .filter(|c| c.eval.as_deref() == Some("teacher--full"))
            .count();
        assert_eq!(teacher_full, 4);
        assert!(full
            .iter()
            .any(|c| c.method == Method::Unimodal && c.eval.is_none()));
        let nocflm = plan.unit("dis2-no-cflm-dsm").unwrap();
        assert_eq!(nocflm.overrides, ["model.decoder=plain"]);
        assert_eq!(
            nocflm.kind,
            UnitKind::Student {
                teacher: "teacher-no-cflm".into(),
                missing: vec!["dsm".into()]
            }
        );
        let nokd = plan.unit("dis2-no-kd-sar").unwrap();
        assert_eq!(nokd.overrides, ["train.lambda_kd=0"]);
        let uni = plan.unit("unimodal-optical+dsm").unwrap();
        assert!(uni.overrides[0].starts_with("model.modalities=[{\"name\":\"optical\""));
    }

    #[test]
    fn shards_cover_every_unit_once() {
        let m = model();
        let cols = parse_scenarios(&[], &m).unwrap();
        assert_eq!(cols.len(), 6);
        let plan = Plan::new(&Method::ALL, &cols, &m, 0.3).unwrap();
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
    }
}
