//! Missing-modality scenarios: which modality slots are absent at inference.
//!
//! In text a scenario is its missing modalities' names: read by [`Scenario::parse`] (and
//! [`parse_names`]) from `sar`, `dsm,sar` (the command line's `--missing` / `--drop`) or
//! `dsm+sar` (a `--scenarios` item), written by [`Scenario::text`] (and [`join_names`]) as
//! `dsm+sar`, in model order (labels such as `student[dsm+sar]`, `train.joint_probabilities`
//! keys, file names).

use anyhow::{bail, Result};

use super::modality::{modality_index, ModalitySpec};

/// The modality names of a scenario's text: separated by `,` or `+`, blanks trimmed, empty
/// items left out (`"dsm, sar"`, `"dsm+sar"` -> `["dsm", "sar"]`). Names are not checked.
pub(crate) fn parse_names(text: &str) -> Vec<String> {
    text.split([',', '+'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Modality names as a scenario's text: joined by `+` (`["dsm", "sar"]` -> `dsm+sar`).
pub(crate) fn join_names<S: AsRef<str>>(names: &[S]) -> String {
    let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    names.join("+")
}

/// A non-empty set of missing modalities (by index in `ModelConfig::modalities`) that leaves at
/// least one modality available. The teacher (full-modality branch) is not a scenario.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scenario {
    missing: Vec<usize>,
}

impl Scenario {
    /// A scenario of `num_modalities` slots with the given missing indices (any order, no
    /// repeats).
    pub fn new(mut missing: Vec<usize>, num_modalities: usize) -> Result<Self> {
        missing.sort_unstable();
        if missing.is_empty() {
            bail!("a scenario needs at least one missing modality (the full set is the teacher)");
        }
        if missing.windows(2).any(|w| w[0] == w[1]) {
            bail!("a scenario names modality {} twice", missing[0]);
        }
        if let Some(&i) = missing.iter().find(|&&i| i >= num_modalities) {
            bail!("modality index {i} out of range: the model has {num_modalities} modalities");
        }
        if missing.len() == num_modalities {
            bail!("a scenario must leave at least one modality available");
        }
        Ok(Scenario { missing })
    }

    /// The scenario whose missing modalities have these names; `modalities` is the model's
    /// list (a [`super::config::ModelConfig`] or its `modalities`).
    ///
    /// # Errors
    /// An unknown name, or a set that [`Scenario::new`] refuses (named in the message).
    pub(crate) fn from_names<S, M>(names: &[S], modalities: &M) -> Result<Self>
    where
        S: AsRef<str>,
        M: AsRef<[ModalitySpec]> + ?Sized,
    {
        let modalities = modalities.as_ref();
        let idx = names
            .iter()
            .map(|n| modality_index(modalities, n.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let listed: Vec<&str> = names.iter().map(|n| n.as_ref()).collect();
        Self::new(idx, modalities.len())
            .map_err(|e| anyhow::anyhow!("scenario [{}]: {e}", listed.join(", ")))
    }

    /// The scenario of a text such as `sar`, `dsm,sar` or `dsm+sar` (see [`parse_names`]).
    ///
    /// # Errors
    /// As [`Scenario::from_names`]; callers add the flag or key the text came from.
    pub fn parse<M: AsRef<[ModalitySpec]> + ?Sized>(text: &str, modalities: &M) -> Result<Self> {
        Self::from_names(&parse_names(text), modalities)
    }

    /// Every scenario of M modalities: all non-empty proper subsets, fewer missing first.
    pub fn all(num_modalities: usize) -> Vec<Scenario> {
        let mut out: Vec<Scenario> = (1u64..(1u64 << num_modalities) - 1)
            .map(|mask| Scenario {
                missing: (0..num_modalities)
                    .filter(|i| mask & (1 << i) != 0)
                    .collect(),
            })
            .collect();
        out.sort_by(|a, b| {
            a.missing
                .len()
                .cmp(&b.missing.len())
                .then(a.missing.cmp(&b.missing))
        });
        out
    }

    /// Missing modality indices, ascending.
    pub fn missing(&self) -> &[usize] {
        &self.missing
    }

    pub fn is_missing(&self, i: usize) -> bool {
        self.missing.binary_search(&i).is_ok()
    }

    /// Available modality indices of a model with `num_modalities` slots, ascending.
    pub fn available(&self, num_modalities: usize) -> Vec<usize> {
        (0..num_modalities)
            .filter(|&i| !self.is_missing(i))
            .collect()
    }

    /// The variable-store key of this scenario's student: `m` and the missing indices joined by
    /// `_`, e.g. `m1` or `m0_2`.
    pub fn key(&self) -> String {
        let idx: Vec<String> = self.missing.iter().map(|i| i.to_string()).collect();
        format!("m{}", idx.join("_"))
    }

    /// The missing modalities by name, in model order.
    pub fn names<M: AsRef<[ModalitySpec]> + ?Sized>(&self, modalities: &M) -> Vec<String> {
        let modalities = modalities.as_ref();
        self.missing
            .iter()
            .map(|&i| modalities[i].name.clone())
            .collect()
    }

    /// The scenario as text: `dsm+sar` (see [`join_names`]); [`Scenario::parse`] reads it back.
    pub fn text<M: AsRef<[ModalitySpec]> + ?Sized>(&self, modalities: &M) -> String {
        join_names(&self.names(modalities))
    }

    /// `missing: a, b`, for messages.
    pub fn describe<M: AsRef<[ModalitySpec]> + ?Sized>(&self, modalities: &M) -> String {
        format!("missing: {}", self.names(modalities).join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_scenarios_of_two_and_three() {
        let two = Scenario::all(2);
        assert_eq!(
            two.iter().map(|s| s.key()).collect::<Vec<_>>(),
            ["m0", "m1"]
        );
        let three = Scenario::all(3);
        let keys: Vec<String> = three.iter().map(|s| s.key()).collect();
        assert_eq!(keys, ["m0", "m1", "m2", "m0_1", "m0_2", "m1_2"]);
    }

    #[test]
    fn rejects_bad_scenarios() {
        assert!(Scenario::new(vec![], 2)
            .unwrap_err()
            .to_string()
            .contains("at least one missing"));
        assert!(Scenario::new(vec![0, 1], 2)
            .unwrap_err()
            .to_string()
            .contains("available"));
        assert!(Scenario::new(vec![1, 1], 3)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        assert!(Scenario::new(vec![3], 3)
            .unwrap_err()
            .to_string()
            .contains("out of range"));
        let s = Scenario::new(vec![2, 0], 3).unwrap();
        assert_eq!(s.missing(), [0, 2]);
        assert_eq!(s.available(3), [1]);
    }

    #[test]
    fn text_reads_both_separators_and_writes_one() {
        let modalities: Vec<ModalitySpec> = ["optical", "dsm", "sar"]
            .iter()
            .map(|n| ModalitySpec {
                name: n.to_string(),
                channels: 1,
            })
            .collect();
        assert_eq!(parse_names(" sar, dsm "), ["sar", "dsm"]);
        assert_eq!(parse_names("sar+dsm"), ["sar", "dsm"]);
        let s = Scenario::parse("sar,dsm", &modalities).unwrap();
        assert_eq!(s, Scenario::parse("dsm+sar", &modalities).unwrap());
        assert_eq!(s.text(&modalities), "dsm+sar");
        assert_eq!(
            Scenario::parse(&s.text(&modalities), &modalities).unwrap(),
            s
        );
        assert_eq!(s.describe(&modalities), "missing: dsm, sar");
        let e = Scenario::parse("lidar", &modalities).unwrap_err();
        assert!(e.to_string().contains("unknown modality"), "{e}");
    }
}
