//! Which branch of a network runs for the inputs at hand: the teacher (every modality given),
//! the student of the missing set, or the teacher with the missing modalities filled with zeros.
//!
//! Inputs are normalised per band with the training statistics, so zero is the training mean:
//! filling with zeros is the "teacher-fill" baseline (paper section 4, "teacher with missing
//! input filled"). Training validation, `dis2 eval` and `dis2 predict` all choose, label and
//! run a branch through [`Route`]; [`super::Dis2Net::forward_route`] runs one.

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
    /// The branch for the modalities given (`given[i]` for model modality `i`), without asking
    /// which students the network has: the teacher when all are given, otherwise the student of
    /// the missing set (whose absence the network reports when it runs).
    ///
    /// # Errors
    /// No modality given ("must leave at least one modality available").
    pub fn of_given(given: &[bool]) -> Result<Route> {
        let missing: Vec<usize> = (0..given.len()).filter(|&i| !given[i]).collect();
        if missing.is_empty() {
            return Ok(Route::Teacher);
        }
        Ok(Route::Student(Scenario::new(missing, given.len())?))
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
                    "teacher with {names} filled with the training mean (--allow-fill; the \
                     checkpoint has no student for missing: {names})"
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
    /// A filled teacher without any given input to take the size from.
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
