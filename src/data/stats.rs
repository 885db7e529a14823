//! Normalisation statistics and class frequencies of a split, and the edit that writes them into
//! an experiment YAML's text, keeping the rest of the file as it is (`dis2 stats --config ...`;
//! reading and writing the file is `crate::prepare`'s).

use anyhow::{anyhow, bail, Result};
use rayon::prelude::*;

use super::config::Normalisation;
use super::dataset::SceneDataset;
use super::raster::Window;

/// Rows read at a time: scenes are read in strips, never whole.
const STRIP_ROWS: usize = 256;

/// Running mean and sum of squared deviations (Chan et al.'s parallel update).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Moments {
    pub count: u64,
    pub mean: f64,
    pub m2: f64,
}

impl Moments {
    pub(crate) fn of(values: impl Iterator<Item = f64>) -> Self {
        let mut m = Moments::default();
        for v in values {
            m.count += 1;
            let d = v - m.mean;
            m.mean += d / m.count as f64;
            m.m2 += d * (v - m.mean);
        }
        m
    }

    pub(crate) fn merge(self, o: Moments) -> Moments {
        if self.count == 0 {
            return o;
        }
        if o.count == 0 {
            return self;
        }
        let count = self.count + o.count;
        let d = o.mean - self.mean;
        Moments {
            count,
            mean: self.mean + d * o.count as f64 / count as f64,
            m2: self.m2 + o.m2 + d * d * self.count as f64 * o.count as f64 / count as f64,
        }
    }

    /// Population standard deviation.
    pub fn std(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            (self.m2 / self.count as f64).sqrt()
        }
    }
}

/// Statistics of one split.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetStats {
    /// Per model modality, per band, over the pixels valid in that modality.
    pub bands: Vec<Vec<Moments>>,
    /// Pixels of each class, counted where the loader keeps the label: labelled, and valid in
    /// every modality.
    pub class_counts: Vec<u64>,
    /// Pixels the loader leaves out of the loss: unlabelled, ignored, or invalid (nodata, NaN,
    /// masks) in the labels or in any modality.
    pub ignored: u64,
    /// Gaps: how many labelled pixels each modality's missing data removes.
    pub gaps: Gaps,
}

/// How many labelled pixels (a class in the labels, whatever the inputs) the modalities' gaps
/// take: a modality is unavailable at a pixel where its file has no data (nodata, masks, alpha,
/// NaN, outside its footprint) or its user mask (`data.missing_masks`) marks it missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gaps {
    /// Pixels whose label is a class.
    pub labelled: u64,
    /// Per model modality (model order), the labelled pixels where it is unavailable.
    pub unavailable: Vec<u64>,
    /// The labelled pixels where at least one modality is unavailable: those the teacher's
    /// losses leave out.
    pub any: u64,
}

impl Gaps {
    fn merge(mut self, o: Gaps) -> Gaps {
        self.labelled += o.labelled;
        for (a, b) in self.unavailable.iter_mut().zip(o.unavailable) {
            *a += b;
        }
        self.any += o.any;
        self
    }

    /// `n` as a percentage of the labelled pixels.
    pub fn share(&self, n: u64) -> f64 {
        100.0 * n as f64 / self.labelled.max(1) as f64
    }
}

impl DatasetStats {
    /// The `data.normalisation` entries, in model order (a zero std becomes 1).
    pub fn normalisation(&self) -> Vec<Normalisation> {
        self.bands
            .iter()
            .map(|bands| Normalisation {
                mean: bands.iter().map(|m| m.mean).collect(),
                std: bands
                    .iter()
                    .map(|m| if m.std() > 0.0 { m.std() } else { 1.0 })
                    .collect(),
            })
            .collect()
    }

    /// Median-frequency class weights: `median(f) / f_c`, 0 for absent classes.
    pub(crate) fn class_weights(&self) -> Vec<f64> {
        let total: u64 = self.class_counts.iter().sum();
        let freqs: Vec<f64> = self
            .class_counts
            .iter()
            .map(|&c| c as f64 / total.max(1) as f64)
            .collect();
        let mut present: Vec<f64> = freqs.iter().copied().filter(|&f| f > 0.0).collect();
        present.sort_by(f64::total_cmp);
        let median = match present.len() {
            0 => return vec![1.0; freqs.len()],
            k if k % 2 == 1 => present[k / 2],
            k => 0.5 * (present[k / 2 - 1] + present[k / 2]),
        };
        freqs
            .iter()
            .map(|&f| if f > 0.0 { median / f } else { 0.0 })
            .collect()
    }

    fn merge(mut self, o: DatasetStats) -> DatasetStats {
        for (a, b) in self.bands.iter_mut().zip(o.bands) {
            for (x, y) in a.iter_mut().zip(b) {
                *x = x.merge(y);
            }
        }
        for (a, b) in self.class_counts.iter_mut().zip(o.class_counts) {
            *a += b;
        }
        self.ignored += o.ignored;
        self.gaps = self.gaps.merge(o.gaps);
        self
    }
}

/// Computes the statistics of every scene (in parallel, merged in scene order so the result does
/// not depend on scheduling; an error is the first in scene order).
pub fn compute(dataset: &SceneDataset) -> Result<DatasetStats> {
    let per_scene = (0..dataset.len())
        .into_par_iter()
        .map(|i| scene_stats(dataset, i))
        .collect::<Vec<Result<_>>>()
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    let empty = DatasetStats {
        bands: dataset
            .modalities
            .iter()
            .map(|m| vec![Moments::default(); m.channels.max(0) as usize])
            .collect(),
        class_counts: vec![0; dataset.num_classes.max(0) as usize],
        ignored: 0,
        gaps: Gaps {
            unavailable: vec![0; dataset.modalities.len()],
            ..Gaps::default()
        },
    };
    Ok(per_scene.into_iter().fold(empty, DatasetStats::merge))
}

fn scene_stats(dataset: &SceneDataset, index: usize) -> Result<DatasetStats> {
    let scene = &dataset.scenes[index];
    let mut out: Option<DatasetStats> = None;
    for y in (0..scene.height()).step_by(STRIP_ROWS) {
        let window = Window::new(
            0,
            y as i64,
            scene.width(),
            STRIP_ROWS.min(scene.height() - y),
        );
        let strip = strip_stats(dataset, index, window)?;
        out = Some(match out {
            Some(acc) => acc.merge(strip),
            None => strip,
        });
    }
    out.ok_or_else(|| anyhow!("scene {} is empty", scene.id))
}

fn strip_stats(dataset: &SceneDataset, index: usize, window: Window) -> Result<DatasetStats> {
    let scene = &dataset.scenes[index];
    let mut bands = Vec::new();
    let mut validity = Vec::new();
    for m in 0..scene.modalities.len() {
        let px = dataset.read_modality(index, m, window)?;
        bands.push(
            (0..px.bands)
                .map(|b| {
                    Moments::of(
                        px.band(b)
                            .iter()
                            .zip(&px.valid)
                            .filter(|(_, &ok)| ok)
                            .map(|(&v, _)| f64::from(v)),
                    )
                })
                .collect(),
        );
        validity.push(px.valid);
    }
    let labels = dataset.read_labels(index, window)?;
    let (class_counts, ignored, gaps) = count_labels(&labels, &validity, dataset.num_classes);
    Ok(DatasetStats {
        bands,
        class_counts,
        ignored,
        gaps,
    })
}

/// The class counts where every modality has data, the pixels left out, and the gaps, of
/// `labels` (class ids, anything else unlabelled) and each modality's validity.
fn count_labels(labels: &[i64], validity: &[Vec<bool>], num_classes: i64) -> (Vec<u64>, u64, Gaps) {
    let mut class_counts = vec![0u64; num_classes.max(0) as usize];
    let mut ignored = 0;
    let mut gaps = Gaps {
        unavailable: vec![0; validity.len()],
        ..Gaps::default()
    };
    for (i, &id) in labels.iter().enumerate() {
        let Some(count) = (id >= 0)
            .then(|| class_counts.get_mut(id as usize))
            .flatten()
        else {
            ignored += 1;
            continue;
        };
        gaps.labelled += 1;
        let mut all = true;
        for (lost, valid) in gaps.unavailable.iter_mut().zip(validity) {
            if !valid[i] {
                *lost += 1;
                all = false;
            }
        }
        match all {
            true => *count += 1,
            false => {
                gaps.any += 1;
                ignored += 1;
            }
        }
    }
    (class_counts, ignored, gaps)
}

/// `text`, an experiment YAML, with `data.normalisation` set from `stats` (one entry per name of
/// `modalities`, in model order) and, when asked, `data.class_weights` (median frequency);
/// comments and the other keys are kept as written (see [`upsert_data_key`]).
///
/// Errors: the `data:` section is written in flow style.
pub(crate) fn yaml_with_statistics(
    text: &str,
    modalities: &[&str],
    stats: &DatasetStats,
    class_weights: bool,
) -> Result<String> {
    let mut block = String::from("normalisation:\n");
    block.push_str(&gaps_comment(modalities, &stats.gaps));
    for (name, norm) in modalities.iter().zip(stats.normalisation()) {
        block.push_str(&format!(
            "  {name}: {{mean: {}, std: {}}}\n",
            flow_list(&norm.mean),
            flow_list(&norm.std)
        ));
    }
    let mut updated = upsert_data_key(text, "normalisation", &block)?;
    if class_weights {
        let line = format!("class_weights: {}\n", flow_list(&stats.class_weights()));
        updated = upsert_data_key(&updated, "class_weights", &line)?;
    }
    Ok(updated)
}

/// The gaps as YAML comment lines under `normalisation:` (replaced with it by the next run):
/// `  # train split: 4096 labelled pixels; unavailable at: optical 0 (0.00 %), ...`.
fn gaps_comment(modalities: &[&str], gaps: &Gaps) -> String {
    let mut parts: Vec<String> = modalities
        .iter()
        .zip(&gaps.unavailable)
        .map(|(name, &n)| format!("{name} {n} ({:.2} %)", gaps.share(n)))
        .collect();
    parts.push(format!("any {} ({:.2} %)", gaps.any, gaps.share(gaps.any)));
    format!(
        "  # dis2 stats, train split: {} labelled pixels; of them without data in: {}\n",
        gaps.labelled,
        parts.join(", ")
    )
}

/// `[1.5, 2.0]` with enough digits to round-trip to f32 precision.
fn flow_list(values: &[f64]) -> String {
    let items: Vec<String> = values
        .iter()
        .map(|&v| {
            let s = format!("{}", v as f32);
            if s.contains(['.', 'e', 'n', 'i']) {
                s
            } else {
                format!("{s}.0")
            }
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// Sets `data.<key>` in YAML text to `block` (text starting with `key:`, children indented by 2):
/// replaces the existing entry with its nested lines, or appends it to the `data:` section
/// (adding a `data:` section at the end when there is none). Comments and the other keys are
/// kept as written.
pub(crate) fn upsert_data_key(text: &str, key: &str, block: &str) -> Result<String> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let is_content = |l: &str| !l.trim().is_empty() && !l.trim_start().starts_with('#');
    let Some(data_at) = lines.iter().position(|l| l.starts_with("data:")) else {
        let mut out = text.trim_end().to_string();
        out.push_str("\ndata:\n");
        out.push_str(&indent_block(block, 2));
        return Ok(out);
    };
    let rest = lines[data_at]["data:".len()..].trim();
    if !rest.is_empty() && !rest.starts_with('#') {
        bail!("the `data:` section is written in flow style (`data: {{...}}`); write it as a block to let dis2 update {key}");
    }
    let end = (data_at + 1..lines.len())
        .find(|&i| is_content(lines[i]) && indent(lines[i]) == 0)
        .unwrap_or(lines.len());
    let child = (data_at + 1..end)
        .find(|&i| is_content(lines[i]))
        .map(|i| indent(lines[i]))
        .unwrap_or(2);
    let prefix = format!("{key}:");
    let found = (data_at + 1..end).find(|&i| {
        let l = lines[i];
        indent(l) == child && l.trim_start().starts_with(&prefix) && is_content(l)
    });
    let (from, to) = match found {
        Some(start) => {
            let mut stop = start + 1;
            while stop < end && (!is_content(lines[stop]) || indent(lines[stop]) > child) {
                stop += 1;
            }
            while stop > start + 1 && lines[stop - 1].trim().is_empty() {
                stop -= 1;
            }
            (start, stop)
        }
        None => {
            // After the last line of the section that is not blank.
            let last = (data_at..end)
                .rev()
                .find(|&i| !lines[i].trim().is_empty())
                .unwrap_or(data_at);
            (last + 1, last + 1)
        }
    };
    let mut out = String::new();
    for l in &lines[..from] {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str(&indent_block(block, child));
    for l in &lines[to..] {
        out.push_str(l);
        out.push('\n');
    }
    Ok(out)
}

fn indent_block(block: &str, by: usize) -> String {
    block
        .lines()
        .map(|l| format!("{}{l}\n", " ".repeat(by)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_merge_like_one_pass() {
        let values: Vec<f64> = (0..100).map(|i| (i * 7 % 13) as f64).collect();
        let whole = Moments::of(values.iter().copied());
        let parts = Moments::of(values[..37].iter().copied())
            .merge(Moments::of(values[37..].iter().copied()));
        assert!(
            (whole.mean - parts.mean).abs() < 1e-12 && (whole.std() - parts.std()).abs() < 1e-12
        );
    }

    #[test]
    fn class_weights_use_median_frequency() {
        let stats = DatasetStats {
            bands: vec![],
            class_counts: vec![100, 300, 0, 50],
            ignored: 0,
            gaps: Gaps::default(),
        };
        let w = stats.class_weights();
        assert_eq!(w[1], 1.0 / 3.0);
        assert_eq!((w[0], w[2], w[3]), (1.0, 0.0, 2.0));
    }

    #[test]
    fn gaps_count_labelled_pixels_each_modality_lacks() {
        // 6 pixels: one unlabelled (255), one of an unknown id; optical lacks pixel 1 (also
        // lacked by sar) and 2, sar lacks 1 and the unlabelled pixel 5.
        let labels = [0i64, 1, 2, 0, 7, 255];
        let optical = vec![true, false, false, true, true, true];
        let sar = vec![true, false, true, true, true, false];
        let (counts, ignored, gaps) = count_labels(&labels, &[optical, sar], 3);
        assert_eq!(counts, vec![2, 0, 0]);
        assert_eq!(
            ignored, 4,
            "unlabelled, unknown, and the two labelled pixels with gaps"
        );
        assert_eq!(
            (gaps.labelled, gaps.unavailable.clone(), gaps.any),
            (4, vec![2, 1], 2)
        );
        assert_eq!(gaps.share(1), 25.0);
        assert_eq!(
            gaps_comment(&["optical", "sar"], &gaps),
            "  # dis2 stats, train split: 4 labelled pixels; of them without data in: optical 2 \
             (50.00 %), sar 1 (25.00 %), any 2 (50.00 %)\n"
        );
    }

    #[test]
    fn upsert_replaces_or_inserts_and_keeps_comments() {
        let text = "# top comment\nname: x\ndata:\n  # dataset\n  dataset:\n    synthetic: {root: d}\n  normalisation:\n    sar: {mean: [0], std: [1]}\n\n  ignore_index: 255\nseed: 3 # after\n";
        let block = "normalisation:\n  sar: {mean: [2.0], std: [3.0]}\n";
        let out = upsert_data_key(text, "normalisation", block).unwrap();
        assert_eq!(
            out,
            "# top comment\nname: x\ndata:\n  # dataset\n  dataset:\n    synthetic: {root: d}\n  normalisation:\n    sar: {mean: [2.0], std: [3.0]}\n\n  ignore_index: 255\nseed: 3 # after\n"
        );
        let out = upsert_data_key(&out, "class_weights", "class_weights: [1.0]\n").unwrap();
        assert!(
            out.contains("  ignore_index: 255\n  class_weights: [1.0]\nseed: 3 # after\n"),
            "{out}"
        );
        let none = upsert_data_key("name: x\n", "class_weights", "class_weights: [1.0]\n").unwrap();
        assert_eq!(none, "name: x\ndata:\n  class_weights: [1.0]\n");
        let err = upsert_data_key("data: {ignore_index: 3}\n", "normalisation", block)
            .unwrap_err()
            .to_string();
        assert!(err.contains("flow style"), "{err}");
    }
}
