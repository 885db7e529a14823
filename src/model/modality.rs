//! One input sensor of a model: its name (`--sar FILE` on the command line, `[sar]` in a
//! scenario list) and its band count. Scenarios and routes name modalities through this list.

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// One input sensor: a name used on the command line (`--missing sar`) and its band count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModalitySpec {
    pub name: String,
    pub channels: i64,
}

/// The index of the modality called `name`.
///
/// # Errors
/// An unknown name, with the list of known ones.
pub(crate) fn modality_index(modalities: &[ModalitySpec], name: &str) -> Result<usize> {
    modalities
        .iter()
        .position(|m| m.name == name)
        .ok_or_else(|| {
            let known: Vec<&str> = modalities.iter().map(|m| m.name.as_str()).collect();
            anyhow::anyhow!(
                "unknown modality {name:?}; this model has {}",
                known.join(", ")
            )
        })
}

/// `--optical FILE (4 band(s)), --dsm FILE (1 band(s))`: the inputs as `dis2 predict` takes
/// them, for messages.
pub(crate) fn input_flags(modalities: &[ModalitySpec]) -> String {
    modalities
        .iter()
        .map(|m| format!("--{} FILE ({} band(s))", m.name, m.channels))
        .collect::<Vec<_>>()
        .join(", ")
}
