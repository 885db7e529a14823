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
