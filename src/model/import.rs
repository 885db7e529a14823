//! Mapping of the reference PyTorch `state_dict` (`DLKD_ver4`, two modalities) onto
//! [`super::Dis2Net`] variables.
//!
//! The reference's modality "rgb" is modality 0 of the configuration and "ndsm" modality 1,
//! whatever their names in the configuration. Reference tensors that its forward never reads are
//! accepted and dropped: `*.query` of every attention pool, `*_classwise_decoder.seg_d4.*`,
//! `*_classwise_decoder.e1_conv_up.*`, and BatchNorm `num_batches_tracked`.

use anyhow::{bail, Result};
use std::collections::{BTreeMap, HashMap};
use tch::{nn, Tensor};

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
}
