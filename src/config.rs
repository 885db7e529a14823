//! Experiment configuration: YAML files in `experiments/`, read into typed structs that refuse
//! unknown keys, with `--set key.path=value` overrides from the command line.
//!
//! Every YAML file dis2 reads (experiments, run and sweep records, checkpoint sidecars, model
//! files) goes through [`from_yaml_str`] or [`yaml_value`], which refuse a key given twice in
//! one map (serde would keep the last one without a word).
//!
//! Errors name the file, the key path and the line, e.g.
//! `experiments/x.yaml: model.base_widht (line 4, column 3): unknown field ...`.

use anyhow::{anyhow, bail, Context, Result};
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};
use std::cell::RefCell;
use std::fmt;
use std::path::Path;

use crate::data::config::DataConfig;
use crate::model::config::ModelConfig;
use crate::train::config::TrainConfig;

/// One experiment: everything a run needs to be repeated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// A short name, used for run directories.
    pub name: String,
    /// Seed of every random choice (initialisation, sampling, augmentation).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// The network.
    pub model: ModelConfig,
    /// The dataset, normalisation and sampling (default: the synthetic benchmark).
    #[serde(default)]
    pub data: DataConfig,
    /// Optimiser, schedule, loss weights and validation of training.
    #[serde(default)]
    pub train: TrainConfig,
}

fn default_seed() -> u64 {
    42
}

impl Experiment {
    /// Reads `path`, applies the `--set` overrides and checks the result.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let experiment: Self = load_yaml(path, overrides)?;
        experiment
            .model
            .validate()
            .with_context(|| format!("{}: key `model`", path.display()))?;
        experiment
            .data
            .validate(&experiment.model)
            .with_context(|| format!("{}: key `data`", path.display()))?;
        experiment
            .train
            .validate()
            .with_context(|| format!("{}: key `train`", path.display()))?;
        Ok(experiment)
    }

    /// The keys whose values differ from `other`'s, as `(key path, value here, value there)`
    /// with the values as JSON text (`not set` for an absent key); lists are compared whole.
    pub(crate) fn differences(&self, other: &Experiment) -> Result<Vec<(String, String, String)>> {
        let (a, b) = (serde_yaml::to_value(self)?, serde_yaml::to_value(other)?);
        let mut found = Vec::new();
        value_differences(&mut Vec::new(), &a, &b, &mut found);
        Ok(found)
    }

    /// Writes the effective configuration (after overrides) to `path` (a run's `config.yaml`).
    pub(crate) fn save_effective(&self, path: &Path) -> Result<()> {
        let text = serde_yaml::to_string(self).context("cannot serialise the configuration")?;
        crate::fsutil::write_atomic(path, text.as_bytes())
    }
}

/// Where `a` and `b` differ below the key path `path` (see [`Experiment::differences`]).
fn value_differences(
    path: &mut Vec<String>,
    a: &Value,
    b: &Value,
    found: &mut Vec<(String, String, String)>,
) {
    if let (Value::Mapping(x), Value::Mapping(y)) = (a, b) {
        let keys = x.keys().chain(y.keys().filter(|k| !x.contains_key(*k)));
        for key in keys {
            path.push(key_text(Some(key)));
            let (a, b) = (x.get(key), y.get(key));
            value_differences(
                path,
                a.unwrap_or(&Value::Null),
                b.unwrap_or(&Value::Null),
                found,
            );
            path.pop();
        }
    } else if a != b {
        let text = |v: &Value| match v {
            Value::Null => "not set".to_string(),
            v => serde_json::to_string(v).unwrap_or_else(|_| format!("{v:?}")),
        };
        found.push((path.join("."), text(a), text(b)));
    }
}

/// Reads a YAML file into `T`, refusing unknown keys, then applies `key.path=value` overrides.
pub(crate) fn load_yaml<T: DeserializeOwned>(path: &Path, overrides: &[String]) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read configuration file {}", path.display()))?;
    let parsed: T = from_yaml_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    if overrides.is_empty() {
        return Ok(parsed);
    }
    let mut value = yaml_value(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    for item in overrides {
        apply_override(&mut value, item).with_context(|| format!("--set {item}"))?;
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        anyhow!(
            "{} with --set overrides: key `{key}`: {}",
            path.display(),
            e.into_inner()
        )
    })
}

/// Deserialises YAML text; the error names the key path, line and column, and a key given twice
/// in one map is refused with both places ([`check_unique_keys`]).
pub(crate) fn from_yaml_str<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    check_unique_keys(text)?;
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let place = match inner.location() {
            Some(loc) => format!(" (line {}, column {})", loc.line(), loc.column()),
            None => String::new(),
        };
        // serde_yaml repeats the location at the end of its message; keep one copy.
        let message = inner.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        format!("key `{key}`{place}: {message}")
    })
}

/// Parses YAML text into a [`Value`], refusing a key given twice in one map
/// ([`check_unique_keys`]); other errors are serde_yaml's, with line and column.
pub(crate) fn yaml_value(text: &str) -> Result<Value, String> {
    check_unique_keys(text)?;
    serde_yaml::from_str(text).map_err(|e| e.to_string())
}

/// Refuses YAML text in which one map gives a key twice, naming the key's path and both places:
/// ``key `data.dataset.generic.class_codes.1` is given twice: on line 9 (column 18) and line 9
/// (column 30); a map names each key once``. Text that is not YAML passes: the parse that follows
/// reports it.
///
/// The places are serde_yaml's own marks: it places an error at the node being read, so a walk
/// over the document that stops at a key's second occurrence gives that place, and a second walk
/// that stops at the same map's first occurrence of the key gives the other.
fn check_unique_keys(text: &str) -> Result<(), String> {
    let Some((second, repeated)) = walk(text, None) else {
        return Ok(());
    };
    let first = walk(text, Some(repeated.clone())).and_then(|(at, _)| at);
    let place = |at: Option<serde_yaml::Location>| match at {
        Some(at) => format!("line {} (column {})", at.line(), at.column()),
        None => "an unknown place".to_string(),
    };
    Err(format!(
        "key `{}` is given twice: on {} and {}; a map names each key once",
        repeated.path,
        place(first),
        place(second)
    ))
}

/// A key given twice in one map: the map's number in document order, the key (`None`: a
/// sequence or map used as a key), and its path from the document's root.
#[derive(Debug, Clone, PartialEq)]
struct Repeated {
    map: usize,
    key: Option<Value>,
    path: String,
}

/// Where a walk over a document stands.
#[derive(Default)]
struct Walk {
    /// Maps entered so far.
    maps: usize,
    /// The path of the node being read: key names, and `[i]` for sequence items.
    path: Vec<String>,
    /// The second walk: stop at the first occurrence of this key in its map.
    looking_for: Option<Repeated>,
    /// What stopped the walk.
    stopped: Option<Repeated>,
}

impl Walk {
    /// The path below `segment`, as serde_path_to_error writes it (`model.modalities[0].name`).
    fn path_to(&self, segment: &str) -> String {
        let mut out = String::new();
        for s in self.path.iter().map(String::as_str).chain([segment]) {
            if !out.is_empty() && !s.starts_with('[') {
                out.push('.');
            }
            out.push_str(s);
        }
        out
    }
}

/// Walks `text` until a key's second occurrence in a map (or, with `looking_for`, that key's
/// first occurrence): the place serde_yaml gives and the key; `None` when no key repeats (or the
/// text is not YAML).
fn walk(
    text: &str,
    looking_for: Option<Repeated>,
) -> Option<(Option<serde_yaml::Location>, Repeated)> {
    let walk = RefCell::new(Walk {
        looking_for,
        ..Walk::default()
    });
    let error = Node(&walk)
        .deserialize(serde_yaml::Deserializer::from_str(text))
        .err()?;
    let stopped = walk.into_inner().stopped?;
    Some((error.location(), stopped))
}

/// Any node of a document, read for its maps' keys.
#[derive(Clone, Copy)]
struct Node<'w>(&'w RefCell<Walk>);

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML node")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_i128<E>(self, _: i128) -> Result<(), E> {
        Ok(())
    }
    fn visit_u128<E>(self, _: u128) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for index in 0.. {
            self.0.borrow_mut().path.push(format!("[{index}]"));
            let item = seq.next_element_seed(self)?;
            self.0.borrow_mut().path.pop();
            if item.is_none() {
                break;
            }
        }
        Ok(())
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let number = {
            let mut walk = self.0.borrow_mut();
            walk.maps += 1;
            walk.maps - 1
        };
        let mut keys: Vec<Option<Value>> = Vec::new();
        loop {
            let seed = Key {
                walk: self.0,
                map: number,
                seen: &keys,
            };
            let Some(key) = map.next_key_seed(seed)? else {
                return Ok(());
            };
            self.0.borrow_mut().path.push(key_text(key.as_ref()));
            map.next_value_seed(self)?;
            self.0.borrow_mut().path.pop();
            keys.push(key);
        }
    }
    /// A tagged node (`!tag value`): its value.
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        let (_tag, value) = data.variant::<String>()?;
        de::VariantAccess::newtype_variant_seed(value, self)
    }
}

/// A map's key, checked against the keys before it in the same map. The error that stops the
/// walk is raised while the key is read, so serde_yaml places it at the key.
struct Key<'w, 'k> {
    walk: &'w RefCell<Walk>,
    map: usize,
    seen: &'k [Option<Value>],
}

impl Key<'_, '_> {
    fn check<E: de::Error>(self, key: Value) -> Result<Option<Value>, E> {
        let key = Some(key);
        let mut walk = self.walk.borrow_mut();
        let wanted = walk
            .looking_for
            .as_ref()
            .is_some_and(|r| r.map == self.map && r.key == key);
        if wanted || self.seen.contains(&key) {
            let path = walk.path_to(&key_text(key.as_ref()));
            walk.stopped = Some(Repeated {
                map: self.map,
                key,
                path,
            });
            return Err(E::custom("a key given twice"));
        }
        Ok(key)
    }
}

impl<'de> DeserializeSeed<'de> for Key<'_, '_> {
    type Value = Option<Value>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key<'_, '_> {
    type Value = Option<Value>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map key")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.check(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.check(Value::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.check(Value::Number(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
        self.check(Value::String(v.to_string()))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
        self.check(Value::String(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.check(Value::Number(v.into()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.check(Value::String(v.to_string()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.check(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.check(Value::Null)
    }
    // A sequence, map or tagged node as a key: walked for its own maps, not compared.
    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Node(self.walk).visit_seq(seq).map(|()| None)
    }
    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Node(self.walk).visit_map(map).map(|()| None)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        Node(self.walk).visit_enum(data).map(|()| None)
    }
}

/// A key as its path segment: `~` for null, `?` for a sequence or map (or no key).
fn key_text(key: Option<&Value>) -> String {
    match key {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Null) => "~".to_string(),
        _ => "?".to_string(),
    }
}

/// Sets `a.b.c` to the YAML value after `=` (parsed as YAML, so `0.01`, `true`, `[64, 64]` work).
pub(crate) fn apply_override(root: &mut Value, item: &str) -> Result<()> {
    let (key, raw) = item
        .split_once('=')
        .ok_or_else(|| anyhow!("expected KEY.PATH=VALUE, for example train.lr=0.01"))?;
    let value = yaml_value(raw).map_err(|e| anyhow!("bad value {raw:?}: {e}"))?;
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("bad key {key:?}: expected dot-separated names");
    }
    let mut node = root;
    for (depth, part) in parts.iter().enumerate() {
        if node.is_null() {
            *node = Value::Mapping(Mapping::new());
        }
        let map = node.as_mapping_mut().ok_or_else(|| {
            anyhow!(
                "`{}` is not a section, cannot set a key below it",
                parts[..depth].join(".")
            )
        })?;
        let entry = map
            .entry(Value::String(part.to_string()))
            .or_insert(Value::Null);
        if depth + 1 == parts.len() {
            *entry = value;
            return Ok(());
        }
        node = entry;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "name: t\nseed: 1\nmodel:\n  base_width: 8\n  num_classes: 5\n  crop: [64, 64]\n  modalities:\n    - {name: optical, channels: 3}\n    - {name: dsm, channels: 1}\n";

    fn write(dir: &Path, text: &str) -> std::path::PathBuf {
        let path = dir.join("exp.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn reads_a_good_file() {
        let dir = tempfile::tempdir().unwrap();
        let exp = Experiment::load(&write(dir.path(), GOOD), &[]).unwrap();
        assert_eq!(exp.model.base_width, 8);
        assert_eq!(exp.model.modalities.len(), 2);
    }

    #[test]
    fn misspelled_key_names_file_key_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &GOOD.replace("base_width", "base_widht"));
        let err = format!("{:#}", Experiment::load(&path, &[]).unwrap_err());
        assert!(err.contains("exp.yaml"), "{err}");
        assert!(err.contains("model.base_widht"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("unknown field `base_widht`"), "{err}");
    }

    #[test]
    fn overrides_replace_values_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), GOOD);
        let exp =
            Experiment::load(&path, &["model.base_width=16".into(), "seed=7".into()]).unwrap();
        assert_eq!((exp.model.base_width, exp.seed), (16, 7));
        let err = format!(
            "{:#}",
            Experiment::load(&path, &["model.widht=3".into()]).unwrap_err()
        );
        assert!(
            err.contains("model.widht") && err.contains("--set"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            Experiment::load(&path, &["seed".into()]).unwrap_err()
        );
        assert!(err.contains("KEY.PATH=VALUE"), "{err}");
        let err = format!(
            "{:#}",
            Experiment::load(&path, &["name.x=1".into()]).unwrap_err()
        );
        assert!(err.contains("`name` is not a section"), "{err}");
    }

    #[test]
    fn data_section_defaults_to_the_synthetic_benchmark() {
        let dir = tempfile::tempdir().unwrap();
        let exp = Experiment::load(&write(dir.path(), GOOD), &[]).unwrap();
        assert_eq!(exp.data, DataConfig::default());
        assert_eq!(
            exp.data.dataset,
            crate::data::config::DatasetConfig::Synthetic(crate::data::config::SyntheticConfig {
                root: "data/synthetic".into()
            })
        );
    }

    #[test]
    fn data_section_errors_name_file_key_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let potsdam =
            format!("{GOOD}data:\n  dataset:\n    potsdam: {{root: /d, erroded_labels: true}}\n");
        let err = format!(
            "{:#}",
            Experiment::load(&write(dir.path(), &potsdam), &[]).unwrap_err()
        );
        assert!(
            err.contains("exp.yaml") && err.contains("data.dataset.potsdam.erroded_labels"),
            "{err}"
        );
        assert!(err.contains("line 12"), "{err}");
        let two = format!("{GOOD}data:\n  dataset:\n    synthetic: {{root: a}}\n    generic: {{train: {{modalities: {{}}}}}}\n");
        let err = format!(
            "{:#}",
            Experiment::load(&write(dir.path(), &two), &[]).unwrap_err()
        );
        assert!(
            err.contains("data.dataset") && err.contains("name exactly one layout"),
            "{err}"
        );
        let product = format!(
            "{GOOD}data:\n  dataset:\n    potsdam: {{root: /d, modalities: {{optical: rgbn}}}}\n"
        );
        let err = format!(
            "{:#}",
            Experiment::load(&write(dir.path(), &product), &[]).unwrap_err()
        );
        assert!(
            err.contains("data.dataset.potsdam.modalities.optical") && err.contains("rgbn"),
            "{err}"
        );
        let norm =
            format!("{GOOD}data:\n  normalisation:\n    optical: {{mean: [1, 2], std: [1, 1]}}\n");
        let err = format!(
            "{:#}",
            Experiment::load(&write(dir.path(), &norm), &[]).unwrap_err()
        );
        assert!(
            err.contains("exp.yaml: key `data`")
                && err.contains("normalisation.optical.mean: 2 value(s), expected 3"),
            "{err}"
        );
        let ignore = format!("{GOOD}data:\n  ignore_index: 4\n");
        let err = format!(
            "{:#}",
            Experiment::load(&write(dir.path(), &ignore), &[]).unwrap_err()
        );
        assert!(err.contains("ignore_index: 4 is a class id"), "{err}");
        let path = write(dir.path(), GOOD);
        let err = format!(
            "{:#}",
            Experiment::load(&path, &["data.sampling.scale=[2, 1]".into()]).unwrap_err()
        );
        assert!(err.contains("sampling.scale: [2, 1]"), "{err}");
        let err = format!(
            "{:#}",
            Experiment::load(&path, &["data.sampling.batch_size=600".into()]).unwrap_err()
        );
        assert!(
            err.contains("samples_per_epoch: 512 is less than one batch (batch_size 600)"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            Experiment::load(&path, &["data.class_weights=[1, 1]".into()]).unwrap_err()
        );
        assert!(
            err.contains("class_weights: 2 value(s), expected 5"),
            "{err}"
        );
    }

    #[test]
    fn a_key_given_twice_is_refused_with_both_places() {
        let dir = tempfile::tempdir().unwrap();
        // The reproducer: the last `1:` used to win, leaving class 0 without a code.
        let generic = format!(
            "{GOOD}data:\n  dataset:\n    generic:\n      train: {{modalities: {{optical: o, dsm: d}}, labels: l}}\n      class_codes: {{1: 0, 2: 1, 1: 1}}\n"
        );
        let path = write(dir.path(), &generic);
        let want =
            "key `data.dataset.generic.class_codes.1` is given twice: on line 14 (column 21) \
                    and line 14 (column 33)";
        for set in [vec![], vec!["seed=3".to_string()]] {
            let err = format!("{:#}", Experiment::load(&path, &set).unwrap_err());
            assert!(err.contains("exp.yaml") && err.contains(want), "{err}");
        }
        // Block maps, at the top level and in a sequence item; the same key in two maps is fine.
        let twice = GOOD.replace("seed: 1\n", "seed: 1\nmodel2: {}\nseed: 2\n");
        let err = from_yaml_str::<Value>(&twice).unwrap_err();
        assert!(
            err.contains("key `seed` is given twice: on line 2 (column 1) and line 4 (column 1)"),
            "{err}"
        );
        let item = GOOD.replace(
            "{name: dsm, channels: 1}",
            "{name: dsm, channels: 1, name: sar}",
        );
        let err = from_yaml_str::<Value>(&item).unwrap_err();
        assert!(err.contains("key `model.modalities[1].name`"), "{err}");
        assert!(from_yaml_str::<Value>("a: {x: 1}\nb: {x: 1}\n").is_ok());
        // Keys equal as values are the same key; a string "1" is not the number 1.
        assert!(from_yaml_str::<Value>("{1: a, 0x1: b}").is_err());
        assert!(from_yaml_str::<Value>("{1: a, '1': b}").is_ok());
        // Overrides go through the same check.
        let err = format!(
            "{:#}",
            Experiment::load(
                &write(dir.path(), GOOD),
                &["data.class_codes={1: 0, 1: 1}".into()]
            )
            .unwrap_err()
        );
        assert!(err.contains("key `1` is given twice"), "{err}");
        // Text that is not YAML is left to the parse that reports it.
        let err = from_yaml_str::<Value>("a: [1,\n").unwrap_err();
        assert!(!err.contains("twice"), "{err}");
    }

    #[test]
    fn differences_name_each_changed_key_with_both_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), GOOD);
        let a = Experiment::load(&path, &[]).unwrap();
        let set = ["seed=7", "train.max_steps=9", "model.crop=[32, 32]"].map(String::from);
        let b = Experiment::load(&path, &set).unwrap();
        let found = a.differences(&b).unwrap();
        let want = [
            ("seed", "1", "7"),
            ("model.crop", "[64,64]", "[32,32]"),
            ("train.max_steps", "not set", "9"),
        ]
        .map(|(k, x, y)| (k.to_string(), x.to_string(), y.to_string()));
        assert_eq!(found, want);
        assert!(a.differences(&a).unwrap().is_empty());
    }

    #[test]
    fn effective_config_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let exp = Experiment::load(&write(dir.path(), GOOD), &["seed=9".into()]).unwrap();
        let path = dir.path().join("config.yaml");
        exp.save_effective(&path).unwrap();
        let again = Experiment::load(&path, &[]).unwrap();
        assert_eq!(exp, again);
    }
}
