//! Which branch of a network runs for the inputs at hand: the teacher (every modality given),
//! the student of the missing set, or the teacher with the missing modalities filled with zeros.
//!
//! Inputs are normalised per band with the training statistics, so zero is the training mean:
//! filling with zeros is the "teacher-fill" baseline (paper section 4, "teacher with missing
//! input filled"). Training validation, `dis2 eval` and `dis2 predict` all choose, label and
//! run a branch through [`Route`]; [`super::Dis2Net::forward_route`] runs one.
//!
//! Per pixel, `dis2 predict` knows a pattern: the set of modalities unavailable there, as a
//! bitmask (bit `i` for model modality `i`; hence at most [`MAX_PATTERN_MODALITIES`]). The
//! [`RouteTable`] numbers a checkpoint's routes (the codes of the route map) and resolves a
//! pattern S by the one fallback rule:
//! 1. nothing missing: the teacher; S missing: the student of exactly S;
//! 2. else the student of the smallest superset of S the checkpoint holds (ties: the first in
//!    its `model.scenarios` order), which then ignores inputs that are available;
//! 3. else, with `allow_fill`, the teacher with S filled with zeros (the training mean);
//! 4. else nodata. A pixel without any modality is nodata whatever the checkpoint holds.

use anyhow::{bail, Result};
use tch::Tensor;

use super::config::ModelConfig;
use super::modality::{input_flags, ModalitySpec};
use super::scenario::Scenario;

/// A branch of the network and what it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Every modality given: the full-modality branch.
    Teacher,
    /// The student trained for this missing set; the missing inputs are never read.
    Student(Scenario),
    /// The teacher, with this scenario's modalities filled with zeros (the training mean).
    TeacherFill(Scenario),
}

impl Route {
    /// The branch for the modalities given (`given[i]` for modality `i` of a model with
    /// `num_modalities`), without asking which students the network has: the teacher when all
    /// are given, otherwise the student of the missing set (whose absence
    /// [`super::Dis2Net::forward_route`] reports). Never a filled teacher: [`Route::choose`] is
    /// the choice that knows the model's students and can fill.
    ///
    /// # Errors
    /// No modality given ("must leave at least one modality available"); a missing index past
    /// `num_modalities`.
    pub fn of_given(given: &[bool], num_modalities: usize) -> Result<Route> {
        let missing: Vec<usize> = (0..given.len()).filter(|&i| !given[i]).collect();
        if missing.is_empty() {
            return Ok(Route::Teacher);
        }
        Ok(Route::Student(Scenario::new(missing, num_modalities)?))
    }

    /// The branch of a model described by `cfg` for the modalities given (`given[i]` for model
    /// modality `i`): the teacher when all are given; otherwise the student of the missing set,
    /// or, when the model has none and `allow_fill` is set, the teacher with them filled.
    ///
    /// # Errors
    /// No modality given; a missing set without a student and `allow_fill` off (the message
    /// lists the students and suggests `--allow-fill`).
    pub fn choose(cfg: &ModelConfig, given: &[bool], allow_fill: bool) -> Result<Route> {
        let missing: Vec<usize> = (0..given.len()).filter(|&i| !given[i]).collect();
        if missing.is_empty() {
            return Ok(Route::Teacher);
        }
        if missing.len() == given.len() {
            bail!(
                "no input given; this model takes {}",
                input_flags(&cfg.modalities)
            );
        }
        let scenario = Scenario::new(missing, cfg.modalities.len())?;
        let have = cfg.scenario_list()?;
        if have.contains(&scenario) {
            return Ok(Route::Student(scenario));
        }
        if allow_fill {
            return Ok(Route::TeacherFill(scenario));
        }
        let list: Vec<String> = have
            .iter()
            .map(|s| format!("[{}]", s.describe(cfg)))
            .collect();
        bail!(
            "the checkpoint has no student for {}; its students are {}. Give the missing \
             modalities, or pass --allow-fill to run the teacher with them filled with the \
             training mean",
            scenario.describe(cfg),
            list.join(", ")
        )
    }

    /// The student whose weights run; `None` for the teacher (also when it runs filled).
    pub fn student(&self) -> Option<&Scenario> {
        match self {
            Route::Student(s) => Some(s),
            Route::Teacher | Route::TeacherFill(_) => None,
        }
    }

    /// The missing set; `None` for the teacher with every modality.
    pub fn scenario(&self) -> Option<&Scenario> {
        match self {
            Route::Teacher => None,
            Route::Student(s) | Route::TeacherFill(s) => Some(s),
        }
    }

    /// The name in logs, tables and reports: `teacher`, `student[sar]`, `teacher-fill[dsm+sar]`
    /// (the scenario as [`Scenario::text`]).
    pub fn label<M: AsRef<[ModalitySpec]> + ?Sized>(&self, modalities: &M) -> String {
        match self {
            Route::Teacher => "teacher".to_string(),
            Route::Student(s) => format!("student[{}]", s.text(modalities)),
            Route::TeacherFill(s) => format!("teacher-fill[{}]", s.text(modalities)),
        }
    }

    /// For console messages: `teacher (all modalities given)`, `student (missing: sar)`,
    /// `teacher with sar filled with the training mean (...)`.
    pub fn describe<M: AsRef<[ModalitySpec]> + ?Sized>(&self, modalities: &M) -> String {
        match self {
            Route::Teacher => "teacher (all modalities given)".to_string(),
            Route::Student(s) => format!("student ({})", s.describe(modalities)),
            Route::TeacherFill(s) => {
                let names = s.names(modalities).join(", ");
                format!(
                    "teacher with {names} filled with the training mean (the checkpoint has \
                     no student for missing: {names})"
                )
            }
        }
    }

    /// The inputs the branch reads, from one tensor `[B, C_i, H, W]` per model modality (`None`
    /// where not given): the teacher's as given; the student's without its missing modalities;
    /// the filled teacher's with its missing modalities as zeros (of the given tensor's layout
    /// where one is given, else `[B, channels, H, W]` like the first given input).
    ///
    /// # Errors
    /// A filled teacher without any given input to take the size from, or with inputs that are
    /// not `[B, C, H, W]`.
    pub fn inputs(
        &self,
        inputs: &[Option<&Tensor>],
        modalities: &[ModalitySpec],
    ) -> Result<Vec<Option<Tensor>>> {
        let given = || inputs.iter().map(|x| x.map(Tensor::shallow_clone));
        match self {
            Route::Teacher => Ok(given().collect()),
            Route::Student(s) => Ok(given()
                .enumerate()
                .map(|(i, x)| x.filter(|_| !s.is_missing(i)))
                .collect()),
            Route::TeacherFill(s) => {
                let Some(like) = inputs.iter().flatten().next() else {
                    bail!(
                        "the teacher filled for {} has no input",
                        s.describe(modalities)
                    );
                };
                let size = like.size();
                if size.len() != 4 {
                    bail!("inputs must be [B, C, H, W], found {size:?}");
                }
                Ok(inputs
                    .iter()
                    .enumerate()
                    .map(|(i, x)| match x {
                        Some(x) if s.is_missing(i) => Some(x.zeros_like()),
                        Some(x) => Some(x.shallow_clone()),
                        None if !s.is_missing(i) => None,
                        None => Some(Tensor::zeros(
                            [size[0], modalities[i].channels, size[2], size[3]],
                            (like.kind(), like.device()),
                        )),
                    })
                    .collect())
            }
        }
    }
}

/// Route code of a pixel no branch classifies: the route map's nodata value.
pub const ROUTE_NODATA: u8 = 255;

/// Most modalities a model can have for per-pixel routes: a pattern is a `u8` bitmask.
pub const MAX_PATTERN_MODALITIES: usize = 8;

/// How a pixel's pattern found its route (see the module documentation for the rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fallback {
    /// The route of the pattern itself: the teacher, or the student of exactly the missing set.
    Exact,
    /// The student of the smallest superset of the missing set, ignoring available inputs.
    Superset,
    /// The teacher with the missing set filled with the training mean (`allow_fill`).
    Fill,
    /// No student covers the missing set and filling is not allowed: nodata.
    NoStudent,
    /// No modality available: nodata.
    NoModality,
}

impl Fallback {
    /// A trained branch classifies the pattern: the teacher, or a student (its own or a
    /// superset's); not the filled teacher, not nodata.
    pub fn is_trained(self) -> bool {
        matches!(self, Fallback::Exact | Fallback::Superset)
    }
}

/// A pattern's route: its code in the [`RouteTable`] ([`ROUTE_NODATA`] for none) and how it
/// was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution {
    pub code: u8,
    pub fallback: Fallback,
}

/// The routes of one checkpoint, numbered as the route map writes them: code 0 the teacher,
/// then one code per student in the checkpoint's `model.scenarios` order, then one
/// teacher-fill code per missing set without a student of its own (in [`Scenario::all`] order;
/// at most 255 codes in all, since 8 modalities have 254 missing sets);
/// [`ROUTE_NODATA`] (255) where no branch runs. The codes depend on the checkpoint only (not on
/// `allow_fill` or the scene), so route maps of one checkpoint compare code for code.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteTable {
    routes: Vec<Route>,
    labels: Vec<String>,
    num_modalities: usize,
}

impl RouteTable {
    /// The table of the model `cfg` describes.
    ///
    /// # Errors
    /// More than [`MAX_PATTERN_MODALITIES`] modalities, invalid `model.scenarios`, or more than
    /// 255 routes (codes 0-254).
    pub fn of(cfg: &ModelConfig) -> Result<Self> {
        let n = cfg.modalities.len();
        if n > MAX_PATTERN_MODALITIES {
            bail!(
                "model.modalities: {n} modalities; routes per pixel handle at most \
                 {MAX_PATTERN_MODALITIES}"
            );
        }
        let students = cfg.scenario_list()?;
        let mut routes = vec![Route::Teacher];
        routes.extend(students.iter().cloned().map(Route::Student));
        // One teacher-fill code per missing set without a student of its own, also where a
        // superset's student serves it: `--one-route --allow-fill` runs those.
        for s in Scenario::all(n) {
            if !students.contains(&s) {
                routes.push(Route::TeacherFill(s));
            }
        }
        if routes.len() > usize::from(ROUTE_NODATA) {
            bail!(
                "the checkpoint has {} routes; a u8 route map holds at most {}",
                routes.len(),
                ROUTE_NODATA
            );
        }
        let labels = routes.iter().map(|r| r.label(cfg)).collect();
        Ok(Self {
            routes,
            labels,
            num_modalities: n,
        })
    }

    /// Number of codes (routes), nodata not counted.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The route of `code`; `None` for [`ROUTE_NODATA`] or a code past the table.
    pub fn route(&self, code: u8) -> Option<&Route> {
        self.routes.get(usize::from(code))
    }

    /// The label of `code` (`teacher`, `student[sar]`, `teacher-fill[dsm]`), `nodata` for
    /// [`ROUTE_NODATA`] and codes past the table.
    pub fn label(&self, code: u8) -> &str {
        self.labels
            .get(usize::from(code))
            .map_or("nodata", String::as_str)
    }

    /// Every label, by code.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The code of `route`, if the table has it.
    pub fn code_of(&self, route: &Route) -> Option<u8> {
        (self.routes.iter().position(|r| r == route)).and_then(|i| u8::try_from(i).ok())
    }

    /// The bitmask of a missing set (`None`: nothing missing).
    pub fn pattern_of(scenario: Option<&Scenario>) -> u8 {
        scenario.map_or(0, |s| s.missing().iter().fold(0, |p, &i| p | (1u8 << i)))
    }

    /// The route of a pixel whose unavailable modalities are `pattern` (bit `i`: modality `i`),
    /// by the fallback rule of the module documentation.
    pub fn resolve(&self, pattern: u8, allow_fill: bool) -> Resolution {
        let n = self.num_modalities;
        let all = if n >= 8 { u8::MAX } else { (1u8 << n) - 1 };
        let pattern = pattern & all;
        let none = |fallback| Resolution {
            code: ROUTE_NODATA,
            fallback,
        };
        if pattern == all {
            return none(Fallback::NoModality);
        }
        if pattern == 0 {
            return Resolution {
                code: 0,
                fallback: Fallback::Exact,
            };
        }
        let missing: Vec<usize> = (0..n).filter(|i| pattern & (1 << i) != 0).collect();
        let Ok(s) = Scenario::new(missing, n) else {
            return none(Fallback::NoModality);
        };
        let students: Vec<Scenario> = (self.routes.iter())
            .filter_map(|r| r.student().cloned())
            .collect();
        if let Some(found) = superset_student(&students, &s) {
            let exact = found == &s;
            let code = self.code_of(&Route::Student(found.clone()));
            return Resolution {
                code: code.unwrap_or(ROUTE_NODATA),
                fallback: if exact {
                    Fallback::Exact
                } else {
                    Fallback::Superset
                },
            };
        }
        match (allow_fill, self.code_of(&Route::TeacherFill(s))) {
            (true, Some(code)) => Resolution {
                code,
                fallback: Fallback::Fill,
            },
            _ => none(Fallback::NoStudent),
        }
    }

    /// [`Self::resolve`] of every pattern, indexed by the pattern: one lookup per pixel.
    pub fn lookup(&self, allow_fill: bool) -> Vec<Resolution> {
        (0..=u8::MAX).map(|p| self.resolve(p, allow_fill)).collect()
    }
}

/// The student of `s` itself, else of its smallest superset among `students` (ties: the first).
fn superset_student<'a>(students: &'a [Scenario], s: &Scenario) -> Option<&'a Scenario> {
    if let Some(exact) = students.iter().find(|t| *t == s) {
        return Some(exact);
    }
    students
        .iter()
        .filter(|t| s.missing().iter().all(|&i| t.is_missing(i)))
        .min_by_key(|t| t.missing().len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn config(scenarios: &[&[&str]]) -> ModelConfig {
        let modality = |name: &str, channels| ModalitySpec {
            name: name.to_string(),
            channels,
        };
        ModelConfig {
            base_width: 8,
            num_classes: 2,
            crop: [16, 16],
            heads: 8,
            ffn_dim: 16,
            depth: 1,
            modalities: vec![
                modality("optical", 4),
                modality("dsm", 1),
                modality("sar", 1),
            ],
            scenarios: Some(
                scenarios
                    .iter()
                    .map(|s| s.iter().map(|n| n.to_string()).collect())
                    .collect(),
            ),
            decoder: Default::default(),
            fusion: Default::default(),
        }
    }

    #[test]
    fn labels_and_descriptions_name_the_missing_modalities() {
        let cfg = config(&[&["sar"]]);
        let s = Scenario::parse("sar,dsm", &cfg).unwrap();
        assert_eq!(Route::Teacher.label(&cfg), "teacher");
        assert_eq!(Route::Student(s.clone()).label(&cfg), "student[dsm+sar]");
        assert_eq!(
            Route::TeacherFill(s.clone()).label(&cfg),
            "teacher-fill[dsm+sar]"
        );
        assert_eq!(
            Route::Student(s.clone()).describe(&cfg),
            "student (missing: dsm, sar)"
        );
        // Said by eval and sweep too, which have no --allow-fill: no flag is named.
        let fill = Route::TeacherFill(s).describe(&cfg);
        assert!(
            fill.starts_with("teacher with dsm, sar filled with the training mean (the checkpoint")
                && !fill.contains("--"),
            "{fill}"
        );
    }

    #[test]
    fn the_choice_follows_the_given_modalities_and_the_students() {
        let cfg = config(&[&["sar"]]);
        let sar = Scenario::parse("sar", &cfg).unwrap();
        let dsm = Scenario::parse("dsm", &cfg).unwrap();
        assert_eq!(
            Route::choose(&cfg, &[true; 3], false).unwrap(),
            Route::Teacher
        );
        assert_eq!(
            Route::choose(&cfg, &[true, true, false], false).unwrap(),
            Route::Student(sar)
        );
        let e = Route::choose(&cfg, &[true, false, true], false).unwrap_err();
        assert!(e.to_string().contains("no student for missing: dsm"), "{e}");
        assert!(e.to_string().contains("--allow-fill"), "{e}");
        assert_eq!(
            Route::choose(&cfg, &[true, false, true], true).unwrap(),
            Route::TeacherFill(dsm)
        );
        let e = Route::choose(&cfg, &[false; 3], true).unwrap_err();
        assert!(
            e.to_string()
                .contains("no input given; this model takes --optical FILE (4 band(s))"),
            "{e}"
        );
        assert!(Route::of_given(&[false, false], 2).is_err());
    }

    /// Codes: teacher, students in the checkpoint's order, teacher-fill for every missing set
    /// without its own student. Patterns: exact, else the smallest superset (the first of equal
    /// size in the checkpoint's order), else fill when allowed, else nodata.
    #[test]
    fn the_route_table_numbers_routes_and_resolves_patterns_by_the_rule() {
        let cfg = config(&[&["sar", "dsm"], &["optical", "sar"], &["sar"]]);
        let table = RouteTable::of(&cfg).unwrap();
        assert_eq!(
            table.labels(),
            [
                "teacher",
                "student[dsm+sar]",
                "student[optical+sar]",
                "student[sar]",
                "teacher-fill[optical]",
                "teacher-fill[dsm]",
                "teacher-fill[optical+dsm]",
            ]
        );
        let (optical, dsm, sar) = (1u8, 2u8, 4u8);
        let resolve = |p, fill| {
            let r = table.resolve(p, fill);
            (table.label(r.code).to_string(), r.fallback)
        };
        assert_eq!(resolve(0, false), ("teacher".into(), Fallback::Exact));
        assert_eq!(
            resolve(sar, false),
            ("student[sar]".into(), Fallback::Exact)
        );
        assert_eq!(
            resolve(dsm, false),
            ("student[dsm+sar]".into(), Fallback::Superset)
        );
        // optical: student[optical+sar] is the only student without it.
        assert_eq!(
            resolve(optical, false),
            ("student[optical+sar]".into(), Fallback::Superset)
        );
        assert_eq!(
            resolve(optical | dsm, false),
            ("nodata".into(), Fallback::NoStudent)
        );
        assert_eq!(
            resolve(optical | dsm, true),
            ("teacher-fill[optical+dsm]".into(), Fallback::Fill)
        );
        assert_eq!(
            resolve(optical | dsm | sar, true),
            ("nodata".into(), Fallback::NoModality)
        );
        assert_eq!(
            RouteTable::pattern_of(Some(&Scenario::parse("dsm,sar", &cfg).unwrap())),
            6
        );
        // Ties between supersets of equal size: the first in the checkpoint's order.
        let tie = config(&[&["optical", "sar"], &["dsm", "sar"]]);
        let table = RouteTable::of(&tie).unwrap();
        assert_eq!(
            table.label(table.resolve(sar, false).code),
            "student[optical+sar]"
        );
    }

    #[test]
    fn a_filled_teacher_reads_zeros_and_a_student_never_reads_its_missing_inputs() {
        let cfg = config(&[]);
        let x: Vec<Tensor> = [4, 1, 1]
            .iter()
            .map(|&c| Tensor::ones([2, c, 4, 4], (Kind::Float, Device::Cpu)))
            .collect();
        let sar = Scenario::parse("sar", &cfg).unwrap();
        let absent = [Some(&x[0]), Some(&x[1]), None];
        let filled = Route::TeacherFill(sar.clone())
            .inputs(&absent, &cfg.modalities)
            .unwrap();
        let zeros = filled[2].as_ref().unwrap();
        assert_eq!(zeros.size(), [2, 1, 4, 4]);
        assert_eq!(zeros.abs().sum(Kind::Float).double_value(&[]), 0.0);
        let given: Vec<Option<&Tensor>> = x.iter().map(Some).collect();
        let filled = Route::TeacherFill(sar.clone())
            .inputs(&given, &cfg.modalities)
            .unwrap();
        assert_eq!(
            filled[2]
                .as_ref()
                .unwrap()
                .sum(Kind::Float)
                .double_value(&[]),
            0.0
        );
        assert_eq!(
            filled[0]
                .as_ref()
                .unwrap()
                .sum(Kind::Float)
                .double_value(&[]),
            128.0
        );
        let student = Route::Student(sar).inputs(&given, &cfg.modalities).unwrap();
        assert!(student[0].is_some() && student[1].is_some() && student[2].is_none());
    }
}
