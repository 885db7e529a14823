//! Mapping of the reference PyTorch `state_dict` (`DLKD_ver4`, two modalities) onto
//! [`super::Dis2Net`] variables.
//!
//! The reference's modality "rgb" is modality 0 of the configuration and "ndsm" modality 1,
//! whatever their names in the configuration. Reference tensors that its forward never reads are
//! accepted and dropped: `*.query` of every attention pool, `*_classwise_decoder.seg_d4.*`,
//! `*_classwise_decoder.e1_conv_up.*`, and BatchNorm `num_batches_tracked`.
//!
//! The way back, [`reference_state_dict`], reads the same tables: every variable under its
//! reference name, and the tensors the reference holds but never reads recreated (zeros) so that
//! PyTorch's `load_state_dict(strict=True)` takes the result.

use anyhow::{bail, Result};
use std::collections::{BTreeMap, HashMap};
use tch::{nn, Kind, Tensor};

use super::config::{DecoderKind, FusionKind, ModelConfig};
use super::scenario::Scenario;

/// (reference prefix, dis2 prefix); `m1` is the student with modality 1 ("ndsm") missing,
/// `m0` the one with modality 0 ("rgb") missing.
const PREFIXES: &[(&str, &str)] = &[
    ("rgb_encoder.", "encoders.0."),
    ("ndsm_encoder.", "encoders.1."),
    ("full_fuse.", "teacher.fuse."),
    ("full_classwise_attention.", "teacher.attention."),
    ("full_classwise_decoder.", "teacher.decoder."),
    ("full_fusion_pool.", "teacher.fuse_pool."),
    ("miss_ndsm_fuse_pool.", "students.m1.fuse_pool."),
    ("miss_ndsm_fuse.", "students.m1.fuse."),
    ("miss_ndsm_classwise_attention.", "students.m1.attention."),
    ("miss_ndsm_classwise_decoder.", "students.m1.decoder."),
    ("rgb_else_pool.", "students.m1.comp_pool.1."),
    ("rgb_else.", "students.m1.comp.1."),
    ("rgb_dist_pool.", "students.m1.dist_pool.0."),
    ("miss_rgb_fuse_pool.", "students.m0.fuse_pool."),
    ("miss_rgb_fuse.", "students.m0.fuse."),
    ("miss_rgb_classwise_attention.", "students.m0.attention."),
    ("miss_rgb_classwise_decoder.", "students.m0.decoder."),
    ("ndsm_else_pool.", "students.m0.comp_pool.0."),
    ("ndsm_else.", "students.m0.comp.0."),
    ("ndsm_dist_pool.", "students.m0.dist_pool.1."),
];

/// Positional embeddings of the HF level-4 transformer: (reference name, dis2 name).
const POS: &[(&str, &str)] = &[("rgb_pos", "pos_0"), ("ndsm_pos", "pos_1")];

/// What a reference tensor name becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mapped {
    /// The dis2 variable it loads into.
    Var(String),
    /// A tensor the reference forward never reads; dropped.
    Unused,
    /// Not a reference name this importer knows.
    Unknown,
}

fn is_unused(name: &str) -> bool {
    name.ends_with(".num_batches_tracked")
        || (name.contains("pool") && name.ends_with(".query"))
        || name.contains("_classwise_decoder.seg_d4.")
        || name.contains("_classwise_decoder.e1_conv_up.")
}

/// Maps one reference `state_dict` name to its dis2 variable.
pub(crate) fn map_reference_name(name: &str) -> Mapped {
    if is_unused(name) {
        return Mapped::Unused;
    }
    let best = PREFIXES
        .iter()
        .filter(|(r, _)| name.starts_with(r))
        .max_by_key(|(r, _)| r.len());
    let Some((r, d)) = best else {
        return Mapped::Unknown;
    };
    let rest = &name[r.len()..];
    let rest = if d.ends_with(".fuse.") {
        POS.iter()
            .find(|(rp, _)| *rp == rest)
            .map(|(_, dp)| *dp)
            .unwrap_or(rest)
    } else {
        rest
    };
    Mapped::Var(format!("{d}{rest}"))
}

/// The reference name of a dis2 variable (inverse of [`map_reference_name`]), if it has one.
pub(crate) fn reference_name(var: &str) -> Option<String> {
    let (r, d) = PREFIXES
        .iter()
        .filter(|(_, d)| var.starts_with(d))
        .max_by_key(|(_, d)| d.len())?;
    let rest = &var[d.len()..];
    let rest = if d.ends_with(".fuse.") {
        POS.iter()
            .find(|(_, dp)| *dp == rest)
            .map(|(rp, _)| *rp)
            .unwrap_or(rest)
    } else {
        rest
    };
    Some(format!("{r}{rest}"))
}

/// Loads a reference `state_dict` into the variables of `vs`. Every variable must be given and
/// every given tensor must map to a variable of the same shape; otherwise the error lists all
/// missing, unexpected and mis-shaped tensors by name and `vs` is left unchanged.
pub fn load_reference_state_dict(
    vs: &nn::VarStore,
    tensors: &[(String, Tensor)],
    source: &str,
) -> Result<()> {
    let vars: HashMap<String, Tensor> = vs.variables();
    let mut assigned: BTreeMap<String, &Tensor> = BTreeMap::new();
    let mut unexpected = Vec::new();
    let mut misshaped = Vec::new();
    for (name, t) in tensors {
        match map_reference_name(name) {
            Mapped::Unused => {}
            Mapped::Unknown => unexpected.push(name.clone()),
            Mapped::Var(v) => match vars.get(&v) {
                None => unexpected.push(format!(
                    "{name} (would be {v}, which this model does not have)"
                )),
                Some(var) if var.size() != t.size() => misshaped.push(format!(
                    "{name}: file {:?}, model {:?}",
                    t.size(),
                    var.size()
                )),
                Some(_) => {
                    assigned.insert(v, t);
                }
            },
        }
    }
    let mut missing: Vec<String> = vars
        .keys()
        .filter(|v| !assigned.contains_key(*v))
        .map(|v| match reference_name(v) {
            Some(r) => format!("{r} (for {v})"),
            None => v.clone(),
        })
        .collect();
    missing.sort();
    unexpected.sort();
    misshaped.sort();
    // A mis-shaped tensor is also reported missing; list it once.
    missing.retain(|m| {
        !misshaped
            .iter()
            .any(|s| m.split(' ').next() == s.split(':').next())
    });
    if !(missing.is_empty() && unexpected.is_empty() && misshaped.is_empty()) {
        let mut msg = format!("{source} does not fit the model:");
        for (what, list) in [
            ("missing", &missing),
            ("unexpected", &unexpected),
            ("wrong shape", &misshaped),
        ] {
            if !list.is_empty() {
                msg.push_str(&format!("\n  {what} ({}):", list.len()));
                for item in list.iter() {
                    msg.push_str(&format!("\n    {item}"));
                }
            }
        }
        bail!(msg);
    }
    tch::no_grad(|| {
        for (v, t) in &assigned {
            if let Some(var) = vars.get(v) {
                let mut var = var.shallow_clone();
                var.copy_(&t.to_kind(var.kind()).to_device(var.device()));
            }
        }
    });
    Ok(())
}

/// What in `cfg` the reference `DLKD_ver4` cannot hold, one line per key (empty when it can):
/// it has exactly two modalities, a student for each of them missing, HF fusion and the
/// class-wise decoder (CFLM). Widths, classes, crop, band counts and the transformer's sizes are
/// its constructor arguments and module constants, so any value is representable.
pub(crate) fn reference_cannot_hold(cfg: &ModelConfig) -> Vec<String> {
    let mut found = Vec::new();
    let m = cfg.modalities.len();
    if m != 2 {
        found.push(format!(
            "modalities: the reference has exactly two (its rgb and ndsm), this model has {m}"
        ));
    }
    if cfg.fusion != FusionKind::Hierarchical {
        found.push(format!(
            "fusion: the reference has only `hierarchical` (HF), this model has `{}`",
            cfg.fusion.name()
        ));
    }
    if cfg.decoder != DecoderKind::ClassWise {
        found.push(format!(
            "decoder: the reference has only `classwise` (CFLM), this model has `{}`",
            cfg.decoder.name()
        ));
    }
    if m == 2 {
        let have = cfg.scenario_list().unwrap_or_default();
        let lacking: Vec<String> = Scenario::all(2)
            .iter()
            .filter(|s| !have.contains(s))
            .map(|s| format!("{} missing", s.text(&cfg.modalities)))
            .collect();
        if !lacking.is_empty() {
            found.push(format!(
                "scenarios: the reference holds a student for each modality missing, this model \
                 has none for {} (`dis2 distill --joint` trains one for each)",
                lacking.join(" and ")
            ));
        }
    }
    found
}

/// The reference `state_dict` of the model of `cfg` whose variables are in `vs` (the inverse of
/// [`load_reference_state_dict`]), sorted by name: every variable as float32 on the CPU under its
/// reference name, plus the tensors the reference holds and its forward never reads (zeros:
/// `*.query` `[1, C]` of every attention pool, `*_classwise_decoder.seg_d4.*` and
/// `*_classwise_decoder.e1_conv_up.*`, and BatchNorm `num_batches_tracked` as an int64 scalar).
///
/// # Errors
/// What [`reference_cannot_hold`] lists, and a variable of `vs` without a reference name.
pub(crate) fn reference_state_dict(
    vs: &nn::VarStore,
    cfg: &ModelConfig,
) -> Result<Vec<(String, Tensor)>> {
    let cannot = reference_cannot_hold(cfg);
    if !cannot.is_empty() {
        bail!(
            "the reference model (DLKD_ver4) cannot hold this model:\n  {}",
            cannot.join("\n  ")
        );
    }
    let mut out: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut nameless = Vec::new();
    for (var, t) in vs.variables() {
        match reference_name(&var) {
            Some(r) if map_reference_name(&r) == Mapped::Var(var.clone()) => {
                let t = t.detach().to_device(tch::Device::Cpu).to_kind(Kind::Float);
                out.insert(r, t.contiguous());
            }
            _ => nameless.push(var),
        }
    }
    if !nameless.is_empty() {
        nameless.sort();
        bail!(
            "variables without a name in the reference model: {}",
            nameless.join(", ")
        );
    }
    let unread = reference_unread(&out, cfg.base_width);
    out.extend(unread);
    Ok(out.into_iter().collect())
}

/// The tensors of the reference `state_dict` that its forward never reads (those
/// [`map_reference_name`] calls [`Mapped::Unused`]), for the named tensors `named` it holds
/// besides: zeros of the shapes `DLKD_ver4` builds them with.
fn reference_unread(named: &BTreeMap<String, Tensor>, base_width: i64) -> Vec<(String, Tensor)> {
    let zeros = |shape: &[i64]| Tensor::zeros(shape, (Kind::Float, tch::Device::Cpu));
    let mut out = Vec::new();
    for (name, t) in named {
        if let Some(bn) = name.strip_suffix(".running_mean") {
            out.push((
                format!("{bn}.num_batches_tracked"),
                Tensor::from(0i64).reshape([0i64; 0]),
            ));
        }
        // Every `AttnPoolToToken` has a query [1, C] beside its scoring MLP (C -> hidden).
        if let Some(pool) = name.strip_suffix(".mlp.0.weight") {
            if pool.contains("pool") {
                out.push((format!("{pool}.query"), zeros(&[1, t.size()[1]])));
            }
        }
    }
    // `ClassWiseDecoder.seg_d4` (8w -> 1, 1x1) and `e1_conv_up` (w/4 -> w/8, 3x3).
    let w = base_width;
    for (r, _) in PREFIXES
        .iter()
        .filter(|(r, _)| r.ends_with("_classwise_decoder."))
    {
        if named.keys().any(|n| n.starts_with(r)) {
            out.push((format!("{r}seg_d4.weight"), zeros(&[1, 8 * w, 1, 1])));
            out.push((format!("{r}seg_d4.bias"), zeros(&[1])));
            out.push((
                format!("{r}e1_conv_up.conv.weight"),
                zeros(&[w / 8, w / 4, 3, 3]),
            ));
            out.push((format!("{r}e1_conv_up.conv.bias"), zeros(&[w / 8])));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        let cases = [
            ("rgb_encoder.e2.0.weight", "encoders.0.e2.0.weight"),
            ("full_fuse.rgb_pos", "teacher.fuse.pos_0"),
            ("miss_rgb_fuse.ndsm_pos", "students.m0.fuse.pos_1"),
            (
                "miss_ndsm_fuse_pool.attn_pools.1.mlp.0.weight",
                "students.m1.fuse_pool.attn_pools.1.mlp.0.weight",
            ),
            ("rgb_else.e1.weight", "students.m1.comp.1.e1.weight"),
            (
                "ndsm_dist_pool.attn_pools.0.mlp.2.bias",
                "students.m0.dist_pool.1.attn_pools.0.mlp.2.bias",
            ),
        ];
        for (r, d) in cases {
            assert_eq!(map_reference_name(r), Mapped::Var(d.to_string()));
            assert_eq!(reference_name(d).as_deref(), Some(r));
        }
        assert_eq!(
            map_reference_name("full_fuse.pool_e3.query"),
            Mapped::Unused
        );
        assert_eq!(
            map_reference_name("full_classwise_decoder.seg_d4.weight"),
            Mapped::Unused
        );
        assert_eq!(
            map_reference_name("full_classwise_decoder.seg_d4_layers.0.weight"),
            Mapped::Var("teacher.decoder.seg_d4_layers.0.weight".into())
        );
        assert_eq!(map_reference_name("something.else"), Mapped::Unknown);
    }

    fn config(modalities: usize) -> ModelConfig {
        let modalities = (0..modalities)
            .map(|i| super::super::config::ModalitySpec {
                name: format!("s{i}"),
                channels: 1 + i as i64,
            })
            .collect();
        ModelConfig {
            base_width: 8,
            num_classes: 3,
            crop: [32, 32],
            heads: 2,
            ffn_dim: 16,
            depth: 1,
            modalities,
            scenarios: None,
            decoder: DecoderKind::ClassWise,
            fusion: FusionKind::Hierarchical,
        }
    }

    #[test]
    fn state_dict_names_come_back_to_the_variables() {
        let cfg = config(2);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        super::super::Dis2Net::new(&vs.root(), &cfg).unwrap();
        let state = reference_state_dict(&vs, &cfg).unwrap();
        let vars = vs.variables();
        let mut loaded = 0;
        for (name, t) in &state {
            match map_reference_name(name) {
                Mapped::Var(v) => {
                    assert_eq!(vars[&v].size(), t.size(), "{name}");
                    loaded += 1;
                }
                Mapped::Unused => assert_eq!(t.abs().sum(Kind::Float).double_value(&[]), 0.0),
                Mapped::Unknown => panic!("{name} is no reference name"),
            }
        }
        assert_eq!(loaded, vars.len());
        let count = |suffix: &str| state.iter().filter(|(n, _)| n.ends_with(suffix)).count();
        assert!(count(".running_mean") > 0);
        assert_eq!(count(".running_mean"), count(".num_batches_tracked"));
        assert_eq!(count(".seg_d4.weight"), 3);
        let fresh = nn::VarStore::new(tch::Device::Cpu);
        super::super::Dis2Net::new(&fresh.root(), &cfg).unwrap();
        load_reference_state_dict(&fresh, &state, "export").unwrap();
    }

    #[test]
    fn what_the_reference_cannot_hold_is_named() {
        assert!(reference_cannot_hold(&config(2)).is_empty());
        let three = reference_cannot_hold(&config(3));
        assert_eq!(three.len(), 1);
        assert!(three[0].starts_with("modalities:") && three[0].contains("has 3"));
        let mut cfg = config(2);
        cfg.scenarios = Some(vec![vec!["s1".into()]]);
        cfg.decoder = DecoderKind::Plain;
        cfg.fusion = FusionKind::Level4;
        let found = reference_cannot_hold(&cfg);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("fusion:") && found[0].contains("level4"));
        assert!(found[1].starts_with("decoder:") && found[1].contains("plain"));
        assert!(found[2].starts_with("scenarios:") && found[2].contains("none for s0 missing"));
        cfg.scenarios = Some(vec![]);
        assert!(reference_cannot_hold(&cfg)
            .iter()
            .any(|l| l.contains("none for s0 missing and s1 missing")));
    }
}
